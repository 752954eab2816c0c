"""The sign-off daemon on a virtual clock: idle auto sign-off of a fleet, schedules, maintenance, outages,
crashes at every step of the day close, the control API, reload and graceful stop.

Everything here runs against the reference host in-process over loopback TCP. `@pytest.mark.looptime`
(looptime's plugin, with pytest-asyncio 1.x in auto mode) gives each test a loop whose clock jumps ahead
whenever every task is waiting, so two hours of idleness pass in milliseconds and no test sleeps for real.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from acquirer.host import HostServer
from terminal.daemon import FleetConfig, FleetConfigError, Killed, SignOffDaemon, parse_duration
from terminal.faultplan import FaultPlan

TMK = "0123456789ABCDEFFEDCBA9876543210"
MONDAY_7AM = datetime(2026, 3, 2, 7, 0).timestamp()


def fleet_data(tmp_path: Path, count: int, **daemon: object) -> dict:
    return {
        "daemon": {"token": "t", "control": "127.0.0.1:0", "idle_threshold": "2h", "backoff_base": "30s",
                   "backoff_max": "10m", "reminders": [], **daemon},
        "host": {"listen": "tcp://127.0.0.1:0", "db": str(tmp_path / "host.sqlite")},
        "terminals": [{"tid": f"{60000001 + i:08d}", "mid": "898100012340001", "tmk": TMK,
                       "journal": str(tmp_path / f"t{i}.sqlite"), "reply_timeout": "20s",
                       "hardware": {"sign_after_s": 0.0}}
                      for i in range(count)],
    }


def fleet(tmp_path: Path, count: int, **daemon: object) -> FleetConfig:
    return FleetConfig.from_mapping(fleet_data(tmp_path, count, **daemon))


def states(daemon: SignOffDaemon) -> set[str]:
    return {s.terminal.state for s in daemon.supervisors.values()}


async def wait_for(condition, timeout: float = 60.0, step: float = 1.0) -> None:
    """Poll `condition` on the loop clock; fail after `timeout` loop seconds."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(step)

    await asyncio.wait_for(poll(), timeout)


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
def test_durations():
    assert [parse_duration(v) for v in ("3s", "90m", "2h", "250ms", 5, "1.5h", "1d")] == [
        3.0, 5400.0, 7200.0, 0.25, 5.0, 5400.0, 86400.0]
    for bad in ("soon", "-3s", "0", "3 weeks", True):
        with pytest.raises(FleetConfigError):
            parse_duration(bad, key="x")


@pytest.mark.parametrize(("change", "names"), [
    (lambda d: d["daemon"].pop("token"), "daemon.token"),
    (lambda d: d["daemon"].update(idle_treshold="2h"), "daemon.idle_treshold"),
    (lambda d: d["daemon"].update(idle_threshold="two hours"), "daemon.idle_threshold"),
    (lambda d: d["daemon"].update(day_end="25:00"), "daemon.day_end"),
    (lambda d: d["daemon"].update(reminders=["10:00", "5pm"]), "daemon.reminders[1]"),
    (lambda d: d["daemon"].update(control="8750"), "daemon.control"),
    (lambda d: d["daemon"].update(backoff_jitter=2), "daemon.backoff_jitter"),
    (lambda d: d["daemon"].update(backoff_base="10m", backoff_max="1m"), "daemon.backoff_max"),
    (lambda d: d["terminals"][1].update(tid="60000001"), "terminals[1].tid"),
    (lambda d: d["terminals"][0].update(tmk="00"), "terminals[0] (60000001)"),
    (lambda d: d["terminals"][0].update(colour="red"), "terminals[0] (60000001).colour"),
    (lambda d: d["terminals"][0].pop("mid"), "terminals[0] (60000001).mid"),
    (lambda d: d["terminals"][0].update(idle_threshold="later"), "terminals[0] (60000001).idle_threshold"),
    (lambda d: d.pop("host"), "terminals[0].connect"),
    (lambda d: d["host"].update(key_mode="999"), "key_mode"),
    (lambda d: d.update(terminal=[]), "terminal"),
])
def test_config_errors_name_the_key(tmp_path, monkeypatch, change, names):
    monkeypatch.delenv("POSSIM_TOKEN", raising=False)
    data = fleet_data(tmp_path, 2)
    change(data)
    with pytest.raises(FleetConfigError) as info:
        FleetConfig.from_mapping(data, source="fleet.toml")
    assert names in str(info.value) and str(info.value).startswith("fleet.toml")


