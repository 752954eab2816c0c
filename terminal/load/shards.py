"""`possim load --processes N`: one fleet split across N worker processes, one report.

A Python process runs on one core, and a possim terminal does real work per sale (write-ahead
reversal, MACs, slips, journal), so one process drives about a thousand sales a second. A host
vendor's host may take more than that: the fleet is split into N shards, each a `LoadRunner` in a
process of its own (spawned, never forked from a process that may hold an event loop or threads),
and the shards' reports are merged into one. Shards sign in first and start transacting together
(a barrier), so the run's throughput is the sum of theirs over the same seconds; each keeps its
terminals' journals, so the host's ledger is still compared with the sum of every journal.

Beyond one machine, use Locust (docs/locust.md); this is the same split on one machine, without it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from .runner import Interrupts, LoadConfig, LoadReport, LoadRunner

#: Seconds between a shard's progress snapshots to the parent (the live table's refresh).
PROGRESS_EVERY = 0.5
#: A shard that has not signed in its terminals or finished within this long after the run's
#: expected end is taken as stuck: the parent stops it and reports it as an error.
GRACE_S = 120.0


#: A report's counts: summed over the shards, and sent as they are in each snapshot.
_COUNTS = ("terminals", "signed_in", "signed_off", "transactions", "approved", "reversals", "errors", "settlements",
           "skipped")


class ShardError(RuntimeError):
    """A shard process failed or stopped answering; the message says which and why."""


def split(config: LoadConfig, processes: int) -> list[LoadConfig]:
    """The fleet in `processes` shards of consecutive identities (at most one shard per terminal).

    An open model's rate and a closed model's concurrency are divided as the terminals are (the
    shards together keep the asked rate), a transaction limit likewise; each shard has its own seed
    so their random choices differ.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    identities = config.identities
    count = max(1, min(processes, len(identities)))
    bounds = [round(i * len(identities) / count) for i in range(count + 1)]
    shards = []
    for index in range(count):
        share = identities[bounds[index]:bounds[index + 1]]
        fraction = len(share) / max(1, len(identities))
        shards.append(replace(
            config, identities=share, seed=config.seed + index,
            rate=None if config.rate is None else config.rate * fraction,
            concurrency=None if config.concurrency is None else max(1, round(config.concurrency * fraction)),
            max_transactions=(None if config.max_transactions is None
                              else _share(config.max_transactions, index, count))))
    return shards


