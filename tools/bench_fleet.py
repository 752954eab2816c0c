"""A fleet's business day in virtual time, and the memory each idle signed-in terminal costs.

    python tools/bench_fleet.py [--terminals 10000] [--sales 10] [--processes CORES]

The fleet is split into one shard per core (`--processes`, default all cores: the target is a wall
time on this 2-core machine, and one Python process uses one core). Each shard is a process running
its share of the terminals on a looptime event loop (virtual time: the two-hour idle costs nothing),
wired to its own in-process reference host over in-memory links (real frames, no sockets): every
terminal signs in, makes `--sales` sales, sits idle past its 2-hour threshold and is signed off
automatically (settlement + sign-off). Shards build their fleets first and start the day together;
the day's wall time is the slowest shard's. Memory figures are per terminal over all shards.

Memory, "beyond the journal" (issue 9): the RSS the fleet adds per terminal, minus what its journal
costs *at that point*. The fleet's journals are in memory (`Journal.open(":memory:")` gives a
MemoryJournal: plain Python objects, no SQLite), and a journal that has only been opened is not the
journal a terminal has after power-on and sign-in. The journal's cost is therefore measured on journals
that made exactly the calls the fleet's journals made: the first terminal's journal is wrapped in a
recorder, and a fresh process (so that memory freed here cannot hide anything) opens `--terminals`
journals and replays those calls on each one up to the same point, measuring RSS. Two points are
reported: signed in (after power-on + sign-in: the issue's figure, the contract line) and after the
day's sales (before the idle sign-off).

SQLite's own heap counter (`sqlite3_memory_used`, read through the `_sqlite3` extension's libsqlite3)
is still read: the fleet's SQLite growth minus the host ledger's (counted around each synchronous
`handle()` call) is what the journals hold in SQLite - zero for memory journals, and equal to the
replayed journals' figure for SQLite ones (if not, the replay missed something and the figure is wrong).

Everything else - terminal objects, hardware, channel, both link ends, the host's session, task and
ledger rows - counts as the terminal's. Last line: `rss_per_terminal_kb=X day_wall_s=Y terminals=N`,
X the signed-in figure (targets in issue 9: <= 10 KB, < 120 s).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol.dialect import get_dialect
from terminal.channel import HostChannel
from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.dayend import sign_off_when_idle
from terminal.journal import Journal
from terminal.links import memory_pair
from terminal.load import Identity, generate_identities
from terminal.load.identities import partition
from tools.rss import rss_kb

Call = tuple[str, tuple[Any, ...] | None, dict[str, Any] | None]  # (name, args, kwargs); args None: attribute read


def _sqlite_memory_used() -> Callable[[], int] | None:
    """SQLite's heap in use, bytes (`sqlite3_memory_used` of the library `_sqlite3` is linked to), if reachable."""
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)  # already loaded: dlsym also searches its libsqlite3
        func = lib.sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    func.restype, func.argtypes = ctypes.c_int64, []
    return lambda: int(func())


sqlite_heap = _sqlite_memory_used() or (lambda: 0)


class JournalRecorder:
    """Stands in for one terminal's journal: passes everything through and records the calls made.

    Reads of properties (`journal.batch`) are recorded too: they run statements as calls do.
    """

    __slots__ = ("calls", "journal", "recording")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.calls: list[Call] = []
        self.recording = True

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.journal, name)
        if not self.recording:
            return value
        if not callable(value):
            self.calls.append((name, None, None))
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.recording:
                self.calls.append((name, args, kwargs))
            return value(*args, **kwargs)

        return call


def replay(journal: Journal, calls: list[Call]) -> None:
    for name, args, kwargs in calls:
        attr = getattr(journal, name)
        if args is not None:
            attr(*args, **(kwargs or {}))


def journal_cost(count: int, mid: str, pan_key: bytes, phases: list[list[Call]]) -> list[dict[str, float]]:
    """Per journal, in a fresh process: RSS (KB) and SQLite heap (KB) of `count` journals opened, then after
    each phase of recorded calls replayed on every one of them (a fresh process: freed memory cannot hide it)."""
    job = pickle.dumps({"count": count, "mid": mid, "pan_key": pan_key, "phases": phases})
    out = subprocess.run([sys.executable, __file__, "--replay-journals"], input=job, capture_output=True, check=True)
    return list(json.loads(out.stdout))