def test_config_defaults_paths_and_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POSSIM_TOKEN", "from-env")
    (tmp_path / "fleet.toml").write_text(
        '[daemon]\nday_start = "08:00"\nday_end = "22:30"\nlog_file = "d.log"\n'
        '[host]\ndb = "h.sqlite"\n'
        '[[terminals]]\ntid = "10000001"\nmid = "898100012340001"\ntmk = "' + TMK + '"\nidle_threshold = "90m"\n'
        '[[terminals]]\ntid = "10000002"\nmid = "898100012340001"\ntmk = "' + TMK + '"\n'
        'connect = "tcp://10.0.0.1:5800"\nreply_timeout = "30s"\n')
    config = FleetConfig.load(tmp_path / "fleet.toml")
    assert config.token == "from-env" and config.control_url == "http://127.0.0.1:8750"
    assert [t.idle_sign_off for t in config.terminals] == [5400.0, 7200.0]
    assert config.terminals[0].journal == str(tmp_path / "journal-10000001.sqlite")
    assert config.terminals[0].connect == "embedded" and config.terminals[1].connect == "tcp://10.0.0.1:5800"
    assert config.terminals[1].reply_timeout == 30.0
    assert config.host_db == str(tmp_path / "h.sqlite") and config.log_file == str(tmp_path / "d.log")
    assert (config.day_start.hour, config.day_end.minute, [r.hour for r in config.reminders]) == (8, 30, [10, 17])
    assert {t.idle_sign_off for t in config.with_idle_threshold(3).terminals} == {3.0}


def test_the_example_fleet_loads():
    config = FleetConfig.load(Path(__file__).resolve().parents[2] / "examples" / "fleet.toml")
    assert [t.tid for t in config.terminals] == ["10000001", "10000002", "10000003"]
    assert config.host_listen and all(t.connect == "embedded" for t in config.terminals)


# ------------------------------------------------------------------------------------------------
# idle auto sign-off, schedules, reminders
# ------------------------------------------------------------------------------------------------
@pytest.mark.looptime
async def test_a_hundred_idle_terminals_each_sign_off_exactly_once(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 100)) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        loop = asyncio.get_running_loop()
        signed_in = loop.time()
        await asyncio.sleep(2 * 3600 - 60)
        assert states(daemon) == {"ready"}  # not a minute before the two-hour threshold
        await wait_for(lambda: states(daemon) == {"signed_out"}, 600, step=5)
        assert loop.time() - signed_in < 2 * 3600 + 300
        await asyncio.sleep(6 * 3600)  # and nothing more happens afterwards
        assert states(daemon) == {"signed_out"}
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}
        assert daemon.metrics.day_closes.labels(trigger="idle")._value.get() == 100
        assert daemon.metrics.sign_offs._value.get() == 100


@pytest.mark.looptime
async def test_the_idle_clock_restarts_with_each_sale_and_a_day_with_business_is_settled(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 1, idle_threshold="30m")) as daemon:
        sup = daemon.supervisors["60000001"]
        await wait_for(lambda: states(daemon) == {"ready"})
        for _ in range(3):  # a sale every 20 minutes keeps the terminal open
            await asyncio.sleep(20 * 60)
            assert (await sup.run_op("sale", lambda: sup.terminal.sale(1000))).ok
        await asyncio.sleep(25 * 60)
        assert sup.terminal.state == "ready"
        await wait_for(lambda: states(daemon) == {"signed_out"}, 600)
        assert [s["batch"] for s in daemon.host.admin.settlements("60000001")] == ["000001"]
        assert daemon.host.admin.totals("60000001", "000001") == (3000, 3, 0, 0)
        assert daemon.host.admin.sign_offs("60000001") == 1
        status = daemon.status()[0]
        assert status["state"] == "signed_out" and status["last_sign_off"] and status["last_sign_in"]


