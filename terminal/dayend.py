"""Closing the day: idle auto sign-off and retries through outages, on the event loop's clock.

These are the policies the sign-off daemon applies to each terminal of a fleet; they live here so a
single terminal (a scenario, a test, an embedding program) can use exactly the same ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .result import OpResult


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: base * 2^attempt, capped, times a random factor."""

    base: float = 1.0
    cap: float = 300.0
    attempts: int = 10
    jitter: float = 0.5  # 0: none; 0.5: delay drawn from [0.5, 1.0] x the exponential value

    def delay(self, attempt: int, rng: random.Random) -> float:
        value = min(self.cap, self.base * (2 ** attempt))
        return value * (1 - self.jitter * rng.random())


async def retry(op: Callable[[], Awaitable[OpResult]], *, backoff: Backoff = Backoff(),
                rng: random.Random | None = None,
                on_attempt: Callable[[int, OpResult], None] | None = None) -> OpResult:
    """Run `op` until it succeeds or the attempts run out, sleeping on the loop clock between tries.

    A host in maintenance (96), a dead link and a timeout all look the same here: not yet. The
    operations retried (settlement, sign-off) are idempotent at the host and journaled at the
    terminal, so a retry never counts twice.
    """
    rng = rng or random.Random(0)
    result = await op()
    attempt = 0
    while not result.ok and attempt < backoff.attempts:
        if on_attempt is not None:
            on_attempt(attempt, result)
        await asyncio.sleep(backoff.delay(attempt, rng))
        attempt += 1
        result = await op()
    result.detail.setdefault("attempts", attempt + 1)
    return result


async def close_day(terminal: Any, *, backoff: Backoff = Backoff(), rng: random.Random | None = None) -> OpResult:
    """Settle (batch upload when unbalanced) and sign off, retrying through outages.

    Interrupted work from an earlier run is finished first; a terminal already signed out with
    nothing owed is left alone.
    """
    if terminal.state == "signed_out" and not terminal.journal.open_intents():
        return OpResult(op="close_day", ok=True, state=terminal.state, message="already signed out")

    async def attempt() -> OpResult:
        if terminal.state == "ready":
            for resumed in await terminal.resume():
                if not resumed.ok:
                    return resumed
        if terminal.state == "signed_out":
            return OpResult(op="close_day", ok=True, state=terminal.state, message="day closed")
        if terminal.state != "ready":
            return OpResult(op="close_day", ok=False, state=terminal.state, message=f"terminal is {terminal.state}")
        if terminal.journal.summary()["transactions"] or not terminal.config.sign_off_after_settlement:
            result = await terminal.settle()
            if result.ok and terminal.state == "ready":
                return await terminal.sign_off()
            return result
        return await terminal.sign_off()

    return await retry(attempt, backoff=backoff, rng=rng)


async def sign_off_when_idle(terminal: Any, threshold: float, *, backoff: Backoff = Backoff(),
                             rng: random.Random | None = None) -> OpResult:
    """Wait until the terminal has been idle for `threshold` seconds, then close its day (FM-17)."""
    while True:
        idle = terminal.idle_for()
        if idle >= threshold:
            break
        await asyncio.sleep(threshold - idle)
    return await close_day(terminal, backoff=backoff, rng=rng)