def _replay_journals() -> None:
    job = pickle.loads(sys.stdin.buffer.read())
    count = job["count"]
    gc.collect()
    rss0, heap0 = rss_kb(), sqlite_heap()
    journals = [Journal.open(":memory:", tid=f"{i:08d}", mid=job["mid"], pan_key=job["pan_key"]) for i in range(count)]
    points = []

    def point() -> None:
        gc.collect()
        points.append({"rss_kb": (rss_kb() - rss0) / count, "sqlite_kb": (sqlite_heap() - heap0) / 1024 / count})

    point()
    for calls in job["phases"]:
        for journal in journals:
            replay(journal, calls)
        point()
    json.dump(points, sys.stdout)


async def day(ids: list[Identity], sales: int, go: Callable[[], None]) -> dict[str, Any]:
    """One process's share of the fleet's day; `go()` returns when every shard has built its fleet."""
    count = len(ids)
    config = HostConfig()
    for identity in ids:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    dialect = get_dialect()
    loop = asyncio.get_running_loop()
    async with HostServer(config, ":memory:") as host:
        host_sqlite = 0  # SQLite heap growth inside the host's handle(): the ledger's, not a journal's
        handle = host.host.handle

        def counted_handle(frame: Any) -> Any:
            nonlocal host_sqlite
            before = sqlite_heap()
            try:
                return handle(frame)
            finally:
                host_sqlite += sqlite_heap() - before

        host.host.handle = counted_handle  # type: ignore[method-assign]
        gc.collect()
        before, heap_before = rss_kb(), sqlite_heap()
        terminals, serving = [], []
        recorder: JournalRecorder | None = None
        hardware = {"plugged_in": True}  # one table for the fleet, as one [terminal.hardware] in a file would be
        clock = loop.time  # one bound method for the fleet (each `loop.time` read makes a new one)
        for identity in ids:
            near, far = memory_pair()
            serving.append(asyncio.create_task(host._serve(far)))  # served as a TCP connection would be

            async def connector(link: Any = near) -> Any:
                return link

            tc = TerminalConfig(tid=identity.tid, mid=identity.mid, tmk=identity.tmk, journal=":memory:",
                                require_signature=False, hardware=hardware)
            channel = HostChannel("memory://host", dialect=dialect, tpdu=tc.tpdu, firmware=tc.firmware,
                                  clock=clock, connector=connector)
            terminal = Terminal(tc, channel=channel, clock=clock)
            if recorder is None:  # the first terminal's journal calls are replayed to measure a journal
                recorder = JournalRecorder(terminal.journal)
                terminal.journal = recorder  # type: ignore[assignment]
            terminals.append(terminal)
        assert recorder is not None
        go()

        def sample() -> dict[str, float]:
            gc.collect()
            return {"rss_kb": (rss_kb() - before) / count,
                    "journal_sqlite_kb": (sqlite_heap() - heap_before - host_sqlite) / 1024 / count,
                    "host_sqlite_kb": host_sqlite / 1024 / count}

        wall = time.perf_counter()
        await asyncio.gather(*(t.power_on() for t in terminals))
        await asyncio.gather(*(t.sign_in() for t in terminals))
        # The loop holds the gather just awaited (its finished tasks, coroutines and OpResults, ~1 KB a
        # terminal) until this task next yields: the benchmark's leftovers, not the terminals' memory.
        await asyncio.sleep(0)
        wall_paused = time.perf_counter()
        signed_in, signed_in_calls = sample(), len(recorder.calls)
        wall += time.perf_counter() - wall_paused  # measuring is not part of the day
        for _ in range(sales):
            await asyncio.gather(*(t.sale(1000) for t in terminals))
        await asyncio.sleep(0)  # as after the sign-in
        wall_paused = time.perf_counter()
        after_sales = sample()
        recorder.recording = False
        wall += time.perf_counter() - wall_paused
        results = await asyncio.gather(*(sign_off_when_idle(t, t.config.idle_sign_off) for t in terminals))
        day_wall = time.perf_counter() - wall
        signed_off = sum(r.ok and t.state == "signed_out" for r, t in zip(results, terminals, strict=True))
        for t in terminals:
            await t.shut_down()
            t.journal.close()
        await asyncio.gather(*serving, return_exceptions=True)
    calls = recorder.calls
    journal = journal_cost(count, ids[0].mid, terminals[0].config.tmk_bytes,
                           [calls[:signed_in_calls], calls[signed_in_calls:]])
    return {"wall": day_wall, "signed_off": signed_off, "bare": journal[0],
            "points": [("signed in", signed_in, journal[1]), (f"after {sales} sales", after_sales, journal[2])]}


