"""The scenario engine: a real terminal, the reference host over real loopback TCP, a fault, checks.

A scenario is an async function taking a `ScenarioContext`. It injects its fault at a precise point
and states what must be observable with `ctx.check(what, expected, seen)`: each check is reported as
it goes (what was expected, what was seen) and a failed check fails the scenario by name. Nothing is
faked: checks read the display, the printed slips, the journal, the host ledger and the funds report.

`remedy=False` runs a scenario with its remedy switched off (no automatic reversal, no retry...):
the scenario must then fail, which proves it can.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chaos import FaultSet
from ..config import TerminalConfig

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"


class CheckFailed(AssertionError):
    """A scenario check whose observation differed from the expectation."""


@dataclass
class Check:
    what: str
    expected: Any
    seen: Any
    passed: bool


@dataclass
class ScenarioResult:
    name: str
    title: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def failed_check(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


ScenarioFn = Callable[["ScenarioContext"], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fn: ScenarioFn
    source: str = ""


REGISTRY: dict[str, Scenario] = {}


def scenario(name: str, title: str, source: str = "") -> Callable[[ScenarioFn], ScenarioFn]:
    def register(fn: ScenarioFn) -> ScenarioFn:
        REGISTRY[name] = Scenario(name, title, fn, source)
        return fn

    return register


class ScenarioContext:
    """What a scenario works with: the host, terminals, faults, checks, the remedy switch."""

    def __init__(self, host: Any, url: str, workdir: Path, *, seed: int, remedy: bool,
                 report: Callable[[Check], None] | None = None) -> None:
        self.host = host
        self.admin = host.admin
        self.url = url
        self.workdir = workdir
        self.seed = seed
        self.remedy = remedy
        self.rng = random.Random(seed)
        self.checks: list[Check] = []
        self._report = report
        self._terminals: list[Any] = []

    def terminal(self, *, tid: str = TID, journal: str | None = None, **overrides: Any) -> Any:
        """A terminal against the scenario's host (not yet powered on); same journal = same terminal."""
        from ..core import Terminal

        hardware = {"sign_after_s": 0.01, "seed": self.seed, **overrides.pop("hardware", {})}
        settings: dict[str, Any] = dict(tid=tid, mid=MID, tmk=TMK, connect=self.url, reply_timeout=1.0,
                                        journal=journal or str(self.workdir / f"{tid}.sqlite"), seed=self.seed,
                                        signature_timeout=0.5, hardware=hardware)
        settings.update(overrides)
        term = Terminal(TerminalConfig(**settings))
        term.channel.faults = FaultSet(seed=self.seed)
        self._terminals.append(term)
        return term

    async def ready_terminal(self, **overrides: Any) -> Any:
        term = self.terminal(**overrides)
        await term.power_on()
        result = await term.sign_in()
        self.check("terminal signs in", True, result.ok)
        return term

    def check(self, what: str, expected: Any, seen: Any) -> Any:
        passed = (expected(seen) if callable(expected) else expected == seen)
        shown = getattr(expected, "__doc__", None) if callable(expected) else expected
        check = Check(what, shown, seen, bool(passed))
        self.checks.append(check)
        if self._report is not None:
            self._report(check)
        if not passed:
            raise CheckFailed(f"{what}: expected {shown!r}, saw {seen!r}")
        return seen

    def totals(self, term: Any) -> tuple[int, int, int, int]:
        return self.admin.totals(term.tid, term.journal.batch)

    async def close(self) -> None:
        for term in self._terminals:
            try:
                await term.shut_down()
            finally:
                term.journal.close()


def contains(text: str) -> Callable[[Any], bool]:
    """An expectation: the observed text (or any line of it) contains `text`."""

    def test(seen: Any) -> bool:
        if isinstance(seen, (list, tuple)):
            return any(text in str(item) for item in seen)
        return text in str(seen)

    test.__doc__ = f"contains {text!r}"
    return test


async def run_scenario(sc: Scenario, *, seed: int = 0, remedy: bool = True,
                       report: Callable[[Check], None] | None = None, transport: str = "tcp") -> ScenarioResult:
    """Run one scenario against a fresh host, over loopback TCP or a virtual serial pair (`transport`)."""
    from acquirer.config import HostConfig
    from acquirer.host import HostServer

    started = time.perf_counter()
    result = ScenarioResult(sc.name, sc.title, passed=False)
    with tempfile.TemporaryDirectory(prefix=f"possim-{sc.name}-") as tmp:
        workdir = Path(tmp)
        config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}", f"20000002:{MID}:{TMK}",
                                                 f"30000003:{MID}:{TMK}"])
        bridge = None
        async with HostServer(config, str(workdir / "host.sqlite")) as host:
            if transport == "serial":
                from ..vport import PtyBridge

                bridge = PtyBridge().start()
                await host.listen(f"serial://{bridge.paths[0]}")
                url = f"serial://{bridge.paths[1]}"
            else:
                url = await host.listen("tcp://127.0.0.1:0")
            ctx = ScenarioContext(host, url, workdir, seed=seed, remedy=remedy, report=report)
            try:
                await asyncio.wait_for(sc.fn(ctx), 120)
                result.passed = True
            except CheckFailed as exc:
                result.error = str(exc)
            except Exception as exc:  # a scenario that crashes fails with the reason, never silently
                result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            finally:
                result.checks = ctx.checks
                await ctx.close()
        if bridge is not None:
            bridge.close()
    result.seconds = time.perf_counter() - started
    return result
