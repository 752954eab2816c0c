"""One supervisor per terminal: the terminal's day, run on the event loop's clock.

A supervisor owes its terminal at most one piece of work at a time and retries it until it is done:

- ``start``: power on (the journal restores keys, batch and any interrupted work);
- ``resume``: send the pending reversals a crash left behind;
- ``sign_in``: at start, or at the configured day start;
- ``close``: settle (batch upload when unbalanced), settlement voucher, sign off - because the terminal sat
  idle past its threshold, the day ended, an operator asked, a sign-off was left pending (FM-02), or the
  journal shows a settlement / sign-off that a crash interrupted (FM-05).

Between attempts it sleeps on the loop clock for an exponential backoff with jitter (seeded per terminal):
a host that is down, a lost link and a maintenance window (96) all mean "not yet". Retrying never counts
twice: the terminal journals its intent before each settlement and sign-off and completes the same one,
and the host answers a repeated 0500 / 0820 idempotently.

Every attempt holds the terminal's lock, as does every control-API operation, so automatic work and an
operator's sale never interleave; the lock is not held while backing off.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from ..dayend import Backoff
from ..result import OpResult

if TYPE_CHECKING:
    from .daemon import SignOffDaemon


class Killed(BaseException):
    """Raised by tests at a precise step to stop a supervisor as kill -9 would: nothing more runs."""


def next_occurrence(now: datetime, at: dtime) -> datetime:
    """The first moment strictly after `now` whose wall time is `at`."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