def run_shard(index: int, processes: int, terminals: int, sales: int) -> dict[str, Any]:
    """This process's share (every `processes`-th identity from `index`) on its own looptime loop."""
    try:
        import looptime
    except ImportError:
        sys.exit("tools/bench_fleet.py needs looptime (pip install -e '.[test]')")

    def go() -> None:  # tell the parent the fleet is built, and start when every shard's is
        print("ready", flush=True)
        sys.stdin.readline()

    share = partition(generate_identities(terminals), index, processes)
    loop = looptime.new_event_loop(start=0)
    try:
        run = loop.run_until_complete(day(share, sales, go))
    finally:
        loop.close()
    run["terminals"] = len(share)
    return run


def run_fleet(processes: int, terminals: int, sales: int) -> list[dict[str, Any]]:
    """Start one shard process per core, release them together once all have built their fleets."""
    shards = [subprocess.Popen([sys.executable, __file__, "--shard", str(i), "--processes", str(processes),
                                "--terminals", str(terminals), "--sales", str(sales)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for i in range(processes)]
    try:
        for shard in shards:
            assert shard.stdout is not None
            if shard.stdout.readline().strip() != "ready":
                sys.exit(f"a shard failed to build its fleet (exit {shard.wait()})")
        for shard in shards:
            assert shard.stdin is not None
            shard.stdin.write("go\n")
            shard.stdin.flush()
        runs = []
        for shard in shards:
            out, _ = shard.communicate()
            if shard.returncode:
                sys.exit(f"a shard failed (exit {shard.returncode})")
            runs.append(json.loads(out))
        return runs
    finally:
        for shard in shards:
            if shard.poll() is None:
                shard.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--sales", type=int, default=10)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="shards of the fleet, one process each (default: one per core)")
    parser.add_argument("--shard", type=int, help=argparse.SUPPRESS)  # run_fleet's child
    parser.add_argument("--replay-journals", action="store_true", help=argparse.SUPPRESS)  # journal_cost's child
    args = parser.parse_args()
    if args.replay_journals:
        return _replay_journals()
    if args.shard is not None:
        json.dump(run_shard(args.shard, args.processes, args.terminals, args.sales), sys.stdout)
        return None
    runs = run_fleet(max(1, min(args.processes, args.terminals)), args.terminals, args.sales)
    total = sum(r["terminals"] for r in runs)

    def mean(values: list[float]) -> float:  # per terminal, over the shards' shares
        return sum(v * r["terminals"] for v, r in zip(values, runs, strict=True)) / total

    bare = {k: mean([r["bare"][k] for r in runs]) for k in ("rss_kb", "sqlite_kb")}
    print(f"{len(runs)} processes ({', '.join(str(r['terminals']) for r in runs)} terminals), each with its own "
          f"reference host; bare journal (opened only): {bare['rss_kb']:.1f} KB RSS, {bare['sqlite_kb']:.1f} KB SQLite")
    beyond = []
    for p, (label, _, _) in enumerate(runs[0]["points"]):
        fleet = {k: mean([r["points"][p][1][k] for r in runs]) for k in runs[0]["points"][p][1]}
        journal = {k: mean([r["points"][p][2][k] for r in runs]) for k in runs[0]["points"][p][2]}
        beyond.append(fleet["rss_kb"] - journal["rss_kb"])
        print(f"{label}: {fleet['rss_kb']:.1f} KB RSS per terminal = journal {journal['rss_kb']:.1f} KB "
              f"(same calls replayed; SQLite {journal['sqlite_kb']:.1f} KB, fleet's journals "
              f"{fleet['journal_sqlite_kb']:.1f} KB) + {beyond[-1]:.1f} KB beyond the journal "
              f"(host ledger SQLite {fleet['host_sqlite_kb']:.1f} KB of it; RSS minus journal SQLite: "
              f"{fleet['rss_kb'] - fleet['journal_sqlite_kb']:.1f} KB)")
    wall = max(r["wall"] for r in runs)
    signed_off = sum(r["signed_off"] for r in runs)
    walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
    print(f"{total} terminals: sign-in, {args.sales} sales each, 2 h idle, auto sign-off in {wall:.1f} s of wall "
          f"time (slowest shard; shards {walls} s; {signed_off} signed off); "
          f"{beyond[0]:.1f} KB RSS per signed-in terminal beyond its journal, {beyond[1]:.1f} KB after the sales")
    print(f"rss_per_terminal_kb={beyond[0]:.1f} day_wall_s={wall:.1f} terminals={total}")


if __name__ == "__main__":
    main()