@pytest.mark.looptime
async def test_day_start_day_end_and_reminders_follow_the_wall_clock(tmp_path):
    config = fleet(tmp_path, 2, idle_threshold="12h", day_start="08:00", day_end="18:00",
                   reminders=["10:00", "17:00"])
    async with SignOffDaemon(config, wall_clock=lambda: MONDAY_7AM) as daemon:
        await asyncio.sleep(60)
        assert states(daemon) == {"signed_out"}  # 07:01: before the day starts
        await asyncio.sleep(3600)
        assert states(daemon) == {"ready"}  # 08:01
        sup = daemon.supervisors["60000001"]
        assert (await sup.run_op("sale", lambda: sup.terminal.sale(2500))).ok
        await asyncio.sleep(2 * 3600)  # 10:01: the first reminder
        assert [r["scheduled_for"] for r in daemon.reminders] == ["10:00"]
        first = {t["tid"]: t for t in daemon.reminders[0]["terminals"]}
        assert first["60000001"]["unsettled"] == 1 and first["60000002"]["unsettled"] == 0
        assert daemon.reminders[0]["attention"] == ["60000001", "60000002"]  # both still signed in
        await asyncio.sleep(8 * 3600)  # 18:01: day end
        assert states(daemon) == {"signed_out"}
        assert [r["scheduled_for"] for r in daemon.reminders] == ["10:00", "17:00"]
        assert daemon.metrics.day_closes.labels(trigger="scheduled")._value.get() == 2
        assert daemon.host.admin.totals("60000001", "000001") == (2500, 1, 0, 0)
        await asyncio.sleep(14 * 3600)  # Tuesday 08:01: signed in again, on the next batch
        assert states(daemon) == {"ready"}
        assert sup.terminal.journal.batch == "000002"
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}


@pytest.mark.looptime
async def test_a_restart_after_the_day_was_closed_does_not_reopen_it(tmp_path):
    config = fleet(tmp_path, 1, idle_threshold="12h", day_start="08:00", day_end="18:00")
    async with SignOffDaemon(config, wall_clock=lambda: MONDAY_7AM + 3600) as daemon:  # 08:00
        await wait_for(lambda: states(daemon) == {"ready"})
        report = await daemon.sign_off_all()
        assert report["60000001"]["ok"] and report["60000001"]["state"] == "signed_out"
    async with SignOffDaemon(config, wall_clock=lambda: MONDAY_7AM + 3 * 3600) as again:  # 10:00, same day
        await asyncio.sleep(600)
        assert states(again) == {"signed_out"}
        assert again.host.admin.sign_offs("60000001") == 1


# ------------------------------------------------------------------------------------------------
# outages
# ------------------------------------------------------------------------------------------------
@pytest.mark.looptime
async def test_a_maintenance_window_defers_the_sign_off_to_its_end(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 3, idle_threshold="10m", backoff_base="1m",
                                   backoff_max="5m")) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        now = daemon.host.ledger.clock()
        daemon.host.admin.set_maintenance(now, now + 3600)  # an hour of maintenance from now
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600 - 30)
        assert states(daemon) == {"ready"}  # 96 all through the window, retried
        assert all(s.owed == "close" and s.attempts >= 3 for s in daemon.supervisors.values())
        await wait_for(lambda: states(daemon) == {"signed_out"}, 600, step=5)
        assert loop.time() - start <= 3600 + 5 * 60 + 20  # within one capped backoff of the window's end
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}
        assert daemon.metrics.retries.labels(work="close")._value.get() >= 9