def last_occurrence(now: datetime, at: dtime) -> datetime:
    """The latest moment at or before `now` whose wall time is `at`."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate <= now else candidate - timedelta(days=1)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else None


class Supervisor:
    """Runs one terminal for the daemon."""

    def __init__(self, daemon: SignOffDaemon, terminal: Any) -> None:
        self.daemon = daemon
        self.terminal = terminal
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._rng: random.Random | None = None  # made at the first retry: an idle fleet does not pay for it
        self.owed: str | None = "start"  # the work this supervisor owes its terminal
        self.why: str | None = None  # for a close: idle, scheduled, operator, pending, interrupted
        self.attempts = 0  # failed attempts at the owed work
        self.retry_at = 0.0  # loop time of the next attempt
        self.last_failure: str | None = None
        self.sign_in_after_close = False
        self.stopping = False
        self.day_closes = 0
        self._next_day_end: datetime | None = None
        self._next_day_start: datetime | None = None

    @property
    def tid(self) -> str:
        return self.terminal.tid

    @property
    def rng(self) -> random.Random:
        """The jitter's RNG, seeded per terminal: the same delays whatever the fleet's order or size."""
        if self._rng is None:
            self._rng = random.Random(f"{self.daemon.config.seed}:{self.tid}")
        return self._rng

    @property
    def backoff(self) -> Backoff:
        c = self.daemon.config
        return Backoff(base=c.backoff_base, cap=c.backoff_max, attempts=0, jitter=c.backoff_jitter)

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.schedule()
        self.task = asyncio.create_task(self._run(), name=f"possim-terminal-{self.tid}")

    def schedule(self) -> None:
        """(Re)compute the day start / day end moments from the daemon's current configuration."""
        now, config = self.daemon.now(), self.daemon.config
        self._next_day_end = next_occurrence(now, config.day_end) if config.day_end else None
        self._next_day_start = next_occurrence(now, config.day_start) if config.day_start else None
        self.wake.set()

    async def stop(self, grace: float) -> None:
        """Finish the attempt in flight (up to `grace` seconds), then stop; the journal has the rest."""
        self.stopping = True
        self.wake.set()
        if self.task is not None and not self.task.done():
            done, _ = await asyncio.wait({self.task}, timeout=grace)
            if not done:
                self.daemon.event("cut_short", self, work=self.owed, grace_s=grace)
                self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception, Killed):
                await self.task
        with contextlib.suppress(Exception):
            await self.terminal.shut_down()
        self.terminal.journal.close()

    async def _run(self) -> None:
        while not self.stopping:
            await self._sleep_until_due()
            if self.stopping:
                break
            try:
                await self._due_work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a device exception: logged, retried, never fatal to the fleet
                self.daemon.event("supervisor_error", self, work=self.owed, error=f"{type(exc).__name__}: {exc}")
                self._failed(self.owed or "work", str(exc))

    # ------------------------------------------------------------------------------------------
    # scheduling
    # ------------------------------------------------------------------------------------------
    def _due_in(self) -> float | None:
        term = self.terminal
        delays = []
        if self.owed is not None:
            delays.append(self.retry_at - self.daemon.loop_time())
        elif term.state == "ready":
            delays.append(term.config.idle_sign_off - term.idle_for())
        now = self.daemon.now()
        for moment in (self._next_day_end, self._next_day_start):
            if moment is not None:
                delays.append((moment - now).total_seconds())
        return max(0.0, min(delays)) if delays else None

    async def _sleep_until_due(self) -> None:
        self.wake.clear()
        due = self._due_in()
        if due == 0.0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), due)

    async def _due_work(self) -> None:
        term, config = self.terminal, self.daemon.config
        now = self.daemon.now()
        if self._next_day_start is not None and now >= self._next_day_start and config.day_start is not None:
            self._next_day_start = next_occurrence(now, config.day_start)
            if self.owed is not None and self.owed.startswith("close"):
                self.sign_in_after_close = True
            elif self.owed is None and term.state == "signed_out":
                self._owe("sign_in")
        if self._next_day_end is not None and now >= self._next_day_end and config.day_end is not None:
            self._next_day_end = next_occurrence(now, config.day_end)
            self.sign_in_after_close = False
            if self.owed in (None, "sign_in") and (term.state != "signed_out" or term.journal.open_intents()):
                self._owe("close", "scheduled")
            elif self.owed == "sign_in":
                self.owed = None
        if self.owed is None and term.state == "ready" and term.idle_for() >= term.config.idle_sign_off:
            self._owe("close", "idle")
        if self.owed is not None and self.daemon.loop_time() >= self.retry_at:
            await self.perform(self.owed)

    def _owe(self, work: str, why: str | None = None) -> None:
        self.owed, self.why, self.attempts, self.retry_at, self.last_failure = work, why, 0, 0.0, None
        self.wake.set()

    def _failed(self, work: str, message: str) -> None:
        delay = self.backoff.delay(self.attempts, self.rng)
        self.attempts += 1
        self.retry_at = self.daemon.loop_time() + delay
        self.last_failure = message
        self.daemon.metrics.retries.labels(work=work).inc()
        self.daemon.event("retry", self, work=work, why=self.why, attempt=self.attempts, delay_s=round(delay, 3),
                          message=message)

    # ------------------------------------------------------------------------------------------
    # work
    # ------------------------------------------------------------------------------------------
    async def perform(self, work: str) -> OpResult:
        """One attempt at `work` under the terminal's lock; on failure the next is scheduled with backoff."""
        async with self.lock:
            if self.owed != work:  # done meanwhile (an operator, another path): nothing to repeat
                return OpResult(op=work, ok=True, state=self.terminal.state, message="already done")
            term = self.terminal
            if self.why == "idle" and self.attempts == 0 and term.idle_for() < term.config.idle_sign_off:
                self.owed = self.why = None  # an operation got in first: the terminal is no longer idle
                return OpResult(op=work, ok=True, state=term.state, message="no longer idle")
            attempt = {"start": self._start, "resume": self._resume, "sign_in": self._sign_in,
                       "close": self._close}[work]
            result = await attempt()
            if not result.ok:
                self._failed(work, result.message or f"{work} failed")
                return result
            why = self.why
            self.owed, self.why, self.attempts, self.last_failure = None, None, 0, None
            self._after(work, why, result)
        return result

    def _after(self, work: str, why: str | None, result: OpResult) -> None:
        term = self.terminal
        if work == "close":
            self.day_closes += 1
            self.daemon.metrics.day_closes.labels(trigger=why or "operator").inc()
            self.daemon.event("day_closed", self, trigger=why, message=result.message)
            if self.sign_in_after_close:
                self.sign_in_after_close = False
                self._owe("sign_in")
        elif work == "start":
            journal = term.journal
            if journal.open_intents():
                self._owe("close", "interrupted")  # FM-05: a settlement / sign-off a crash cut short
            elif journal.pending_reversals() and term.state == "ready":
                self._owe("resume")
            elif term.state == "signed_out" and self._sign_in_at_start():
                self._owe("sign_in")
        elif work == "resume" and term.state == "signed_out" and self._sign_in_at_start():
            self._owe("sign_in")

    def _sign_in_at_start(self) -> bool:
        """Without day_start: always. With it: inside business hours, unless today's day is already closed."""
        config = self.daemon.config
        if config.day_start is None:
            return True
        now = self.daemon.now()
        opened = last_occurrence(now, config.day_start)
        if config.day_end is not None and now >= next_occurrence(opened, config.day_end):
            return False
        signed_out = self.terminal.journal.events("signed_out", limit=1)
        return not signed_out or signed_out[-1]["at"] < opened.timestamp()

    async def _start(self) -> OpResult:
        result = await self._timed(self.terminal.power_on)
        if result.ok:
            self.daemon.event("powered_on", self, batch=self.terminal.journal.batch,
                              open_intents=[i.kind for i in self.terminal.journal.open_intents()],
                              pending_reversals=len(self.terminal.journal.pending_reversals()))
        return result

    async def _ensure_on(self) -> OpResult | None:
        """After a power loss (FM-10) the terminal is booted again before anything else."""
        if self.terminal.state == "power_off":
            result = await self._timed(self.terminal.power_on)
            if not result.ok:
                return result
        return None

    async def _resume(self) -> OpResult:
        term = self.terminal
        failed = await self._ensure_on()
        if failed:
            return failed
        for result in await term.resume():
            self._record(result)
            if not result.ok:
                return result
        if term.journal.pending_reversals() and term.state == "ready":
            return OpResult(op="resume", ok=False, state=term.state, message="reversal still pending")
        return OpResult(op="resume", ok=True, state=term.state, message="resumed")

    async def _sign_in(self) -> OpResult:
        failed = await self._ensure_on()
        if failed:
            return failed
        if self.terminal.state == "ready":
            return OpResult(op="sign_in", ok=True, state="ready", message="already signed in")
        return await self._timed(self.terminal.sign_in)

    async def _close(self) -> OpResult:
        """One attempt at closing the day; every step is safe to repeat."""
        term = self.terminal
        failed = await self._ensure_on()
        if failed:
            return failed
        journal = term.journal
        if term.state == "signed_out":
            stale = journal.open_intent("sign_off")
            if stale is not None:  # the 0830 was answered and the sign-off recorded, only the intent stayed
                journal.complete_intent(stale)
            if not journal.open_intents():
                return OpResult(op="close_day", ok=True, state=term.state, message="signed out")
            result = await self._timed(term.sign_in)  # a settlement cut short needs keys to be finished
            if not result.ok:
                return result
        if term.state != "ready":
            return OpResult(op="close_day", ok=False, state=term.state, message=f"terminal is {term.state}")
        if journal.open_intents() or journal.pending_reversals():
            for result in await term.resume():  # completes an interrupted settlement / sign-off first
                self._record(result)
                if not result.ok:
                    return result
        if term.state == "ready" and (journal.summary()["transactions"] or not term.config.sign_off_after_settlement):
            result = await self._timed(term.settle)  # signs off too when the terminal is configured to
            if not result.ok:
                return result
        if term.state == "ready":
            result = await self._timed(term.sign_off)
            if not result.ok:
                return result
        if term.state != "signed_out":
            return OpResult(op="close_day", ok=False, state=term.state, message=f"terminal is {term.state}")
        return OpResult(op="close_day", ok=True, state=term.state, message="day closed")

    async def close_now(self, why: str = "operator") -> OpResult:
        """Close the day at once (batch sign-off); if it cannot be done now, it stays owed and is retried."""
        if self.owed != "close":
            self._owe("close", why)
        result = await self.perform("close")
        result.detail["retrying"] = self.owed == "close"
        return result

    # ------------------------------------------------------------------------------------------
    # operations from the control API
    # ------------------------------------------------------------------------------------------
    async def run_op(self, name: str, op: Callable[[], Awaitable[OpResult]]) -> OpResult:
        """An operator's operation, never interleaved with automatic work."""
        async with self.lock:
            failed = await self._ensure_on()
            result = failed or await self._timed(op)
        journal = self.terminal.journal
        if self.owed is None and (result.detail.get("pending") or (result.op == "settle" and not result.ok
                                                                   and journal.open_intent("settlement"))):
            self._owe("close", "pending")  # FM-02: a sign-off left pending is retried with backoff
            self._failed("close", result.message)
        self.wake.set()  # activity resets the idle clock: recompute the deadline
        return result

    async def apply_faults(self, plan: Any, *, host_admin: Any = None, link_down: bool | None = None,
                           clear: bool = False, load_paper: bool = False, clear_jam: bool = False) -> None:
        """A fault plan (terminal.faultplan.FaultPlan) armed at run time, effective from the next exchange.

        Message rules and link toxics act on the links a channel opens; when the terminal's channel had
        none, its open link is closed (between operations, under the lock) so the next one carries them.
        """
        term = self.terminal
        async with self.lock:
            if clear:
                type(plan)().clear(term)
            had_faults = term.channel.faults is not None
            plan.apply(term, host_admin=host_admin)
            if not had_faults and term.channel.faults is not None:
                await term.channel.close()
            if link_down is not None:
                term.channel.link_down = bool(link_down)
            if load_paper:  # the merchant's remedies for FM-12, so a reprint can follow
                term.hw.printer.load_paper()
            if clear_jam:
                term.hw.printer.clear_jam()

    async def _timed(self, op: Callable[[], Awaitable[OpResult]]) -> OpResult:
        start = self.daemon.loop_time()
        result = await op()
        self._record(result, self.daemon.loop_time() - start)
        return result

    def _record(self, result: OpResult, seconds: float | None = None) -> None:
        self.daemon.record(self, result, seconds)

    # ------------------------------------------------------------------------------------------
    # reports
    # ------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        term = self.terminal
        status = term.status()
        channel = term.channel
        status["link"] = "down" if getattr(channel, "link_down", False) else (
            "connected" if status.get("link") else "idle")
        ident = term.journal.identity()
        signed_out = term.journal.events("signed_out", limit=1)
        status["last_sign_in"] = _iso(ident.get("signed_in_at"))
        status["last_sign_off"] = _iso(signed_out[-1]["at"]) if signed_out else None
        status["idle_threshold_s"] = term.config.idle_sign_off
        retrying = None
        if self.owed is not None:
            retrying = {"work": self.owed, "why": self.why, "attempts": self.attempts,
                        "next_attempt_in_s": round(max(0.0, self.retry_at - self.daemon.loop_time()), 1),
                        "last_failure": self.last_failure}
        status["pending_work"] = {"reversals": status.get("pending_reversals", 0),
                                  "intents": status.get("open_intents", []),
                                  "receipts": status.get("pending_receipts", 0),
                                  "unsettled": status.get("transactions", 0),
                                  "unsigned": status.get("unsigned", 0),
                                  "owed": retrying}
        return status
