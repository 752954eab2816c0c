"""The load runner: sign in a fleet, run a transaction mix (open or closed model), settle, sign off.

Open model (`rate`): transactions arrive at a fixed rate whatever the host's speed, each on an idle
terminal - the way real merchants behave, so a slow host shows queueing. Closed model (`concurrency`):
C terminals each run their next transaction as soon as the last finished - the way to find the
ceiling. Every terminal keeps its own identity, keys, STAN, batch and journal, and the run ends with
every terminal's day closed, so the host's ledger can be compared with the sum of the journals.

Long runs stay in bounded memory: a terminal's batch holds `batch_capacity` records (a real terminal
then refuses sales with BATCH FULL), so the runner settles a terminal whose batch is full before its
next transaction and carries on (the load terminals do not sign off after settlement; the day end
signs them off). A settled batch's totals go into the report when it is settled; the in-memory
journals keep only the last `keep_batches` settled batches and `journal_events` events. Latencies are
kept as C doubles (8 bytes each), exactly, so the percentiles are the same as from a list of floats.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import TerminalConfig
from .identities import Identity

DEFAULT_MIX = {"sale": 80, "void": 5, "refund": 5, "balance": 10}


def parse_mix(text: str) -> dict[str, int]:
    """'sale=80,void=5,refund=5,balance=10' -> weights. Unknown operations, empty items, an operation
    named twice and weights that are not whole numbers from 0 up are errors: a typo must not quietly
    give a different mix than the one asked for."""
    mix: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        name, _, weight = part.partition("=")
        name = name.strip()
        if not part:
            raise ValueError(f"--mix {text!r}: an empty item; write operation=weight items separated by commas")
        if name not in DEFAULT_MIX:
            raise ValueError(f"unknown operation {name!r} in --mix; use {', '.join(DEFAULT_MIX)}")
        if name in mix:
            raise ValueError(f"--mix names {name} twice")
        if not re.fullmatch(r"\d{1,6}", weight.strip()):
            raise ValueError(f"--mix weight for {name} must be a whole number from 0 to 999999, got {weight!r}")
        mix[name] = int(weight)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("--mix needs at least one positive weight")
    return mix


class Interrupts:
    """Ctrl-C during a load run: the first stops it cleanly (`on_first`), a later one aborts.

    A SIGINT that arrives within `same_press_s` of the first is the same press delivered twice - the
    terminal sends it to the whole process group, and a wrapper such as `timeout` forwards its own copy -
    so it is ignored rather than taken as "abort" (which would leave every terminal's day open)."""

    def __init__(self, on_first: Callable[[], None], *, same_press_s: float = 1.0) -> None:
        self._on_first = on_first
        self._same_press_s = same_press_s
        self._first: float | None = None

    def __call__(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
            self._on_first()
        elif now - self._first >= self._same_press_s:
            raise KeyboardInterrupt


#: The error kind of a sign-in the host answered with a refusal starts with this; one the host never
#: answered (refused connection, silence) is named by its cause instead.
SIGN_IN_DECLINED = "sign_in declined rc="


def sign_in_error_kind(result: Any) -> str:
    """How a failed sign-in is counted: `sign_in declined rc=97`, or the cause when no reply came
    (`sign_in host unreachable`, `sign_in no reply to 0800`): one kind per cause, never per STAN or URL."""
    if result.rc:
        return f"{SIGN_IN_DECLINED}{result.rc}"
    return f"sign_in {error_cause(result.message)}"


def error_cause(message: str | None) -> str:
    """An error message's cause, for counting: "no reply to 0200" from "no reply to 0200 STAN 000002
    within 2s", "host unreachable" from "host unreachable at tcp://...: refused" - one kind per cause."""
    cause = re.split(r" at |:| STAN ", message or "", maxsplit=1)[0].strip()
    return cause[:40] or "no reply"


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class LoadConfig:
    url: str
    identities: list[Identity]
    duration: float = 10.0
    rate: float | None = None  # open model: transactions per second
    concurrency: int | None = None  # closed model
    ramp_up: float = 0.0  # seconds over which sign-ins are spread
    mix: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    reply_timeout: float = 10.0
    seed: int = 0
    faults: Any = None  # a FaultPlan applied to every terminal
    journal_dir: str | None = None  # None: in-memory journals
    batch_capacity: int | None = None  # records a terminal's batch holds (None: TerminalConfig's default)
    # settled batches an in-memory journal keeps (None: all of them): a terminal then holds at most
    # (keep_batches + 1) x batch_capacity records, about 4.4 KB each with their slips
    keep_batches: int | None = 1
    journal_events: int = 1_000  # events an in-memory journal keeps (the last few hundred operations')
    max_transactions: int | None = None  # stop after this many transactions (None: run for `duration`)


@dataclass
class LoadReport:
    terminals: int = 0
    signed_in: int = 0
    signed_off: int = 0
    transactions: int = 0
    approved: int = 0
    reversals: int = 0
    errors: int = 0
    tps: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds, one per transaction
    rc: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    elapsed: float = 0.0
    journal_totals: tuple[int, int, int, int] = (0, 0, 0, 0)  # summed over every terminal and batch
    settlements: int = 0  # batches settled mid-run because they were full (not the day-end settlements)
    skipped: int = 0  # open model: arrivals due while every signed-in terminal was busy (not offered)
    interrupted: bool = False  # stopped early (Ctrl-C): the day was still closed, the figures cover less

    def latency_ms(self, recent: int | None = None) -> dict[str, float]:
        """p50/p95/p99/max in ms over every transaction, or over the last `recent` of them: what a live
        table shows, so that a long run's refresh does not sort millions of latencies four times a second."""
        values = sorted(self.latencies if recent is None else self.latencies[-recent:])
        return {name: round(percentile(values, p) * 1000, 2) for name, p in
                (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}

    def as_json(self) -> dict[str, Any]:
        return {"terminals": self.terminals, "signed_off": self.signed_off, "transactions": self.transactions,
                "approved": self.approved, "reversals": self.reversals, "errors": self.errors,
                "tps": round(self.tps, 2), "latency_ms": self.latency_ms(), "signed_in": self.signed_in,
                "response_codes": dict(self.rc), "errors_by_kind": dict(self.error_kinds),
                "by_operation": dict(self.by_op), "elapsed_s": round(self.elapsed, 3),
                "journal_totals": list(self.journal_totals), "settlements": self.settlements,
                "skipped": self.skipped, "interrupted": self.interrupted}

    def add_totals(self, totals: tuple[int, int, int, int]) -> None:
        self.journal_totals = tuple(a + b for a, b in zip(self.journal_totals, totals, strict=True))


class LoadRunner:
    def __init__(self, config: LoadConfig, *, on_progress: Callable[[LoadReport], None] | None = None,
                 ready: Callable[[LoadReport], Awaitable[None]] | None = None) -> None:
        """`ready`, when given, is awaited once the fleet has signed in and before the first transaction:
        the seam where shard processes wait for each other (see `shards`)."""
        self.config = config
        self.report = LoadReport(terminals=len(config.identities))
        self.rng = random.Random(config.seed)
        self.terminals: list[Any] = []
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._on_progress = on_progress
        self._ready = ready
        self._approved_sales: dict[str, list[tuple[str, int]]] = {}
        self._started = 0  # transactions begun
        self._stopping = False
        self._signed_in: list[Any] = []  # the terminals whose sign-in succeeded: they transact and close the day

    def _make(self, identity: Identity) -> Any:
        from ..chaos import FaultSet
        from ..core import Terminal
        from ..hardware import Hardware
        from ..journal import MemoryJournal

        journal = (f"{self.config.journal_dir}/{identity.tid}.sqlite" if self.config.journal_dir else ":memory:")
        capacity = {} if self.config.batch_capacity is None else {"batch_capacity": self.config.batch_capacity}
        # no sign-off after a mid-run settlement: the terminal settles a full batch and goes on selling; the
        # day end (close_day) settles and then signs off explicitly
        config = TerminalConfig(tid=identity.tid, mid=identity.mid, tmk=identity.tmk, connect=self.config.url,
                                journal=journal, reply_timeout=self.config.reply_timeout, require_signature=False,
                                seed=self.config.seed, hardware={"sign_after_s": 0.0, "plugged_in": True},
                                sign_off_after_settlement=False, **capacity)
        hardware = Hardware.from_config(config, clock=time.monotonic)
        hardware.printer.load_paper(10**9)
        term = Terminal(config, hardware=hardware)
        if isinstance(term.journal, MemoryJournal):
            term.journal.keep_batches = self.config.keep_batches
            term.journal.max_events = self.config.journal_events
            term.journal.on_drop_batch = lambda _batch, totals: self.report.add_totals(totals)
        term.channel.faults = FaultSet(seed=self.config.seed)
        if self.config.faults is not None:
            self.config.faults.apply(term)
        return term

    async def run(self) -> LoadReport:
        report = self.report
        report.started = time.perf_counter()
        self.terminals = [self._make(identity) for identity in self.config.identities]
        await self._sign_in_all()
        if self._ready is not None:
            await self._ready(report)
        t0 = time.perf_counter()
        if not self._signed_in:
            pass  # nothing can transact: the sign-in errors say why (a closed model would wait for ever)
        elif self.config.rate:
            await self._open_model(t0)
        else:
            await self._closed_model(t0)
        busy = time.perf_counter() - t0
        report.tps = report.transactions / busy if busy > 0 else 0.0
        await self._close_all()
        report.elapsed = time.perf_counter() - report.started
        for term in self.terminals:  # the batches retention has not dropped (and counted): all of a file journal's
            for txn_batch in {t.batch for t in term.journal.transactions()}:
                report.add_totals(term.journal.batch_totals(txn_batch))
            term.journal.close()
        return report

    async def _sign_in_all(self) -> None:
        spacing = self.config.ramp_up / max(1, len(self.terminals))

        async def one(index: int, term: Any) -> None:
            if spacing:
                await asyncio.sleep(index * spacing)
            from ..dayend import Backoff, retry

            await term.power_on()
            # a fleet signing in at once can outrun the host: retry like a real terminal does
            result = await retry(term.sign_in, backoff=Backoff(base=0.5, cap=5.0, attempts=4), rng=self.rng)
            if result.ok:
                self.report.signed_in += 1
                self._signed_in.append(term)
                self._idle.put_nowait(term)
            else:
                self.report.errors += 1
                self.report.error_kinds[sign_in_error_kind(result)] += 1

        await asyncio.gather(*(one(i, t) for i, t in enumerate(self.terminals)))

    def _pick(self) -> str:
        ops, weights = zip(*self.config.mix.items(), strict=True)
        return self.rng.choices(ops, weights)[0]

    def stop(self) -> None:
        """Start no more transactions (Ctrl-C): those in flight finish, then every terminal settles and
        signs off as at the end of a full run, so the host is not left with open days."""
        self._stopping = True
        self.report.interrupted = True

    def _may_start(self, t0: float) -> bool:
        limit = self.config.max_transactions
        return (not self._stopping and (limit is None or self._started < limit)
                and time.perf_counter() - t0 < self.config.duration)

    async def _settle_full(self, term: Any) -> bool:
        """Settle a terminal whose batch is full, before it is refused (BATCH FULL); True when settled. The
        batch's totals reach the report when retention drops it (`on_drop_batch`) or at the end of the run."""
        result = await term.settle()
        report = self.report
        if not result.ok:
            report.errors += 1
            report.error_kinds[f"mid-run settlement {result.rc or 'failed'}"] += 1
            return False
        report.settlements += 1
        self._approved_sales[term.tid] = []  # voids are for the open batch only; its sales start afresh
        return True

    async def _transact(self, term: Any) -> None:
        if term.batch_full and not await self._settle_full(term):
            return  # the failure is counted; the next turn tries again
        op = self._pick()
        sales = self._approved_sales.setdefault(term.tid, [])
        started = time.perf_counter()
        if op == "void" and sales:
            stan, _ = sales.pop(self.rng.randrange(len(sales)))
            result = await term.void(stan)
        elif op == "refund" and sales:
            stan, amount = sales.pop(self.rng.randrange(len(sales)))
            result = await term.refund(stan, max(1, amount // 2))
        elif op == "balance":
            result = await term.balance()
        else:
            op = "sale"
            amount = self.rng.randint(100, 50_000)
            result = await term.sale(amount)
            if result.ok:
                sales.append((result.stan, amount))
        report = self.report
        report.latencies.append(time.perf_counter() - started)
        report.transactions += 1
        report.by_op[op] += 1
        report.rc[result.rc or "none"] += 1
        if result.ok:
            report.approved += 1
        if result.detail.get("reversal"):
            report.reversals += 1
        if result.rc is None and not result.ok:
            report.errors += 1
            report.error_kinds[error_cause(result.message)] += 1
        if self._on_progress is not None:
            self._on_progress(report)

    async def _closed_model(self, t0: float) -> None:
        concurrency = self.config.concurrency or len(self.terminals)

        async def worker() -> None:
            while True:
                term = await self._idle.get()
                if not self._may_start(t0):
                    self._idle.put_nowait(term)
                    return
                self._started += 1
                await self._run_one(term)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(self._signed_in)))))

    async def _open_model(self, t0: float) -> None:
        """Arrivals at the fixed rate, each taken by an idle terminal. Behind schedule (a rate beyond what
        the fleet and host can carry) the arrivals already due are taken at once as far as terminals are
        idle and the rest counted as `skipped`, so the loop never spins without yielding."""
        interval = 1.0 / float(self.config.rate or 1)
        tasks: set[asyncio.Task[None]] = set()
        next_at = t0
        while self._may_start(t0):
            delay = next_at - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))  # sleep(0) when behind: the transactions in flight go on
            due = 1 + max(0, int((time.perf_counter() - next_at) / interval))
            next_at += due * interval
            while due and self._may_start(t0) and not self._idle.empty():
                due -= 1
                self._started += 1
                task = asyncio.create_task(self._run_one(self._idle.get_nowait()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if due and self._may_start(t0):
                self.report.skipped += due
        if tasks:
            await asyncio.gather(*tasks)

    async def _run_one(self, term: Any) -> None:
        """One transaction on `term`, which goes back to the idle terminals whatever happens."""
        try:
            await self._transact(term)
        finally:
            self._idle.put_nowait(term)

    async def _close_all(self) -> None:
        from ..dayend import Backoff, close_day

        async def one(term: Any) -> None:
            if term.state not in ("ready", "signed_out"):
                return
            result = await close_day(term, backoff=Backoff(base=0.2, cap=2.0, attempts=5))
            if result.ok and term.state == "signed_out":
                self.report.signed_off += 1
            else:
                self.report.errors += 1
                self.report.error_kinds["day not closed"] += 1

        # only a terminal that signed in has a day to close: one that never did is not "signed off"
        await asyncio.gather(*(one(t) for t in self._signed_in))