@pytest.mark.looptime
async def test_a_host_outage_is_ridden_out_with_backoff(tmp_path):
    config = fleet(tmp_path, 3, idle_threshold="10m", backoff_base="10s", backoff_max="4m")
    async with SignOffDaemon(config) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        sup = daemon.supervisors["60000002"]
        assert (await sup.run_op("sale", lambda: sup.terminal.sale(4200))).ok
        url = daemon.host_url
        await daemon.host.close()  # the host goes down for 40 minutes
        await asyncio.sleep(40 * 60)
        assert states(daemon) == {"ready"}
        delays = [s.retry_at for s in daemon.supervisors.values()]
        assert all(s.attempts >= 5 for s in daemon.supervisors.values()) and len(set(delays)) == 3  # jittered
        daemon.host = HostServer(daemon.host.config, config.host_db, clock=daemon.now_ts)
        await daemon.host.listen(url)  # back on the same address
        await wait_for(lambda: states(daemon) == {"signed_out"}, 600, step=5)
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}
        assert len(daemon.host.admin.settlements("60000002")) == 1
        assert daemon.host.admin.totals("60000002", "000001") == (4200, 1, 0, 0)


@pytest.mark.looptime
async def test_a_lost_link_is_ridden_out_and_the_day_closes_on_recovery(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 2, idle_threshold="10m", backoff_max="2m")) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        for s in daemon.supervisors.values():
            s.terminal.channel.link_down = True
        await asyncio.sleep(3600)
        assert states(daemon) == {"ready"} and daemon.status()[0]["link"] == "down"
        assert daemon.status()[0]["pending_work"]["owed"]["work"] == "close"
        for s in daemon.supervisors.values():
            s.terminal.channel.link_down = False
        await wait_for(lambda: states(daemon) == {"signed_out"}, 180)
        assert {daemon.host.admin.sign_offs(tid) for tid in daemon.supervisors} == {1}


@pytest.mark.looptime
async def test_a_sign_off_left_pending_is_retried_and_counted_once(tmp_path):
    """FM-02: the 0830 never arrives; the terminal stays signed in with the sign-off pending."""
    async with SignOffDaemon(fleet(tmp_path, 1, backoff_base="1m")) as daemon:
        sup = daemon.supervisors["60000001"]
        await wait_for(lambda: states(daemon) == {"ready"})
        await sup.apply_faults(FaultPlan.from_mapping({"message": [{"action": "drop", "mti": "0830", "count": 1}]}))
        result = await sup.run_op("sign_off", sup.terminal.sign_off)
        assert not result.ok and result.detail["pending"] and sup.terminal.state == "ready"
        assert sup.owed == "close" and sup.why == "pending"
        await wait_for(lambda: states(daemon) == {"signed_out"}, 600)
        assert daemon.host.admin.sign_offs("60000001") == 1


# ------------------------------------------------------------------------------------------------
# crashes: kill -9 at each step of the day close, then a restart
# ------------------------------------------------------------------------------------------------
@pytest.mark.looptime
@pytest.mark.parametrize("step", ["settle.intent", "settle.sent", "settle.answered", "settle.recorded",
                                  "sign_off.intent", "sign_off.sent", "sign_off.answered"])
async def test_killed_mid_day_close_resumes_with_one_settlement_and_one_sign_off(tmp_path, step):
    config = fleet(tmp_path, 2, idle_threshold="10m", backoff_base="10s")

    def kill(at: str) -> None:
        if at == step:
            raise Killed(f"kill -9 at {at}")

    daemon = SignOffDaemon(config)
    await daemon.start()
    await wait_for(lambda: states(daemon) == {"ready"})
    for s in daemon.supervisors.values():
        assert (await s.run_op("sale", lambda term=s.terminal: term.sale(1000))).ok
        s.terminal.crash_hook = kill
    await wait_for(lambda: all(s.task.done() for s in daemon.supervisors.values()), 3600)
    for s in daemon.supervisors.values():  # as after kill -9: nothing more runs, the journals stay as they are
        assert isinstance(s.task.exception(), Killed)
        await s.terminal.channel.close()
        s.terminal.journal.close()
    daemon.supervisors.clear()
    await daemon.stop()

    async with SignOffDaemon(config) as again:
        await wait_for(lambda: states(again) == {"signed_out"}, 3600)
        await asyncio.sleep(4 * 3600)
        for tid, sup in again.supervisors.items():
            assert len(again.host.admin.settlements(tid)) == 1, step
            assert again.host.admin.sign_offs(tid) == 1, step
            assert again.host.admin.totals(tid, "000001") == (1000, 1, 0, 0)
            assert sup.terminal.journal.open_intents() == []
            assert [s.batch for s in sup.terminal.journal.settlements()] == ["000001"]