def _share(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


def merge(reports: list[LoadReport]) -> LoadReport:
    """One report of shards that ran side by side: counts summed, latencies pooled (so percentiles are
    the fleet's), throughput the sum of the shards' (they transacted over the same seconds)."""
    merged = LoadReport()
    for report in reports:
        for name in _COUNTS:
            setattr(merged, name, getattr(merged, name) + getattr(report, name))
        merged.tps += report.tps
        merged.latencies.extend(report.latencies)
        merged.rc.update(report.rc)
        merged.error_kinds.update(report.error_kinds)
        merged.by_op.update(report.by_op)
        merged.elapsed = max(merged.elapsed, report.elapsed)
        merged.add_totals(report.journal_totals)
        merged.interrupted = merged.interrupted or report.interrupted
    merged.started = min((r.started for r in reports), default=0.0)
    return merged


def _snapshot(report: LoadReport, *, final: bool) -> dict[str, Any]:
    """A report as plain data for the queue (latencies only in the final one: the snapshots stay small)."""
    data = {name: getattr(report, name) for name in (*_COUNTS, "tps", "elapsed", "journal_totals", "interrupted")}
    data.update(rc=dict(report.rc), error_kinds=dict(report.error_kinds), by_op=dict(report.by_op))
    data["latencies"] = report.latencies.tobytes() if final else b""
    return data


def _report(data: dict[str, Any], started: float) -> LoadReport:
    report = LoadReport()
    for name in (*_COUNTS, "tps", "elapsed", "interrupted"):
        setattr(report, name, data[name])
    report.journal_totals = tuple(data["journal_totals"])
    report.rc, report.error_kinds, report.by_op = (Counter(data["rc"]), Counter(data["error_kinds"]),
                                                   Counter(data["by_op"]))
    report.latencies.frombytes(data["latencies"])
    report.started = started
    return report


def _shard_main(index: int, config: LoadConfig, out: Any, start: Any, stop: Any) -> None:
    """A shard process: sign in, tell the parent, wait for the start, run, send the final report.

    Ctrl-C is the parent's to handle (a terminal sends it to the whole process group): a shard ignores
    SIGINT and stops when the parent sets `stop`, closing its terminals' days like a full run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    last = [0.0]

    def progress(report: LoadReport) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            out.put(("progress", index, _snapshot(report, final=False)))

    async def ready(report: LoadReport) -> None:
        out.put(("ready", index, _snapshot(report, final=False)))
        await asyncio.get_running_loop().run_in_executor(None, start.wait)

    async def run() -> LoadReport:
        runner = LoadRunner(config, on_progress=progress, ready=ready)

        async def watch() -> None:
            loop = asyncio.get_running_loop()
            while not await loop.run_in_executor(None, stop.wait, 0.2):  # short waits: cancellable
                pass
            runner.stop()

        watcher = asyncio.create_task(watch())
        try:
            return await runner.run()
        finally:
            watcher.cancel()

    try:
        report = asyncio.run(run())
    except Exception as exc:  # the parent reports it, naming the shard; no second traceback from the child
        out.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    out.put(("done", index, _snapshot(report, final=True)))


def run_sharded(config: LoadConfig, processes: int, *,
                on_progress: Callable[[LoadReport], None] | None = None,
                on_interrupt: Callable[[], None] | None = None) -> LoadReport:
    """Run `config`'s fleet in `processes` shard processes and return the merged report.

    Blocks (it is the parent's whole job); `on_progress` gets a merged report as the shards' snapshots
    arrive. Raises ShardError when a shard fails or stops answering; the others are stopped. A first
    Ctrl-C (in the main thread) stops every shard the way `LoadRunner.stop` does and calls `on_interrupt`;
    a second one aborts.
    """
    shards = split(config, processes)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start, stop = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_shard_main, args=(i, shard, out, start, stop), name=f"possim-load-{i}",
                         daemon=True) for i, shard in enumerate(shards)]
    with _stopped_by_sigint(start, stop, on_interrupt):
        return _collect(config, procs, out, start, on_progress)


@contextmanager
def _stopped_by_sigint(start: Any, stop: Any, on_interrupt: Callable[[], None] | None) -> Iterator[None]:
    """While the shards run, a first SIGINT sets `stop` (and `start`, should the shards still be at the
    barrier); a later one aborts (`Interrupts`). Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first() -> None:
        stop.set()
        start.set()
        if on_interrupt is not None:
            on_interrupt()

    interrupts = Interrupts(first)
    signal.signal(signal.SIGINT, lambda _signum, _frame: interrupts())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(config: LoadConfig, procs: list[Any], out: Any, start: Any,
             on_progress: Callable[[LoadReport], None] | None) -> LoadReport:
    """Start the shard processes, release them together once all have signed in, and merge their reports."""
    started = time.perf_counter()
    latest: dict[int, LoadReport] = {}
    finals: dict[int, LoadReport] = {}
    ready: set[int] = set()
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + config.ramp_up + GRACE_S  # to sign in; then to finish
        while len(finals) < len(procs):
            try:
                kind, index, data = out.get(timeout=1.0)
            except queue.Empty:
                _check_alive(procs, finals)
                if time.monotonic() > deadline:
                    waiting = sorted(set(range(len(procs))) - (finals.keys() if start.is_set() else ready))
                    raise ShardError(f"shards {waiting} stopped answering") from None
                continue
            if kind == "failed":
                raise ShardError(f"shard {index} failed: {data}")
            report = _report(data, started)
            latest[index] = report
            if kind == "ready":
                ready.add(index)
                if len(ready) == len(procs):
                    start.set()  # every shard has signed in: transact together
                    deadline = time.monotonic() + config.duration + GRACE_S
            elif kind == "done":
                finals[index] = report
            if on_progress is not None:
                on_progress(merge([latest[i] for i in sorted(latest)]))
        for proc in procs:
            proc.join(10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    merged = merge([finals[i] for i in sorted(finals)])
    merged.started = started
    return merged


def _check_alive(procs: list[Any], finals: dict[int, LoadReport]) -> None:
    for index, proc in enumerate(procs):
        if index not in finals and not proc.is_alive():
            raise ShardError(f"shard {index} exited with code {proc.exitcode} before reporting")

