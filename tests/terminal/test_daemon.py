"""The sign-off daemon: idle auto sign-off of a fleet, maintenance, outages, a crash mid-settlement."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terminal.core import PowerLost
from terminal.daemon import FleetConfig, SignOffDaemon

ROOT = Path(__file__).resolve().parents[2]
TMK = "0123456789ABCDEFFEDCBA9876543210"


def fleet(tmp_path: Path, count: int, **daemon: object) -> FleetConfig:
    data = {
        "daemon": {"token": "t", "control": "127.0.0.1:0", "idle_threshold": "2h", "backoff_base": "30s",
                   "backoff_max": "10m", "reminders": [], **daemon},
        "host": {"listen": "tcp://127.0.0.1:0", "db": str(tmp_path / "host.sqlite")},
        "terminals": [{"tid": f"{60000001 + i:08d}", "mid": "898100012340001", "tmk": TMK,
                       "journal": str(tmp_path / f"t{i}.sqlite"), "hardware": {"sign_after_s": 0.0}}
                      for i in range(count)],
    }
    return FleetConfig.from_mapping(data)


async def wait_for(condition, timeout: float = 30.0, step: float = 1.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(step)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.looptime
async def test_a_hundred_idle_terminals_each_sign_off_exactly_once(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 100)) as daemon:
        await wait_for(lambda: all(s.terminal.state == "ready" for s in daemon.supervisors.values()), 60)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wait_for(lambda: all(s.terminal.state == "signed_out" for s in daemon.supervisors.values()),
                       4 * 3600, step=60)
        assert loop.time() - start >= 2 * 3600 - 120  # not before the two-hour threshold
        await asyncio.sleep(3 * 3600)  # and nothing more happens afterwards
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}


@pytest.mark.looptime
async def test_maintenance_window_defers_the_sign_off_to_its_end(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 2, idle_threshold="10m")) as daemon:
        await wait_for(lambda: all(s.terminal.state == "ready" for s in daemon.supervisors.values()))
        now = daemon.host.ledger.clock()
        daemon.host.admin.set_maintenance(now, now + 3600)  # an hour of maintenance from now
        loop = asyncio.get_running_loop()
        start = loop.time()
        await wait_for(lambda: all(s.terminal.state == "signed_out" for s in daemon.supervisors.values()),
                       3 * 3600, step=30)
        assert loop.time() - start >= 3600 - 60  # only after the window
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}


@pytest.mark.looptime
async def test_a_host_outage_is_ridden_out_with_backoff(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 3, idle_threshold="10m")) as daemon:
        await wait_for(lambda: all(s.terminal.state == "ready" for s in daemon.supervisors.values()))
        for s in daemon.supervisors.values():
            s.terminal.channel.link_down = True  # the link to the host is lost for 40 minutes
        loop = asyncio.get_running_loop()
        loop.call_later(40 * 60, lambda: [setattr(s.terminal.channel, "link_down", False)
                                          for s in daemon.supervisors.values()])
        await wait_for(lambda: all(s.terminal.state == "signed_out" for s in daemon.supervisors.values()),
                       3 * 3600, step=30)
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}
        assert daemon.metrics.failures.labels(op="close_day.idle")._value.get() == 0  # retried, not failed


async def test_killed_mid_settlement_resumes_with_one_settlement_and_one_sign_off(tmp_path):
    config = fleet(tmp_path, 2, idle_threshold="0.5s", backoff_base="0.1s", backoff_max="0.5s")
    host_db = config.host_db

    def crash(step: str) -> None:
        if step == "settle.answered":
            raise PowerLost("killed after the host answered the settlement")

    daemon = SignOffDaemon(config)
    await daemon.start()
    await wait_for(lambda: all(s.terminal.state == "ready" for s in daemon.supervisors.values()), step=0.05)
    for s in daemon.supervisors.values():
        result = await s.run_op("sale", lambda term=s.terminal: term.sale(1000))
        assert result.ok
        s.terminal.crash_hook = crash
    await wait_for(lambda: all(s.task.done() for s in daemon.supervisors.values()), step=0.05)
    for s in daemon.supervisors.values():  # as after kill -9: tasks gone, journals left as they were
        await s.terminal.channel.close()
        s.terminal.journal.close()
        s.task = None
    daemon.supervisors.clear()
    await daemon.stop()
    again = SignOffDaemon(FleetConfig.from_mapping({
        "daemon": {"token": "t", "idle_threshold": "0.5s", "backoff_base": "0.1s", "reminders": []},
        "host": {"listen": "tcp://127.0.0.1:0", "db": host_db},
        "terminals": [{"tid": t.tid, "mid": t.mid, "tmk": t.tmk, "journal": t.journal} for t in config.terminals]}))
    async with again:
        await wait_for(lambda: all(s.terminal.state == "signed_out" for s in again.supervisors.values()), step=0.05)
        for tid in again.supervisors:
            assert len(again.host.admin.settlements(tid)) == 1
            assert again.host.admin.sign_offs(tid) == 1
            assert again.host.admin.totals(tid, "000001") == (1000, 1, 0, 0)


async def test_control_api_needs_the_token_and_runs_operations(tmp_path):
    import aiohttp

    async with SignOffDaemon(fleet(tmp_path, 2)) as daemon:
        url = await daemon.start_control()
        await wait_for(lambda: all(s.terminal.state == "ready" for s in daemon.supervisors.values()), step=0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/status") as response:
                assert response.status == 401
            auth = {"Authorization": "Bearer t"}
            async with http.post(f"{url}/terminals/60000001/sale", json={"amount": "12.34"}, headers=auth) as r:
                sale = await r.json()
                assert r.status == 200 and sale["ok"] and sale["amount"] == 1234
            async with http.post(f"{url}/terminals/60000001/faults", headers=auth,
                                 json={"device": [{"point": "printer.out_of_paper", "count": 1}]}) as r:
                assert r.status == 200
            async with http.post(f"{url}/terminals/60000001/sale", json={"amount": "1.00"}, headers=auth) as r:
                assert (await r.json())["receipt_pending"] is True
            async with http.post(f"{url}/sign-off", json={}, headers=auth) as r:
                report = await r.json()
                assert {v["state"] for v in report.values()} == {"signed_out"}
            async with http.get(f"{url}/metrics", headers=auth) as r:
                text = await r.text()
                assert "possim_sign_offs_total 2.0" in text and 'possim_transactions_total{op="sale"} 2.0' in text
            async with http.get(f"{url}/reminders", headers=auth) as r:
                assert [t["tid"] for t in (await r.json())["now"]["terminals"]] == ["60000001", "60000002"]


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_process_signs_the_example_fleet_off_then_exits_on_sigterm(tmp_path):
    text = (ROOT / "examples" / "fleet.toml").read_text().replace("127.0.0.1:8750", f"127.0.0.1:{_free_port()}")
    config = tmp_path / "fleet.toml"
    config.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "terminal", "daemon", "--config", str(config),
                             "--idle-threshold", "2s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
        closed: set[str] = set()
        deadline = time.monotonic() + 60
        while len(closed) < 3 and time.monotonic() < deadline:  # wait on the daemon's own event log
            ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = proc.stderr.readline()
            if line.startswith("{") and json.loads(line).get("event") == "day_closed":
                closed.add(json.loads(line)["tid"])
        assert closed == {"10000001", "10000002", "10000003"}
        out = subprocess.run([sys.executable, "-m", "terminal", "ctl", "--config", str(config), "status", "--json"],
                             capture_output=True, text=True, env=env, timeout=30)
        assert [(t["tid"], t["state"]) for t in json.loads(out.stdout)] == [
            ("10000001", "signed_out"), ("10000002", "signed_out"), ("10000003", "signed_out")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
