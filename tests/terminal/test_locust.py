"""The Locust integration: one master and two workers drive terminals against a real `possim host`.

Locust monkey-patches the standard library when imported, so this file never imports it: the
host, the master and the workers are separate processes, and the checks read what a user would
read - Locust's stats CSV and the host's ledger. Two in-process tests cover the parts that need no
Locust (naming and judging exchanges; splitting a fleet between workers) and that possim itself
never imports locust or gevent.
"""

from __future__ import annotations

import csv
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from acquirer.admin import Admin
from terminal.load import generate_identities, write_identities
from terminal.load.exchanges import ExchangeRecorder
from terminal.load.identities import partition

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
LOCUSTFILE = ROOT / "examples" / "locustfile.py"
USERS = 10
BATCH = 3  # records a batch holds: every user fills several in the run (the mid-run settlement path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's next stdout line, or AssertionError (with its stderr) after `timeout` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no output within {timeout}s; stderr:\n{proc.communicate(timeout=10)[1]}")
    return proc.stdout.readline().strip()


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """Wait for a process (killed after `timeout`); its exit code and stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        return -9, err
    return proc.returncode, err


def locust(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def test_master_and_two_workers_report_every_exchange_and_close_every_day(tmp_path):
    started = time.monotonic()
    fleet = generate_identities(2 * USERS)
    ids = tmp_path / "ids.csv"
    write_identities(fleet, ids)
    db = tmp_path / "host.sqlite"
    host = subprocess.Popen([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0",
                             "--terminals-csv", str(ids), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    procs: dict[str, subprocess.Popen[str]] = {"host": host}
    try:
        url = read_line(host, 20)  # the host prints its bound URL first, then serves
        assert url.startswith("tcp://127.0.0.1:"), url
        port = str(free_port())
        procs["master"] = locust("--headless", "--master", "--expect-workers", "2", "--master-bind-host",
                                 "127.0.0.1", "--master-bind-port", port, "-u", str(USERS), "-r", str(USERS),
                                 "-t", "4s", "--csv", str(tmp_path / "run"), "--only-summary", "-H", url,
                                 "--possim-identities", str(ids), "--possim-batch-capacity", str(BATCH))
        for name in ("worker-a", "worker-b"):
            procs[name] = locust("--worker", "--master-host", "127.0.0.1", "--master-port", port)
        results = {"master": finish(procs["master"], 40)}
        for name in ("worker-a", "worker-b"):
            results[name] = finish(procs[name], 15)
        host.send_signal(signal.SIGTERM)
        results["host"] = finish(host, 15)
        report = "\n".join(f"--- {name} (exit {code}) stderr:\n{err}" for name, (code, err) in results.items())
        assert all(code == 0 for code, _ in results.values()), report

        with open(tmp_path / "run_stats.csv", newline="") as handle:
            stats = {row["Name"]: row for row in csv.DictReader(handle) if row["Type"] == "cup-pos"}
        with open(tmp_path / "run_failures.csv", newline="") as handle:
            failures = list(csv.DictReader(handle))

        def count(name: str) -> tuple[int, int]:
            row = stats.get(name)
            return (int(row["Request Count"]), int(row["Failure Count"])) if row else (0, 0)

        assert not [f for f in failures if "TransportFailure" in f["Error"]], report  # no transport failure at all
        # batches of BATCH records: a user settles a full batch (which signs it off) and signs in again, so
        # there are more settlements than users, and every sign-in is matched by a sign-off
        settled, failed_settlements = count("0500 settlement")
        assert failed_settlements == 0 and settled > USERS, (stats.keys(), report)
        assert count("0800 sign-in")[1] == 0 and count("0820 sign-off")[1] == 0, report
        assert count("0800 sign-in")[0] == count("0820 sign-off")[0] >= settled, report  # day ends reached the stats
        sales, declined = count("0200 sale")
        assert sales > USERS and float(stats["0200 sale"]["Average Content Size"]) > 0, report
        # both workers did work, each with its own share of the fleet and its own log line
        assert "worker 0 of 2" in results["worker-a"][1] + results["worker-b"][1], report
        assert "worker 1 of 2" in results["worker-a"][1] + results["worker-b"][1], report

        admin = Admin.open(str(db))
        try:
            sessions = [dict(r) for r in admin.ledger.query("SELECT * FROM session WHERE signed_in_at IS NOT NULL")]
            used = {s["tid"] for s in sessions}
            assert len(used) == USERS  # ten users, ten different terminals: none shared
            assert used & {i.tid for i in partition(fleet, 0, 2)} and used & {i.tid for i in partition(fleet, 1, 2)}
            for session in sessions:  # every terminal that signed in also signed off
                assert session["signed_in"] == 0 and admin.sign_offs(session["tid"]) >= 1, session
            settlements = admin.settlements()
            assert len(settlements) == settled and {s["result"] for s in settlements} == {"balanced"}
            host_approved = Counter(t["kind"] for t in admin.transactions() if t["rc"] == "00")
        finally:
            admin.close()
        # what Locust counted as approved is what the host's ledger holds
        assert host_approved["sale"] == sales - declined
        assert host_approved["void"] == count("0200 void")[0] - count("0200 void")[1]
        assert host_approved["refund"] == count("0220 refund")[0] - count("0220 refund")[1]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert time.monotonic() - started < 40


async def test_exchange_recorder_against_the_reference_host(host, make_terminal):
    recorder = ExchangeRecorder()
    term = make_terminal(require_signature=False)
    term.channel.observer = recorder.observe
    await term.power_on()
    assert (await term.sign_in()).ok
    sale = await term.sale(1234)
    assert not (await term.sale(90051)).ok  # the host's magic amount 900.51: declined 51
    assert (await term.void(sale.stan)).ok
    await term.channel.close()
    host_down = term.channel.url
    term.channel.link_down = True
    assert not (await term.balance()).ok
    seen = recorder.drain()
    assert [e.name for e in seen] == ["0800 sign-in", "0200 sale", "0200 sale", "0200 void", "0200 balance"]
    assert [e.failure for e in seen[:4]] == [None, None, "rc 51 insufficient funds", None]
    assert not any(e.transport for e in seen[:4]) and all(e.response_ms > 0 for e in seen[:4])
    assert seen[4].transport and seen[4].failure.startswith("Offline: network down") and host_down in seen[4].failure
    assert recorder.drain() == []


def test_worker_shares_never_overlap_and_cover_the_fleet():
    fleet = generate_identities(11)
    shares = [partition(fleet, i, 3) for i in range(3)]
    tids = [i.tid for share in shares for i in share]
    assert len(tids) == len(set(tids)) == 11
    assert partition(fleet, 3, 3) == [] and partition(fleet, -1, 3) == []


def test_possim_never_imports_locust_or_gevent():
    code = ("import sys, contextlib, io\n"
            "import terminal, terminal.load, terminal.cli, terminal.load.exchanges\n"
            "from terminal.cli import main\n"
            "for argv in (['--help'], ['load', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main(argv)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
