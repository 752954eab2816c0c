"""The command-line contract through real processes: `possim host` and `possim terminal --json`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture
def host_process(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db", str(tmp_path / "h.sqlite"),
         "--terminal", f"{TID}:{MID}:{TMK}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    url = proc.stdout.readline().strip()  # the host prints its bound URL first, then serves
    assert url.startswith("tcp://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def terminal(url: str, journal: Path, *ops: str, stderr: list[str] | None = None) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-m", "terminal", "terminal", "--connect", url, "--journal", str(journal), "--tid", TID,
         "--mid", MID, "--tmk", TMK, "--json", *ops], capture_output=True, text=True, env=ENV, timeout=60)
    if stderr is not None:
        stderr.append(proc.stderr)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_batch_capacity_flag_refuses_the_sale_that_would_overfill_the_batch(host_process, tmp_path):
    _, url = host_process
    journal = tmp_path / "t.sqlite"
    code, lines = terminal(url, journal, "--batch-capacity", "2", "sign-in", "sale", "1.00", "sale", "2.00",
                           "sale", "3.00")
    assert code == 1
    third = lines[-1]
    assert (third["op"], third["ok"], third["rc"]) == ("sale", False, None)
    assert third["display"][:2] == ["BATCH FULL", "PLS SETTLE"] and "batch full" in third["message"]
    code, lines = terminal(url, journal, "--batch-capacity", "2", "settle", "sign-in", "sale", "3.00")
    assert code == 0 and lines[-1]["ok"] and lines[-1]["rc"] == "00"  # a new batch takes sales again
    errors: list[str] = []
    assert terminal(url, journal, "--batch-capacity", "0", "sale", "1.00", stderr=errors)[0] == 2
    assert "terminal.batch_capacity: expected a positive whole number" in errors[0]


def test_terminal_json_contract_across_invocations_and_host_sigterm(host_process, tmp_path):
    proc, url = host_process
    journal = tmp_path / "t.sqlite"
    code, lines = terminal(url, journal, "sign-in", "sale", "12.34")
    assert code == 0
    sale = lines[-1]
    for key in ("op", "ok", "rc", "stan", "batch", "amount", "state", "display", "receipt"):
        assert key in sale
    assert (sale["op"], sale["ok"], sale["rc"], sale["amount"], sale["state"]) == ("sale", True, "00", 1234, "ready")
    assert "622202******0015" in sale["receipt"]
    code, lines = terminal(url, journal, "void", sale["stan"])  # the journal persists between invocations
    assert code == 0 and lines[-1]["op"] == "void" and lines[-1]["ok"]
    code, lines = terminal(url, journal, "sale", "900.51")  # magic amount: declined 51
    assert code == 1 and lines[-1]["rc"] == "51"
    code, lines = terminal(url, journal, "settle")
    assert code == 0 and lines[-1]["state"] == "signed_out"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_link_unavailable_exits_4_and_usage_exits_2(tmp_path):
    code, lines = terminal("tcp://127.0.0.1:9", tmp_path / "t.sqlite", "sign-in")
    assert code == 4 and lines[-1]["ok"] is False
    code, _ = terminal("tcp://127.0.0.1:9", tmp_path / "t.sqlite", "sale", "12.345")
    assert code == 2


def test_trace_file_has_hex_and_decoded_frames_with_pans_masked(host_process, tmp_path):
    _, url = host_process
    trace = tmp_path / "trace.log"
    code, _ = terminal(url, tmp_path / "t.sqlite", "sign-in", "sale", "1.00", "--trace", str(trace))
    text = trace.read_text()
    assert code == 0 and " tx " in text and " rx " in text and "MTI 0200" in text
    assert "6222020000000015" not in text and "622202******0015" in text
    assert "622202******0015D*****" in text and "0015D3012" not in text  # track 2 masked in the hex too
