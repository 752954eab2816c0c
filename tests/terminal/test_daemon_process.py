"""The daemon as an operator runs it: `python -m terminal daemon` and `possim ctl`, in real time.

Waits are bounded polls on a condition (`possim ctl status --json` until it holds, or a deadline);
nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acquirer.admin import Admin
from terminal.commands.ctl import Usage, fault_plan, request_for

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
TIDS = ["10000001", "10000002", "10000003"]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example_fleet(tmp_path: Path) -> Path:
    """examples/fleet.toml in a scratch directory (its ledger and journals land there), on a free port."""
    text = (ROOT / "examples" / "fleet.toml").read_text().replace("127.0.0.1:8750", f"127.0.0.1:{_free_port()}")
    text = text.replace('tid = "10000001"', 'tid = "10000001"\nhardware = { sign_after_s = 0.0 }', 1)
    config = tmp_path / "fleet.toml"
    config.write_text(text)
    return config


def start_daemon(config: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "terminal", "daemon", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True, cwd=config.parent)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"no control URL; stderr: {proc.stderr.read()[-2000:]}")
    return proc, url


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "terminal", "ctl", "--config", str(config), *args],
                          capture_output=True, text=True, env=ENV, timeout=120)


def status(config: Path) -> dict[str, dict]:
    out = ctl(config, "status", "--json")
    assert out.returncode == 0, out.stderr
    return {row["tid"]: row for row in json.loads(out.stdout)}


def until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        proc.stdout.close()
        proc.stderr.close()


def test_the_daemon_process_signs_the_example_fleet_off_after_idling_then_exits_0_on_sigterm(tmp_path):
    config = example_fleet(tmp_path)
    proc, url = start_daemon(config, "--idle-threshold", "2s")
    try:
        until(lambda: [r["state"] for r in status(config).values()] == ["signed_out"] * 3, "all signed out")
        rows = status(config)
        assert list(rows) == TIDS
        assert all(r["last_sign_in"] and r["last_sign_off"] for r in rows.values())
        assert ctl(config, "--url", url, "--token", "wrong", "status").returncode == 2
    finally:
        code = stop(proc)
    assert code == 0
    admin = Admin.open(str(tmp_path / "fleet-host.sqlite"))
    try:
        assert [admin.sign_offs(tid) for tid in TIDS] == [1, 1, 1]
    finally:
        admin.close()


def test_a_daemon_killed_mid_settlement_resumes_and_the_host_counts_one_of_each(tmp_path):
    config = example_fleet(tmp_path)  # idle 2 h: nothing closes by itself before the kill
    proc, _ = start_daemon(config)
    closing = None
    try:
        until(lambda: {r["state"] for r in status(config).values()} == {"ready"}, "all signed in")
        sale = ctl(config, "--json", "sale", "10000001", "12.34")
        assert sale.returncode == 0 and json.loads(sale.stdout)["ok"], sale.stdout + sale.stderr
        # the host answers the settlement at once; the answer reaches the terminal only 60 s later
        assert ctl(config, "fault", "10000001", "delay:0510:60s").returncode == 0
        closing = subprocess.Popen([sys.executable, "-m", "terminal", "ctl", "--config", str(config), "sign-off",
                                    "10000001"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        until(lambda: status(config)["10000001"]["state"] == "settling", "the settlement in flight", 30)
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9, mid-settlement
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        if closing is not None:
            closing.wait(30)  # its connection was cut
    proc, _ = start_daemon(config, "--idle-threshold", "2s")
    try:
        until(lambda: [r["state"] for r in status(config).values()] == ["signed_out"] * 3, "all signed out")
        assert status(config)["10000001"]["open_intents"] == []
    finally:
        assert stop(proc) == 0
    admin = Admin.open(str(tmp_path / "fleet-host.sqlite"))
    try:
        assert len(admin.settlements("10000001")) == 1
        assert admin.totals("10000001", "000001") == (1234, 1, 0, 0)
        assert [admin.sign_offs(tid) for tid in TIDS] == [1, 1, 1]
    finally:
        admin.close()


def test_sighup_reloads_the_fleet_file(tmp_path):
    config = example_fleet(tmp_path)
    proc, _ = start_daemon(config)
    try:
        until(lambda: {r["state"] for r in status(config).values()} == {"ready"}, "all signed in")
        text = config.read_text()
        config.write_text(text[:text.index('[[terminals]]\ntid = "10000003"')])  # the third terminal leaves
        proc.send_signal(signal.SIGHUP)
        until(lambda: list(status(config)) == TIDS[:2], "the reload")
        assert {r["state"] for r in status(config).values()} == {"ready"}
        config.write_text("not toml [")
        proc.send_signal(signal.SIGHUP)  # refused: the running fleet is kept
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        until(lambda: list(status(config)) == TIDS, "the second reload")
        report = ctl(config, "--json", "sign-off")
        assert report.returncode == 0 and {r["state"] for r in json.loads(report.stdout).values()} == {"signed_out"}
    finally:
        assert stop(proc) == 0


def test_daemon_usage_errors_exit_2_and_a_busy_control_port_exits_4(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\ntoken = "t"\nidle_threshold = "soon"\n[[terminals]]\ntid = "10000001"\n')
    out = subprocess.run([sys.executable, "-m", "terminal", "daemon", "--config", str(bad)], capture_output=True,
                         text=True, env=ENV, timeout=60)
    assert out.returncode == 2 and "daemon.idle_threshold" in out.stderr
    config = example_fleet(tmp_path)
    port = int(config.read_text().split("127.0.0.1:")[1].split('"')[0])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = subprocess.run([sys.executable, "-m", "terminal", "daemon", "--config", str(config)],
                             capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 4 and "cannot listen" in out.stderr
    # the control port is taken before any terminal signs in: none was left signed in at the host
    ledger = tmp_path / "fleet-host.sqlite"
    if ledger.exists():
        import sqlite3

        with sqlite3.connect(ledger) as db:
            assert db.execute("SELECT COUNT(*) FROM session WHERE signed_in = 1").fetchone()[0] == 0
    out = subprocess.run([sys.executable, "-m", "terminal", "ctl", "--config", str(config), "status"],
                         capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 4 and "cannot reach the daemon" in out.stderr


def test_ctl_that_gets_no_answer_in_time_says_so_and_exits_1():
    """A daemon that took the request but has not answered (a sale waiting on its signature, say) is
    reachable: it used to be reported as "cannot reach the daemon at URL: " with no reason, exit 4."""
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        out = subprocess.run([sys.executable, "-m", "terminal", "ctl", "--url", url, "--token", "t",
                              "--timeout", "0.5", "sale", "10000001", "3.33"],
                             capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 1, out.stderr
    assert f"no answer from the daemon at {url} within 0.5s; the sale may still complete there" in out.stderr


# ------------------------------------------------------------------------------------------------
# possim ctl's arguments
# ------------------------------------------------------------------------------------------------
def test_ctl_fault_shorthand():
    assert fault_plan(["link-down", "printer.out_of_paper", "reader.read_error=p0.3", "printer.jam=2",
                       "drop:0830", "delay:0510:20s", "override_rc:0830:96x1", "corrupt_mac:0210", "drop:0200",
                       "maintenance=30m", "load-paper"]) == {
        "link_down": True, "load_paper": True,
        "device": [{"point": "printer.out_of_paper", "always": True},
                   {"point": "reader.read_error", "probability": 0.3}, {"point": "printer.jam", "count": 2}],
        "message": [{"action": "drop", "mti": "0830", "direction": "rx"},
                    {"action": "delay", "mti": "0510", "direction": "rx", "delay": 20.0},
                    {"action": "override_rc", "mti": "0830", "direction": "rx", "rc": "96", "count": 1},
                    {"action": "corrupt_mac", "mti": "0210", "direction": "rx"},
                    {"action": "drop", "mti": "0200", "direction": "tx"}],
        "host": [{"action": "maintenance", "seconds": 1800.0}],
    }
    for bad in ("explode", "drop:83", "smash:0830", "printer.jam=lots", "maintenance=later", "drop:0830:5"):
        with pytest.raises(Usage):
            fault_plan([bad])


def test_ctl_requests():
    assert request_for("status", []) == ("GET", "/status", None)
    assert request_for("sale", ["10000001", "12.34"]) == ("POST", "/terminals/10000001/sale", {"amount": "12.34"})
    assert request_for("sign-off", []) == ("POST", "/sign-off", {"tids": None})
    assert request_for("sign-off", ["10000001", "10000002"])[2] == {"tids": ["10000001", "10000002"]}
    assert request_for("reprint", ["10000001", "7"])[2] == {"stan": "7"}
    assert request_for("clear-faults", ["10000001"]) == ("DELETE", "/terminals/10000001/faults", None)
    for action, args in (("sale", ["10000001"]), ("settle", []), ("frobnicate", []), ("fault", ["10000001"])):
        with pytest.raises(Usage):
            request_for(action, args)
