"""The sign-off daemon: a fleet of supervised terminals, an optional in-process host, reminders, control.

    async with SignOffDaemon(FleetConfig.load("fleet.toml")) as daemon:
        url = await daemon.start_control()          # the HTTP control API
        ...                                         # supervisors run until stop()

Each terminal gets a `Supervisor` (supervisor.py): resume from the journal, sign in, idle auto sign-off,
scheduled day end, retries with backoff. The daemon adds what is fleet-wide: the reference host when the
fleet file has a `[host]`, the reconciliation reminders, batch sign-off, reload, metrics and the log.
All time is the event loop's: `loop_time()` for delays, `now()` (epoch anchored at start + loop time) for
wall-clock schedules, so a virtual clock runs a business day in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..config import TerminalConfig
from ..result import OpResult
from . import events
from .config import EMBEDDED, FleetConfig
from .metrics import Metrics
from .supervisor import Supervisor, next_occurrence


class SignOffDaemon:
    """A fleet: `async with SignOffDaemon(config) as daemon:` starts everything; `reload(config)` adapts."""

    def __init__(self, config: FleetConfig, *, terminal_factory: Callable[[TerminalConfig], Any] | None = None,
                 wall_clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.supervisors: dict[str, Supervisor] = {}
        self.metrics = Metrics()
        self.reminders: list[dict[str, Any]] = []
        self.host: Any = None
        self.host_url: str | None = None
        self.control_url: str | None = None
        self._factory = terminal_factory
        self._wall_clock = wall_clock
        self._epoch: float | None = None
        self._control: Any = None
        self._reminder_task: asyncio.Task[None] | None = None
        self._reminder_wake = asyncio.Event()

    # clocks ------------------------------------------------------------------------------------
    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def now_ts(self) -> float:
        if self._epoch is None:
            import time

            self._epoch = (self._wall_clock or time.time)() - self.loop_time()
        return self._epoch + self.loop_time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ts())

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> SignOffDaemon:
        self.now_ts()  # anchor the wall clock to the loop clock once
        if self.config.host_listen is not None:
            await self._start_host()
        for config in self.config.terminals:
            self._add(config)
        self._reminder_task = asyncio.create_task(self._reminders(), name="possim-reminders")
        self.event("daemon_started", None, terminals=len(self.supervisors), host=self.host_url,
                   source=self.config.source)
        return self

    async def _start_host(self) -> None:
        from acquirer.config import HostConfig
        from acquirer.host import HostServer

        host_config = HostConfig.from_mapping(self.config.host_config) if self.config.host_config else HostConfig()
        for t in self.config.terminals:  # the fleet's terminals are registered with their own host
            if t.tid not in host_config.terminals and t.connect == EMBEDDED:
                host_config.add_terminal(t.tid, t.mid, t.tmk)
        self.host = HostServer(host_config, self.config.host_db, clock=self.now_ts)
        try:
            self.host_url = await self.host.listen(self.config.host_listen)  # type: ignore[arg-type]
        except BaseException:
            await self.host.close()
            self.host = None
            raise

    async def start_control(self) -> str:
        from .control import start_control

        self._control, self.control_url = await start_control(self)
        self.event("control_listening", None, url=self.control_url)
        return self.control_url

    def _add(self, config: TerminalConfig) -> Supervisor:
        if config.connect == EMBEDDED:
            if self.host_url is None:
                raise ValueError(f"terminal {config.tid} has no link and no [host] is running")
            config = config.with_overrides(connect=self.host_url)
        if self._factory is not None:
            terminal = self._factory(config)
        else:
            from ..core import Terminal

            terminal = Terminal(config, wall_clock=self.now_ts)  # one clock for the fleet and its schedule
        supervisor = Supervisor(self, terminal)
        self.supervisors[config.tid] = supervisor
        supervisor.start()
        return supervisor

    async def reload(self, config: FleetConfig) -> dict[str, list[str]]:
        """SIGHUP: add new terminals, stop removed ones, leave the others untouched.

        Daemon-wide settings (schedule, reminders, backoff, token) take effect at once; a terminal whose
        own settings changed keeps running as it was (reported as `changed`: restart it to apply them);
        the control address and the host's listen address need a restart.
        """
        old, new = set(self.supervisors), {t.tid for t in config.terminals}
        removed, added = sorted(old - new), sorted(new - old)
        running = {tid: self.supervisors[tid].terminal.config for tid in old & new}
        changed = sorted(tid for tid, was in running.items() if _identity(was) != _identity(config.terminal(tid)))
        await asyncio.gather(*(self.supervisors[tid].stop(self.config.shutdown_grace) for tid in removed))
        for tid in removed:
            del self.supervisors[tid]
        self.config = config
        for tid in added:
            terminal = config.terminal(tid)
            assert terminal is not None
            if self.host is not None and tid not in self.host.config.terminals and terminal.connect == EMBEDDED:
                self.host.config.add_terminal(terminal.tid, terminal.mid, terminal.tmk)
            self._add(terminal)
        for tid in sorted(old & new):
            self.supervisors[tid].schedule()
        self._reminder_wake.set()
        changes = {"added": added, "removed": removed, "changed": changed}
        self.event("reloaded", None, **changes)
        return changes

    async def stop(self) -> None:
        """Graceful: the control API stops taking calls, each supervisor finishes its attempt in flight
        (within `shutdown_grace`; what is cut short is in the journal), terminals shut down, host closes."""
        self.event("daemon_stopping", None, terminals=len(self.supervisors))
        if self._reminder_task is not None:
            self._reminder_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reminder_task
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        await asyncio.gather(*(s.stop(self.config.shutdown_grace) for s in self.supervisors.values()))
        if self.host is not None:
            await self.host.close()
        self.event("daemon_stopped", None)

    async def __aenter__(self) -> SignOffDaemon:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # operations --------------------------------------------------------------------------------
    async def sign_off_all(self, tids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Batch sign-off (settling first where there is business) of the fleet or a selection.

        One attempt per terminal, all at once; a terminal that cannot be closed now (host down,
        maintenance) stays owed and is retried with backoff: its report says `retrying`.
        """
        unknown = sorted(set(tids or ()) - set(self.supervisors))
        chosen = [self.supervisors[t] for t in sorted(set(tids) if tids else self.supervisors) if t in self.supervisors]
        results = await asyncio.gather(*(s.close_now("operator") for s in chosen))
        report = {s.tid: {"ok": r.ok, "state": s.terminal.state, "message": r.message,
                          "retrying": bool(r.detail.get("retrying"))} for s, r in zip(chosen, results, strict=True)}
        for tid in unknown:
            report[tid] = {"ok": False, "state": None, "message": f"no terminal {tid} in this fleet",
                           "retrying": False}
        self.event("batch_sign_off", None, terminals=len(report), closed=sum(r["ok"] for r in report.values()))
        return report

    def status(self) -> list[dict[str, Any]]:
        return [self.supervisors[tid].status() for tid in sorted(self.supervisors)]

    # records -----------------------------------------------------------------------------------
    def record(self, supervisor: Supervisor, result: OpResult, seconds: float | None = None) -> None:
        self.metrics.observe(result, seconds=seconds)
        self.event(result.op, supervisor, ok=result.ok, rc=result.rc, stan=result.stan, batch=result.batch,
                   amount=result.amount, message=result.message,
                   seconds=round(seconds, 3) if seconds is not None else None)

    def event(self, kind: str, supervisor: Supervisor | None, **detail: Any) -> None:
        if supervisor is not None:
            detail = {"tid": supervisor.tid, "state": supervisor.terminal.state, **detail}
        events.emit(kind, self.now_ts(), **detail)

    def reminder_report(self) -> dict[str, Any]:
        """Unsettled, unsigned and pending-reversal items per terminal (the 10:00 / 17:00 reminder)."""
        items = []
        for tid in sorted(self.supervisors):
            term = self.supervisors[tid].terminal
            summary = term.journal.summary()
            items.append({"tid": tid, "state": term.state, "batch": term.journal.batch,
                          "unsettled": summary["transactions"], "unsigned": summary["unsigned"],
                          "pending_reversals": summary["pending_reversals"],
                          "pending_receipts": summary["pending_receipts"], "open_intents": summary["open_intents"],
                          "signed_in": term.signed_in})
        attention = [i for i in items if i["unsettled"] or i["unsigned"] or i["pending_reversals"] or i["signed_in"]]
        return {"at": self.now().isoformat(timespec="seconds"), "terminals": items,
                "attention": [i["tid"] for i in attention]}

    async def _reminders(self) -> None:
        while True:
            self._reminder_wake.clear()
            if not self.config.reminders:
                await self._reminder_wake.wait()
                continue
            now = self.now()
            upcoming = min(next_occurrence(now, at) for at in self.config.reminders)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reminder_wake.wait(), (upcoming - now).total_seconds())
            if self._reminder_wake.is_set() or self.now() < upcoming:
                continue  # reloaded (or woken early): recompute
            report = self.reminder_report()
            report["scheduled_for"] = upcoming.strftime("%H:%M")
            self.reminders.append(report)
            del self.reminders[:-100]
            self.metrics.reminder(report)
            self.event("reminder", None, scheduled_for=report["scheduled_for"], attention=report["attention"])
            for item in report["terminals"]:
                if item["tid"] in report["attention"]:
                    self.event("reminder_item", None, **item)


def _identity(config: TerminalConfig | None) -> Any:
    """What of a terminal's configuration a reload compares (the link is resolved at start, so it is left out)."""
    if config is None:
        return None
    return config.with_overrides(connect="-")
