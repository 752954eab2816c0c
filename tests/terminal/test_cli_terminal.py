"""`possim terminal` on bad input: each mistake exits with the contract's code and a message naming it.

Exit codes (DESIGN.md "Command line"): 1 failed or declined, 2 usage, 3 internal error, 4 link unavailable.
Most cases never reach a host, so they run the CLI's `main` in process; the refusals a terminal makes
itself (item 2 of the QA list) need a real host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from terminal.cli import main

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
UNUSED = "tcp://127.0.0.1:9"  # discard port: nothing listens, so a link attempt fails at once


def run(capsys: pytest.CaptureFixture[str], journal: Path, *argv: str, url: str = UNUSED) -> tuple[int, str, str]:
    code = main(["terminal", "--connect", url, "--journal", str(journal), "--tid", TID, "--mid", MID,
                 "--tmk", TMK, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def host_url(tmp_path: Path) -> Iterator[str]:
    """A host of its own per test: the host remembers STANs, and every test's journal starts at 000001."""
    db = tmp_path / "h.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db", str(db),
         "--terminal", f"{TID}:{MID}:{TMK}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    url = proc.stdout.readline().strip()  # the host prints its bound URL first, then serves
    assert url.startswith("tcp://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
    yield url
    proc.kill()
    proc.wait(10)


# 1. amounts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ops", [("sale", "NaN"), ("sale", "inf"), ("refund", "000002", "NaN"),
                                 ("sale", "1e3"), ("sale", "1E-2"), ("sale", "+1.00"), ("sale", "\uff11.00"),
                                 ("sale", "1."), ("sale", ".5"), ("sale", "1.234"), ("sale", "1_000")])
def test_an_amount_that_is_not_a_plain_decimal_is_a_usage_error_naming_it(capsys, tmp_path, ops):
    code, out, err = run(capsys, tmp_path / "t.sqlite", *ops)
    assert code == 2 and out == ""
    assert f"amount {ops[-1]!r} is not a plain decimal like 12.34" in err and "Traceback" not in err


def test_an_amount_beyond_field_4_says_the_12_digit_limit(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "t.sqlite", "sale", "99999999999.99")
    assert code == 2
    assert "field 4 holds 12 digits" in err and "9999999999.99" in err
    code, _, err = run(capsys, tmp_path / "t.sqlite", "sale", "0.00")
    assert code == 2 and "amount '0.00' must be more than zero" in err


# 3. usage errors are usage errors (2), not "internal error" (3) ---------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (("--card", "nosuchcard"), "unknown test card 'nosuchcard'; known cards: approved"),
    (("--pin", "abc"), "--pin 'abc': a PIN must be 4 to 12 digits"),
    (("--trace", "/nonexistent/t.txt"), "--trace /nonexistent/t.txt: cannot write"),
])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_bad_flag_is_a_usage_error(capsys, tmp_path, host_url, argv, message, as_json):
    flags = (*argv, "--json") if as_json else argv
    code, out, err = run(capsys, tmp_path / "t.sqlite", *flags, "sign-in", "sale", "1.00", url=host_url)
    assert code == 2 and message in err
    assert "internal error" not in err and out == ""  # refused before the terminal did anything


@pytest.mark.parametrize(("url", "message"), [
    ("bogus", "has no scheme"),
    ("tcp://127.0.0.1:notaport", "has an invalid port"),
    ("tcp://127.0.0.1:99999", "has an invalid port"),
    ("tcp://127.0.0.1", "tcp links need host and port"),
    ("ftp://x", "unsupported link scheme 'ftp'"),
    ("serial:///dev/x?baud=abc", "baud='abc' is not a number"),
    ("serial:///dev/x?parity=Q", "parity='Q'"),
    ("serial:///dev/x?colour=red", "unknown serial parameter(s) colour"),
])
def test_a_bad_link_url_is_a_usage_error(capsys, tmp_path, url, message):
    code, out, err = run(capsys, tmp_path / "t.sqlite", "--json", "sign-in", url=url)
    assert code == 2 and message in err and "internal error" not in err and out == ""


@pytest.mark.parametrize(("hardware", "message"), [
    ("{ nosuch = 1 }", "unknown hardware settings ['nosuch']"),
    ('{ battery_level = "x" }', "terminal.hardware.battery_level: expected a number, got 'x'"),
])
def test_a_bad_hardware_table_is_a_usage_error(capsys, tmp_path, hardware, message):
    config = tmp_path / "t.toml"
    config.write_text(f"[terminal]\nhardware = {hardware}\n")
    code, _, err = run(capsys, tmp_path / "t.sqlite", "--config", str(config), "status")
    assert code == 2 and f"config {config}: " in err and message in err and "internal error" not in err



