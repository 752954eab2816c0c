"""Load mode: 1,000 terminals against the reference host; the same through a chaos proxy dropping 1%; small
batches settled mid-run; the report's contract and the `possim load` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from terminal.chaos import MessageFault
from terminal.cli import main
from terminal.load import LoadConfig, LoadRunner, generate_identities, read_identities, write_identities
from terminal.load.runner import LoadReport, percentile
from terminal.proxy import ChaosProxy

ROOT = Path(__file__).resolve().parents[2]


def host_totals(host, identities) -> tuple[int, int, int, int]:
    total = [0, 0, 0, 0]
    for row in host.admin.transactions():
        if row["status"] in ("approved", "voided") and row["kind"] in ("sale", "void", "refund"):
            index = 0 if row["kind"] == "sale" else 2
            total[index] += row["amount_fen"]
            total[index + 1] += 1
    return tuple(total)


async def run_fleet(tmp_path, count, *, proxy_drop: float | None = None, inspect=None,
                    proxy_faults: tuple[MessageFault, ...] = (), **load_options):
    identities = generate_identities(count)
    config = HostConfig()
    for identity in identities:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    async with HostServer(config, str(tmp_path / "host.sqlite")) as host:
        url = await host.listen("tcp://127.0.0.1:0")
        proxy = None
        if proxy_drop is not None or proxy_faults:
            proxy = ChaosProxy(url)
            proxy.faults.rng.seed(5)
            if proxy_drop is not None:
                proxy.faults.add(MessageFault("drop", direction="rx", mti="0210", processing_code="000000",
                                             probability=proxy_drop))
            for fault in proxy_faults:
                proxy.faults.add(fault)
            url = await proxy.listen("tcp://127.0.0.1:0")
        options = {"duration": 1.5, "concurrency": 100, "reply_timeout": 2.0, "ramp_up": 1.0, "seed": 3,
                   **load_options}
        report = await LoadRunner(LoadConfig(url=url, identities=identities, **options)).run()
        if proxy is not None:
            await proxy.close()
        if inspect is not None:
            inspect(host, identities)
        return report, host_totals(host, identities), proxy


async def test_a_thousand_terminals_all_signed_off_and_ledgers_agree(tmp_path):
    report, host, _ = await run_fleet(tmp_path, 1000)
    data = report.as_json()
    assert data["terminals"] == 1000 and data["signed_off"] == 1000 and data["errors"] == 0
    assert data["transactions"] > 0 and data["approved"] == data["transactions"]
    assert set(data["latency_ms"]) == {"p50", "p95", "p99", "max"} and data["tps"] > 0
    assert report.journal_totals == host


async def test_chaos_proxy_dropping_one_percent_every_drop_reversed(tmp_path):
    report, host, proxy = await run_fleet(tmp_path, 1000, proxy_drop=0.01)
    dropped = sum(1 for action, _, _ in proxy.faults.log if action == "drop")
    assert dropped > 0
    assert report.reversals == dropped  # every dropped reply became a reversal at its terminal
    assert report.signed_off == 1000
    assert report.journal_totals == host  # and the ledgers still agree


def test_identities_csv_round_trip_and_report_contract(tmp_path, capsys):
    path = tmp_path / "ids.csv"
    assert main(["load", "--emit-identities", str(path), "--terminals", "25"]) == 0
    ids = read_identities(path)
    assert len(ids) == 25 and len({i.tid for i in ids}) == 25
    assert main(["load", "--terminals", "3", "--mix", "sale=1,dance=2", "--connect", "tcp://127.0.0.1:9"]) == 2
    capsys.readouterr()
    # the report contract, from the runner's own JSON
    report = json.loads(json.dumps(LoadRunner(LoadConfig(url="tcp://x:1", identities=[])).report.as_json()))
    for key in ("terminals", "signed_off", "transactions", "approved", "reversals", "errors", "tps", "latency_ms"):
        assert key in report


async def test_full_batches_are_settled_mid_run_and_the_ledgers_still_agree(tmp_path):
    """Batches of 5 records: 20 terminals make 600 transactions of the default mix, so each fills and settles
    its batch several times mid-run; at the end every terminal is signed off, every settlement the host
    recorded is in the report (mid-run ones, plus one day end each), and the host's ledger equals the
    journals' totals summed over all batches, the ones retention dropped included."""
    settled: dict[str, int] = {}  # tid -> settlements the host recorded

    def count_settlements(server, identities):
        settled.update({i.tid: len(server.admin.settlements(i.tid)) for i in identities})

    report, host, _ = await run_fleet(tmp_path, 20, batch_capacity=5, concurrency=20, ramp_up=0.0, duration=60.0,
                                      max_transactions=600, inspect=count_settlements)
    data = report.as_json()
    assert data["terminals"] == 20 and data["signed_off"] == 20 and data["errors"] == 0, data["errors_by_kind"]
    assert data["transactions"] == 600 and data["settlements"] >= 3 * 20  # several each
    assert sum(settled.values()) == data["settlements"] + 20 and min(settled.values()) >= 3
    assert report.journal_totals == host and host[1] > 5 * 20


