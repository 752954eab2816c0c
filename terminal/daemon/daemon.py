"""The sign-off daemon: one supervisor per terminal keeps a fleet's day open and then closes it.

Each supervisor powers its terminal on, finishes whatever its journal says was interrupted (a pending
reversal, a settlement or sign-off cut off by a crash), signs in, and then sleeps on the event loop's
clock until something is due: the idle threshold (auto sign-off, FM-17), the scheduled day end, a
reminder. Closing the day retries through outages and maintenance windows with exponential backoff
and jitter; the terminal's journal intents and the host's idempotency mean a retry never counts twice.
A per-terminal lock keeps control-API operations and automatic work from interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

from ..config import TerminalConfig
from ..dayend import Backoff, close_day, retry
from ..result import OpResult
from .config import FleetConfig
from .metrics import Metrics

log = logging.getLogger("possim.daemon")


def _next_occurrence(now: datetime, at: dtime) -> datetime:
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


class Supervisor:
    """Runs one terminal for the daemon."""

    def __init__(self, daemon: SignOffDaemon, terminal: Any) -> None:
        self.daemon = daemon
        self.terminal = terminal
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.last_sign_in: float | None = None
        self.auto_sign_offs = 0
        self._next_day_end: datetime | None = None
        self._next_day_start: datetime | None = None

    @property
    def tid(self) -> str:
        return self.terminal.tid

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"terminal-{self.tid}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.terminal.shut_down()
        self.terminal.journal.close()

    async def run_op(self, name: str, op: Callable[[], Awaitable[OpResult]]) -> OpResult:
        async with self.lock:
            result = await op()
        self.daemon.record(self.terminal, result)
        self.wake.set()  # activity resets the idle clock: recompute the deadline
        return result

    async def _run(self) -> None:
        term = self.terminal
        await term.power_on()
        async with self.lock:
            resumed = await term.resume()  # interrupted reversal / settlement / sign-off
            for result in resumed:
                self.daemon.record(term, result)
            # a day whose close the crash interrupted is finished, not reopened: sign in only otherwise
            day_closed = any(r.op in ("settle", "sign_off") and r.ok for r in resumed)
            if term.state == "signed_out" and self.daemon.config.day_start is None and not day_closed:
                await self._sign_in()
        now = term.now()
        if self.daemon.config.day_end is not None:
            self._next_day_end = _next_occurrence(now, self.daemon.config.day_end)
        if self.daemon.config.day_start is not None:
            self._next_day_start = _next_occurrence(now, self.daemon.config.day_start)
        while True:
            await self._sleep_until_due()
            await self._do_due_work()

    async def _sign_in(self) -> OpResult:
        term = self.terminal
        result = await retry(term.sign_in, backoff=self.daemon.backoff, rng=self.daemon.rng)
        self.daemon.record(term, result)
        if result.ok:
            self.last_sign_in = term.now_ts()
        return result

    def _due_in(self) -> float:
        term = self.terminal
        delays = []
        if term.state == "ready":
            delays.append(term.config.idle_sign_off - term.idle_for())
        now = term.now()
        for moment in (self._next_day_end, self._next_day_start):
            if moment is not None:
                delays.append((moment - now).total_seconds())
        return max(0.0, min(delays)) if delays else 3600.0

    async def _sleep_until_due(self) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self._due_in())

    async def _do_due_work(self) -> None:
        term = self.terminal
        now = term.now()
        if self._next_day_start is not None and now >= self._next_day_start:
            self._next_day_start = _next_occurrence(now, self.daemon.config.day_start)  # type: ignore[arg-type]
            if term.state == "signed_out":
                async with self.lock:
                    await self._sign_in()
        if self._next_day_end is not None and now >= self._next_day_end:
            self._next_day_end = _next_occurrence(now, self.daemon.config.day_end)  # type: ignore[arg-type]
            await self.close("scheduled")
        elif term.state == "ready" and term.idle_for() >= term.config.idle_sign_off:
            await self.close("idle")

    async def close(self, why: str) -> OpResult:
        """Settle and sign off, retrying until done (or the attempts run out)."""
        async with self.lock:
            result = await close_day(self.terminal, backoff=self.daemon.backoff, rng=self.daemon.rng)
        self.daemon.record(self.terminal, result, op=f"close_day.{why}")
        if result.ok and self.terminal.state == "signed_out":
            self.auto_sign_offs += why != "operator"
            self.daemon.event("day_closed", self.terminal, why=why)
        else:
            self.daemon.event("day_not_closed", self.terminal, why=why, message=result.message)
        return result

    def status(self) -> dict[str, Any]:
        status = self.terminal.status()
        status["last_sign_in"] = self.last_sign_in
        status["pending_work"] = {"reversals": status.get("pending_reversals", 0),
                                  "intents": status.get("open_intents", [])}
        return status


class SignOffDaemon:
    """A fleet: `async with SignOffDaemon(config) as daemon:` starts everything; `reload(config)` adapts."""

    def __init__(self, config: FleetConfig, *, terminal_factory: Callable[[TerminalConfig], Any] | None = None,
                 seed: int = 0) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.backoff = Backoff(base=config.backoff_base, cap=config.backoff_max, attempts=1000)
        self.supervisors: dict[str, Supervisor] = {}
        self.metrics = Metrics()
        self.reminders: list[dict[str, Any]] = []
        self.host: Any = None
        self.host_url: str | None = None
        self.control_url: str | None = None
        self._factory = terminal_factory
        self._control: Any = None
        self._reminder_task: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> SignOffDaemon:
        if self.config.host_listen is not None:
            from acquirer.config import HostConfig
            from acquirer.host import HostServer

            host_config = HostConfig.from_mapping(self.config.host_config) if self.config.host_config else HostConfig()
            for t in self.config.terminals:
                if t.tid not in host_config.terminals:
                    host_config.add_terminal(t.tid, t.mid, t.tmk)
            self.host = HostServer(host_config, self.config.host_db)
            self.host_url = await self.host.listen(self.config.host_listen)
        for config in self.config.terminals:
            self._add(config)
        self._reminder_task = asyncio.create_task(self._reminders())
        return self

    async def start_control(self) -> str:
        from .control import start_control

        self._control, self.control_url = await start_control(self)
        return self.control_url

    def _add(self, config: TerminalConfig) -> Supervisor:
        if config.connect == "embedded":
            if self.host_url is None:
                raise ValueError(f"terminal {config.tid} has no link and no [host] is running")
            config = config.with_overrides(connect=self.host_url)
        if self._factory is not None:
            terminal = self._factory(config)
        else:
            from ..core import Terminal

            terminal = Terminal(config)
        supervisor = Supervisor(self, terminal)
        self.supervisors[config.tid] = supervisor
        supervisor.start()
        return supervisor

    async def reload(self, config: FleetConfig) -> dict[str, list[str]]:
        """SIGHUP: add new terminals, stop removed ones, leave the others untouched."""
        old, new = set(self.supervisors), {t.tid for t in config.terminals}
        for tid in sorted(old - new):
            await self.supervisors.pop(tid).stop()
        self.config = config
        for terminal in config.terminals:
            if terminal.tid not in old:
                if self.host is not None and terminal.tid not in self.host.config.terminals:
                    self.host.config.add_terminal(terminal.tid, terminal.mid, terminal.tmk)
                self._add(terminal)
        changes = {"added": sorted(new - old), "removed": sorted(old - new)}
        log.info(json.dumps({"event": "reload", **changes}))
        return changes

    async def stop(self) -> None:
        if self._reminder_task is not None:
            self._reminder_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reminder_task
        if self._control is not None:
            await self._control.cleanup()
        for supervisor in list(self.supervisors.values()):
            await supervisor.stop()
        if self.host is not None:
            await self.host.close()

    async def __aenter__(self) -> SignOffDaemon:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # operations --------------------------------------------------------------------------------
    async def sign_off_all(self, tids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Batch sign-off (settle first where there is business) of the fleet or a selection."""
        chosen = [self.supervisors[t] for t in (tids or sorted(self.supervisors)) if t in self.supervisors]
        results = await asyncio.gather(*(s.close("operator") for s in chosen))
        return {s.tid: {"ok": r.ok, "state": s.terminal.state, "message": r.message} for s, r in zip(chosen, results,
                                                                                                    strict=True)}

    def status(self) -> list[dict[str, Any]]:
        return [self.supervisors[tid].status() for tid in sorted(self.supervisors)]

    # records -----------------------------------------------------------------------------------
    def record(self, terminal: Any, result: OpResult, *, op: str | None = None) -> None:
        self.metrics.observe(op or result.op, result)
        self.event(op or result.op, terminal, ok=result.ok, rc=result.rc, stan=result.stan, message=result.message)

    def event(self, kind: str, terminal: Any, **detail: Any) -> None:
        log.info(json.dumps({"event": kind, "tid": terminal.tid, "state": terminal.state, **detail},
                            ensure_ascii=False, default=str))

    def reminder_report(self) -> dict[str, Any]:
        """Unsettled, unsigned and pending-reversal items per terminal (the 10:00 / 17:00 reminder)."""
        items = []
        for tid in sorted(self.supervisors):
            term = self.supervisors[tid].terminal
            summary = term.journal.summary()
            items.append({"tid": tid, "state": term.state, "unsettled": summary["transactions"],
                          "unsigned": summary["unsigned"], "pending_reversals": summary["pending_reversals"],
                          "signed_in": term.state in ("ready",)})
        attention = [i for i in items if i["unsettled"] or i["unsigned"] or i["pending_reversals"] or i["signed_in"]]
        return {"at": datetime.now().isoformat(timespec="seconds"), "terminals": items, "attention": attention}

    async def _reminders(self) -> None:
        if not self.config.reminders or not self.supervisors:
            return
        clock_terminal = next(iter(self.supervisors.values())).terminal
        while True:
            now = clock_terminal.now()
            upcoming = min(_next_occurrence(now, at) for at in self.config.reminders)
            await asyncio.sleep((upcoming - now).total_seconds())
            report = self.reminder_report()
            report["scheduled_for"] = upcoming.strftime("%H:%M")
            self.reminders.append(report)
            self.metrics.reminders.inc()
            log.info(json.dumps({"event": "reminder", "scheduled_for": report["scheduled_for"],
                                 "attention": [a["tid"] for a in report["attention"]]}))