# 4. config files: the file, the key and the expected type, never Python's own words ------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("[terminal]\nhardware = 5\n", "terminal.hardware: expected a table, got 5"),
    ("[terminal]\ntid = 5\n", "terminal.tid: expected a string of 8 characters, got 5"),
    ('[terminal]\nreply_timeout = "abc"\n', "terminal.reply_timeout: expected a number, got 'abc'"),
    ("[terminal]\nsign_off_after_settlement = 1\n", "terminal.sign_off_after_settlement: expected true or false"),
    ("[terminal]\nbatch_capacity = 2.5\n", "terminal.batch_capacity: expected a whole number, got 2.5"),
    ("terminal = 5\n", "[terminal] must be a table, got 5"),
    ("[nope]\nx = 1\n", "unknown table [nope]; the file holds one [terminal] table"),
    ('[terminal]\ntid = "10000001"\n[nope]\n', "unknown top-level table [nope]"),
    ("[terminal.nope]\n", "unknown table [terminal.nope]"),
    ('[terminal]\ntid = "123"\n', "terminal.tid: expected 8 characters, got '123'"),
])
def test_a_config_value_of_the_wrong_type_names_file_key_and_type(capsys, tmp_path, text, message):
    config = tmp_path / "t.toml"
    config.write_text(text)
    code, out, err = run(capsys, tmp_path / "t.sqlite", "--config", str(config), "status")
    assert code == 2 and out == ""
    assert err.startswith(f"possim terminal: config {config}: {message}")
    assert "Traceback" not in err and "not supported between" not in err and "has no len" not in err


def test_a_config_with_good_types_still_loads(capsys, tmp_path):
    config = tmp_path / "t.toml"
    config.write_text('[terminal]\nreply_timeout = 5\nhardware = { battery_level = 80, plugged_in = true }\n')
    code, out, _ = run(capsys, tmp_path / "t.sqlite", "--config", str(config), "status")
    assert code == 0 and "status: OK" in out


# 5. a journal that cannot be opened is a usage error --------------------------------------------------

def test_a_journal_in_a_missing_or_unusable_folder_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "nosuch" / "t.sqlite", "status")
    assert code == 2 and "cannot be created: No such file or directory" in err
    code, _, err = run(capsys, tmp_path, "status")  # a folder, not a file
    assert code == 2 and f"journal {tmp_path} is not usable" in err


# 6. messages ------------------------------------------------------------------------------------------

def test_a_missing_argument_names_the_whole_operation(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "t.sqlite", "refund", "000002")
    assert code == 2 and "possim terminal: refund 000002 needs an AMOUNT" in err
    code, _, err = run(capsys, tmp_path / "t.sqlite", "sale")
    assert code == 2 and "possim terminal: sale needs an AMOUNT" in err


def test_reprint_with_a_bad_stan_says_it_takes_a_stan(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path / "t.sqlite", "reprint", "abc")
    assert code == 2 and "reprint takes an optional 6-digit STAN, got 'abc'" in err
    code, _, err = run(capsys, tmp_path / "t.sqlite", "reprint", "1234567")
    assert code == 2 and "STAN '1234567' must be up to 6 digits" in err
# 2. refusals the terminal makes itself are failures (1), not "link unavailable" (4) ---------------------

@pytest.mark.parametrize("ops", [("sale", "1.00"), ("balance",), ("settle",), ("signature", "999999"),
                                 ("void", "000123"), ("sale", "1.00", "status"), ("status", "sale", "1.00")])
def test_refused_while_signed_out_exits_1_with_the_host_reachable(capsys, tmp_path, host_url, ops):
    code, out, _ = run(capsys, tmp_path / "t.sqlite", "--json", *ops, url=host_url)
    assert code == 1
    refused = [line for line in json_lines(out) if not line["ok"]]
    assert len(refused) == 1 and refused[0]["rc"] is None and refused[0]["state"] == "signed_out"


def test_unknown_or_already_voided_stans_exit_1(capsys, tmp_path, host_url):
    journal = tmp_path / "t.sqlite"
    code, out, _ = run(capsys, journal, "--json", "sign-in", "sale", "5.00", url=host_url)
    assert code == 0
    stan = json_lines(out)[-1]["stan"]
    assert run(capsys, journal, "void", stan, url=host_url)[0] == 0
    for ops in (("void", stan), ("void", "000123"), ("refund", "000005", "20.00"), ("signature", "999999")):
        code, out, _ = run(capsys, journal, "--json", *ops, url=host_url)
        assert code == 1, ops
        assert json_lines(out)[-1]["ok"] is False


def test_a_link_that_cannot_be_opened_still_exits_4(capsys, tmp_path, host_url):
    journal = tmp_path / "t.sqlite"
    assert run(capsys, journal, "sign-in", url=host_url)[0] == 0
    code, out, _ = run(capsys, journal, "--json", "status", "sale", "1.00")  # signed in, the host now gone
    assert code == 4 and json_lines(out)[-1]["ok"] is False


def test_refund_beyond_the_sale_prints_the_refundable_amount_in_yuan(capsys, tmp_path, host_url):
    journal = tmp_path / "t.sqlite"
    code, out, _ = run(capsys, journal, "--json", "sign-in", "sale", "30.00", url=host_url)
    assert code == 0, out
    stan = json_lines(out)[-1]["stan"]
    code, out, _ = run(capsys, journal, "--json", "refund", stan, "40.00", url=host_url)
    assert code == 1
    assert json_lines(out)[-1]["message"] == "refund exceeds the refundable 30.00"