def test_latencies_are_kept_compactly_and_their_percentiles_exactly():
    values = [0.0123, 0.5, 0.0001, 0.25, 0.07, 1.5, 0.333, 0.002] * 13
    report = LoadReport()
    for value in values:
        report.latencies.append(value)
    assert isinstance(report.latencies, array) and report.latencies.itemsize == 8
    ordered = sorted(values)
    assert report.latency_ms() == {name: round(percentile(ordered, p) * 1000, 2)
                                   for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}
    assert report.latency_ms()["max"] == 1500.0 and LoadReport().latency_ms()["p50"] == 0.0
    report.latencies.extend([0.004] * 10)  # the live table's window: the last 10 only
    assert report.latency_ms(recent=10) == {"p50": 4.0, "p95": 4.0, "p99": 4.0, "max": 4.0}
    assert report.latency_ms()["max"] == 1500.0


def possim_load_against_host(tmp_path, terminals: int, *flags: str) -> subprocess.CompletedProcess[str]:
    """`possim load --connect URL --identities ids.csv --quiet FLAGS...` against a `possim host` process that
    registered the same `terminals` identities; the host is killed when the load run has ended."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ids = tmp_path / "ids.csv"
    write_identities(generate_identities(terminals), ids)
    host = subprocess.Popen([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
                             str(tmp_path / "h.sqlite"), "--terminals-csv", str(ids)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        url = host.stdout.readline().strip()
        return subprocess.run([sys.executable, "-m", "terminal", "load", "--connect", url, "--identities", str(ids),
                               "--quiet", *flags], capture_output=True, text=True, env=env, timeout=120)
    finally:
        host.kill()
        host.wait(10)


def test_possim_load_batch_capacity_flag_settles_mid_run(tmp_path):
    """`possim load --batch-capacity 3` against `possim host`: the run settles full batches and reports it."""
    load = possim_load_against_host(tmp_path, 4, "--concurrency", "4", "--duration", "1s", "--mix", "sale=1",
                                    "--batch-capacity", "3")
    assert load.returncode == 0, load.stderr
    data = json.loads(load.stdout.splitlines()[-1])
    assert data["signed_off"] == 4 and data["errors"] == 0
    assert data["settlements"] >= 4 and data["settlements"] >= data["approved"] // 3 - 4
    bad = subprocess.run([sys.executable, "-m", "terminal", "load", "--connect", "tcp://127.0.0.1:9",
                          "--batch-capacity", "0"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert bad.returncode == 2 and "--batch-capacity: expected a positive whole number" in bad.stderr


async def test_file_journals_keep_their_settled_batches_and_nothing_is_counted_twice(tmp_path):
    """With SQLite journals (LoadConfig.journal_dir) every settled batch stays in the journal: the report's
    totals still count each batch once - settled mid-run or at the day end."""
    journals = tmp_path / "journals"
    journals.mkdir()
    report, host, _ = await run_fleet(tmp_path, 5, batch_capacity=3, concurrency=5, ramp_up=0.0, duration=60.0,
                                      max_transactions=60, mix={"sale": 1}, journal_dir=str(journals))
    assert report.signed_off == 5 and report.errors == 0 and report.settlements >= 5 * 3
    assert report.journal_totals == host and host[1] == report.approved == 60
    assert len(list(journals.glob("*.sqlite"))) == 5


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.looptime
async def test_a_run_where_no_terminal_signs_in_ends_and_says_why():
    """Against a closed port the closed model used to wait for ever for an idle terminal, the open model
    counted "no idle terminal (host too slow)" every tick, and terminals that never signed in were
    counted as signed off. Sign-in retries sleep on the loop clock (virtual here)."""
    url = f"tcp://127.0.0.1:{_closed_port()}"
    for model in ({"concurrency": 2}, {"rate": 5.0}):
        config = LoadConfig(url=url, identities=generate_identities(3), duration=1.0, reply_timeout=1.0, **model)
        report = await asyncio.wait_for(LoadRunner(config).run(), timeout=120)
        assert (report.signed_in, report.signed_off, report.transactions) == (0, 0, 0), model
        assert dict(report.error_kinds) == {"sign_in host unreachable": 3}, model


def test_possim_load_exit_code_names_why_no_terminal_signed_in(tmp_path):
    """Link unavailable (4) when nothing answered; failed (1) when the host answered and refused."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    refused = subprocess.run([sys.executable, "-m", "terminal", "load", "--connect",
                              f"tcp://127.0.0.1:{_closed_port()}", "--terminals", "2", "--duration", "1s",
                              "--reply-timeout", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 4, refused.stderr
    assert "no terminal signed in (sign_in host unreachable x2)" in refused.stderr
    # a host that knows none of the fleet: it answers each sign-in with a refusal
    host = subprocess.Popen([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
                             str(tmp_path / "h.sqlite"), "--terminal",
                             "99999999:898100012340001:0123456789ABCDEFFEDCBA9876543210"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        url = host.stdout.readline().strip()
        unknown = subprocess.run([sys.executable, "-m", "terminal", "load", "--connect", url, "--terminals", "2",
                                  "--duration", "1s", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    finally:
        host.kill()
        host.wait(10)
    assert unknown.returncode == 1, unknown.stderr
    assert "no terminal signed in (sign_in declined rc=" in unknown.stderr
    assert json.loads(unknown.stdout.splitlines()[-1])["signed_off"] == 0


async def test_lost_settlement_replies_leave_the_report_equal_to_the_host_ledger(tmp_path):
    """A third of the 0510 replies lost, mid-run (batches of 4) and at day end: a terminal retries, settles the
    batch again, and with nothing sold since settles an empty one. Retention (keep_batches=1) then used to
    drop the first batch before the report had counted it, so the report fell short of the host."""
    drop = MessageFault("drop", direction="rx", mti="0510", probability=0.33)
    report, host, proxy = await run_fleet(tmp_path, 20, proxy_faults=(drop,), mix={"sale": 1}, batch_capacity=4,
                                          duration=1.0, concurrency=10, ramp_up=0.0)
    assert proxy is not None and any(action == "drop" for action, _, _ in proxy.faults.log)
    # a day whose every retry lost its reply stays open, and says so
    assert report.signed_off + report.error_kinds["day not closed"] == 20 and report.settlements > 0
    assert report.journal_totals == host and host[1] > 0


async def test_an_open_model_beyond_what_the_fleet_carries_skips_arrivals_and_counts_them(tmp_path):
    """At a rate no fleet of 3 can carry, the arrival loop used to spin without yielding: the 3 first
    transactions never finished until the duration was over, and every tick was an error kind."""
    report, host, _ = await run_fleet(tmp_path, 3, rate=1e6, duration=1.0, ramp_up=0.0, mix={"sale": 1})
    assert report.transactions > 3 * 5 and report.skipped > 0
    assert report.errors == 0 and not report.error_kinds
    assert report.signed_off == 3 and report.journal_totals == host


def test_possim_load_exits_1_and_says_so_when_arrivals_were_skipped(tmp_path):
    load = possim_load_against_host(tmp_path, 2, "--rate", "100000", "--duration", "1s", "--mix", "sale=1")
    assert load.returncode == 1, load.stderr
    data = json.loads(load.stdout.splitlines()[-1])
    assert data["skipped"] > 0 and data["signed_off"] == 2
    assert f"{data['skipped']} arrivals skipped: every terminal was busy" in load.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_stops_the_run_closes_every_day_and_reports(tmp_path, processes):
    """A first SIGINT stops transacting, settles and signs off every terminal, prints the report and exits
    130. It used to exit 0 at once with no report and every terminal's day left open at the host."""
    import sqlite3
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ids = tmp_path / "ids.csv"
    write_identities(generate_identities(4), ids)
    db = tmp_path / "h.sqlite"
    host = subprocess.Popen([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
                             str(db), "--terminals-csv", str(ids)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        url = host.stdout.readline().strip()
        load = subprocess.Popen([sys.executable, "-m", "terminal", "load", "--connect", url, "--identities", str(ids),
                                 "--concurrency", "4", "--duration", "10m", "--mix", "sale=1", "--quiet",
                                 "--processes", processes], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until sales reach the host
            with sqlite3.connect(db) as ledger:
                if ledger.execute("SELECT COUNT(*) FROM txn WHERE kind = 'sale'").fetchone()[0] >= 8:
                    break
            time.sleep(0.1)
        # as a terminal's Ctrl-C: to the whole process group (shards too), and twice at once, as when a
        # wrapper such as `timeout` forwards its own copy - one press, not "abort"
        os.killpg(load.pid, signal.SIGINT)
        os.killpg(load.pid, signal.SIGINT)
        out, err = load.communicate(timeout=60)
        with sqlite3.connect(db) as ledger:
            open_days = ledger.execute("SELECT COUNT(*) FROM session WHERE signed_in = 1").fetchone()[0]
    finally:
        host.kill()
        host.wait(10)
    assert load.returncode == 130, err
    assert "interrupted: finishing the transactions in flight" in err
    data = json.loads(out.splitlines()[-1])
    assert data["interrupted"] is True and data["signed_off"] == 4 and data["transactions"] >= 8
    assert open_days == 0


def _usage_error(capsys, *argv: str) -> str:
    """`possim load ARGV` must refuse before running anything: exit 2 and the message on stderr."""
    try:
        code = main(["load", "--connect", "tcp://127.0.0.1:9", "--quiet", *argv])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2, argv
    return capsys.readouterr().err


def test_possim_load_refuses_what_it_could_not_honour_before_the_run(tmp_path, capsys):
    for flag, value in (("--rate", "0"), ("--rate", "nan"), ("--rate", "-5"), ("--concurrency", "0"),
                        ("--reply-timeout", "0"), ("--reply-timeout", "inf"), ("--terminals", "0")):
        assert f"argument {flag}: expected a positive" in _usage_error(capsys, flag, value)
    for mix, says in (("sale=80,void=-5", "weight for void must be a whole number"),
                      ("sale=1,balance=1,balance=0", "names balance twice"), ("sale=80,,void=5", "an empty item"),
                      ("sale=99999999999999", "from 0 to 999999")):
        assert says in _usage_error(capsys, "--mix", mix)
    assert "directory /nonexistent does not exist" in _usage_error(capsys, "--report", "/nonexistent/out.json")
    assert "must end in .json or .csv" in _usage_error(capsys, "--report", str(tmp_path / "out.txt"))
    ids = tmp_path / "ids.csv"
    write_identities(generate_identities(3), ids)
    assert f"{ids} holds only 3 identities" in _usage_error(capsys, "--identities", str(ids), "--terminals", "5")
    rows = ids.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([*rows, rows[-1]]) + "\n")
    assert f"{dup}, line 5: terminal 80000003 is already on line 4" in _usage_error(capsys, "--identities", str(dup))
    empty = tmp_path / "empty.csv"
    empty.write_text("tid,mid,tmk\n")
    assert "no terminals (only a header)" in _usage_error(capsys, "--identities", str(empty))


def test_identities_file_first_n_terminals(tmp_path):
    ids = tmp_path / "ids.csv"
    write_identities(generate_identities(5), ids)
    import argparse

    from terminal.commands.load import _fleet

    args = argparse.Namespace(identities=str(ids), terminals=2)
    assert [i.tid for i in _fleet(args)] == ["80000001", "80000002"]


def test_the_final_live_table_fits_80_columns_and_shows_the_reports_throughput():
    """At 80 columns the headers were cut to `sig…` and the values lost digits; the final table divided by
    the whole wall time (sign-in and day end included) where the report divides by the transacting seconds."""
    from rich.console import Console

    from terminal.commands.load import _table

    report = LoadReport(terminals=1000, signed_in=1000, signed_off=998, transactions=123456, approved=123000,
                        reversals=12, errors=3, tps=4321.0)
    report.latencies.extend([0.0125, 1.23456])
    report.rc.update({"00": 123000, "51": 400, "94": 56})
    console = Console(width=80, record=True, color_system=None)
    console.print(_table(report, final=True))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    row = next(line for line in text.splitlines() if "123456" in line)
    assert row.split() == [
        "1000", "998", "123456", "4321", "12.5", "1234.6", "1234.6", "1234.6", "123000", "12", "3"]
    assert "codes 00:123000 51:400 94:56" in text


def test_possim_load_exits_1_when_no_transaction_was_approved(tmp_path):
    """Every reply turned into a decline: a run where nothing was approved is not a success (it exited 0,
    declines not being errors), and stderr names the codes."""
    faults = tmp_path / "faults.toml"
    faults.write_text('[[message]]\naction = "override_rc"\ndirection = "rx"\nmti = "0210"\nrc = "05"\n')
    load = possim_load_against_host(tmp_path, 2, "--concurrency", "2", "--duration", "1s", "--mix", "sale=1",
                                    "--faults", str(faults))
    data = json.loads(load.stdout.splitlines()[-1])
    assert load.returncode == 1 and data["transactions"] > 0 and data["approved"] == 0, load.stderr
    assert "possim load: no transaction was approved (" in load.stderr


def test_a_second_ctrl_c_aborts_only_when_it_is_a_second_press():
    from terminal.load.runner import Interrupts

    stops: list[str] = []
    interrupts = Interrupts(lambda: stops.append("stop"), same_press_s=60)
    interrupts()
    interrupts()  # the same press delivered twice
    assert stops == ["stop"]
    later = Interrupts(lambda: stops.append("stop"), same_press_s=0)
    later()
    with pytest.raises(KeyboardInterrupt):
        later()