@pytest.mark.looptime
async def test_sigterm_during_a_settlement_finishes_it_within_the_grace(tmp_path):
    daemon = SignOffDaemon(fleet(tmp_path, 1, idle_threshold="10m", shutdown_grace="30s"))
    await daemon.start()
    await wait_for(lambda: states(daemon) == {"ready"})
    sup = daemon.supervisors["60000001"]
    assert (await sup.run_op("sale", lambda: sup.terminal.sale(700))).ok
    await sup.apply_faults(FaultPlan.from_mapping({"message": [{"action": "delay", "mti": "0510", "delay": 10}]}))
    await wait_for(lambda: sup.terminal.state == "settling", 1200, step=0.5)
    host = daemon.host
    daemon.host = None  # keep the host up while the daemon stops
    await daemon.stop()
    assert len(host.admin.settlements("60000001")) == 1 and host.admin.sign_offs("60000001") == 1
    await host.close()


# ------------------------------------------------------------------------------------------------
# control API, batch sign-off, reload
# ------------------------------------------------------------------------------------------------
async def test_control_api_needs_the_token_and_runs_operations(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 2)) as daemon:
        url = await daemon.start_control()
        await wait_for(lambda: states(daemon) == {"ready"}, step=0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/status") as r:
                assert r.status == 401
            async with http.get(f"{url}/status", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
            auth = {"Authorization": "Bearer t"}
            async with http.get(f"{url}/status", headers=auth) as r:
                rows = await r.json()
                assert [(t["tid"], t["state"], t["link"]) for t in rows] == [
                    ("60000001", "ready", "connected"), ("60000002", "ready", "connected")]
                assert {"battery", "paper", "last_sign_in", "pending_work"} <= set(rows[0])
            async with http.post(f"{url}/terminals/60000001/sale", json={"amount": "12.34"}, headers=auth) as r:
                sale = await r.json()
                assert r.status == 200 and sale["ok"] and sale["amount"] == 1234 and "******" in sale["receipt"]
            async with http.post(f"{url}/terminals/60000001/sale", json={"amount": "12.345"}, headers=auth) as r:
                assert r.status == 400
            async with http.post(f"{url}/terminals/99999999/sale", json={"amount": "1"}, headers=auth) as r:
                assert r.status == 404
            async with http.post(f"{url}/terminals/60000001/faults", headers=auth,
                                 json={"device": [{"point": "printer.no_such_thing", "count": 1}]}) as r:
                assert r.status == 400 and "printer.no_such_thing" in await r.text()
            async with http.post(f"{url}/terminals/60000001/faults", headers=auth,
                                 json={"device": [{"point": "printer.out_of_paper", "count": 1}]}) as r:
                assert r.status == 200 and (await r.json())["armed"]
            async with http.post(f"{url}/terminals/60000001/sale", json={"amount": "1.00"}, headers=auth) as r:
                assert (await r.json())["receipt_pending"] is True
            async with http.post(f"{url}/terminals/60000001/reprint", json={}, headers=auth) as r:
                assert r.status == 409  # still out of paper
            async with http.post(f"{url}/terminals/60000001/faults", json={"load_paper": True}, headers=auth) as r:
                assert r.status == 200
            async with http.post(f"{url}/terminals/60000001/reprint", json={}, headers=auth) as r:
                assert r.status == 200 and "REPRINT" in (await r.json())["receipt"]
            async with http.post(f"{url}/sign-off", json={}, headers=auth) as r:
                report = await r.json()
                assert r.status == 200 and {v["state"] for v in report.values()} == {"signed_out"}
            async with http.get(f"{url}/metrics", headers=auth) as r:
                text = await r.text()
                assert "possim_sign_offs_total 2.0" in text and 'possim_transactions_total{op="sale"} 2.0' in text
                assert 'possim_terminals{state="signed_out"} 2.0' in text and "possim_host_rtt_seconds_bucket" in text
                assert 'possim_settlements_total{result="balanced"} 1.0' in text
            async with http.get(f"{url}/reminders", headers=auth) as r:
                assert [t["tid"] for t in (await r.json())["now"]["terminals"]] == ["60000001", "60000002"]
        assert daemon.host.admin.sign_offs("60000001") == 1


@pytest.mark.looptime
async def test_batch_sign_off_of_a_selection_during_an_outage_reports_retrying_then_closes(tmp_path):
    async with SignOffDaemon(fleet(tmp_path, 3, backoff_base="10s", backoff_max="1m")) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        daemon.supervisors["60000002"].terminal.channel.link_down = True
        report = await daemon.sign_off_all(["60000001", "60000002", "60000009"])
        assert report["60000001"] == {"ok": True, "state": "signed_out", "message": "day closed", "retrying": False}
        assert report["60000002"]["ok"] is False and report["60000002"]["retrying"] is True
        assert report["60000009"]["ok"] is False and "no terminal" in report["60000009"]["message"]
        assert daemon.supervisors["60000003"].terminal.state == "ready"  # not selected: untouched
        daemon.supervisors["60000002"].terminal.channel.link_down = False
        await wait_for(lambda: daemon.supervisors["60000002"].terminal.state == "signed_out", 120)
        assert daemon.host.admin.sign_offs("60000002") == 1


@pytest.mark.looptime
async def test_reload_adds_and_removes_terminals_without_touching_the_others(tmp_path):
    data = fleet_data(tmp_path, 3)
    async with SignOffDaemon(FleetConfig.from_mapping(data)) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"})
        kept = {tid: (s, s.task) for tid, s in daemon.supervisors.items() if tid != "60000003"}
        added = {"tid": "60000007", "mid": "898100012340002", "tmk": TMK, "journal": str(tmp_path / "t7.sqlite")}
        data["terminals"] = [*data["terminals"][:2], added]
        data["terminals"][0]["idle_threshold"] = "1h"
        changes = await daemon.reload(FleetConfig.from_mapping(data))
        assert changes == {"added": ["60000007"], "removed": ["60000003"], "changed": ["60000001"]}
        assert sorted(daemon.supervisors) == ["60000001", "60000002", "60000007"]
        assert all(daemon.supervisors[tid] is s and s.task is task and not task.done()
                   for tid, (s, task) in kept.items())
        await wait_for(lambda: daemon.supervisors["60000007"].terminal.state == "ready")
        assert daemon.supervisors["60000001"].terminal.config.idle_sign_off == 7200.0  # running as it was


async def test_log_lines_are_json_with_tid_state_and_masked_pans(tmp_path, caplog):
    import json
    import logging

    from terminal.daemon import events

    caplog.set_level(logging.INFO, logger="possim.daemon")
    async with SignOffDaemon(fleet(tmp_path, 1)) as daemon:
        await wait_for(lambda: states(daemon) == {"ready"}, step=0.05)
        sup = daemon.supervisors["60000001"]
        result = await sup.run_op("sale", lambda: sup.terminal.sale(100, card="approved2"))
        daemon.event("note", sup, message=f"card 6222020200112233440 said {result.rc}", mid=sup.terminal.mid)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "possim.daemon"]
    assert all("event" in line and "ts" in line for line in lines)
    sale = next(line for line in lines if line["event"] == "sale")
    assert sale["tid"] == "60000001" and sale["state"] == "ready" and sale["stan"]
    note = next(line for line in lines if line["event"] == "note")
    assert "622202*********3440" in note["message"] and note["mid"] == "898100012340001"
    assert "6222020200112233440" not in caplog.text
    assert events.mask({"pan": "6222020200112233440", "n": 5}) == {"pan": "622202*********3440", "n": 5}
