"""Memory growth per sale of a long load run, with a batch capacity (bounded) and without (unbounded).

    python tools/soak_memory.py [--terminals 100] [--sales 60000] [--capacity 50] [--keep-batches N]
                                [--tracemalloc]

Each run is `possim load`'s runner (`LoadRunner`, closed model, sales only) against an in-process reference
host over loopback TCP, in a fresh process of its own (so memory one run freed cannot hide the other's):
- bounded: `--capacity` records a batch; the runner settles a full batch mid-run, its in-memory journals
  keep the last `--keep-batches` settled batches (LoadConfig's default: 1) and 1,000 events;
- unbounded: what a load run was before batch capacity: no batch ever full, journals that keep every
  batch and up to MAX_EVENTS (100,000) events each.
The host's ledger is an SQLite file in a temporary directory (its rows are on disk, not in this
process's heap). Memory is sampled (after a garbage collection) once about 60% of the sales are done -
by then each terminal of the bounded run (375 sales each with the defaults) has settled several
batches and its journal is full of events (a sale logs 3; 1,000 are kept: full after ~333 sales), so
what it holds no longer grows - and again after the last sale, before the day end; growth per sale is
the difference over the sales between. A journal holds up to twice as many sales just before a
mid-run settlement as just after one, so both samples are taken at the same point of that cycle:
half-way through every terminal's batch (the terminals go at the same pace, so after a whole number
of `--capacity` x `--terminals` sales and half of one; `--sales` is rounded down to such a point).
Half-way, a terminal a few sales ahead of or behind the others changes nothing; at a batch's end it
might just have settled. What still grows in the bounded run is the report's latencies, 8 bytes a
transaction.
RSS comes from /proc; with `--tracemalloc` the Python heap is measured too (tracemalloc makes the run
about 3.5 times slower). Last line: `soak_kb_per_sale_bounded=X soak_kb_per_sale_unbounded=Y` (RSS, KB
per sale).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquirer.config import HostConfig
from acquirer.host import HostServer
from terminal.journal import MAX_EVENTS
from terminal.load import LoadConfig, LoadRunner, generate_identities
from tools.rss import rss_kb


def sample() -> dict[str, float]:
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] / 1024 if tracemalloc.is_tracing() else float("nan")
    return {"heap_kb": heap, "rss_kb": float(rss_kb())}


def sample_points(terminals: int, sales: int, capacity: int) -> tuple[int, int]:
    """(first sample, last sale), both half-way through every terminal's batch, the first at 60% or after."""
    cycle, half = capacity * terminals, capacity * terminals // 2
    end = max(cycle + half, (sales - half) // cycle * cycle + half)
    warm = min(end - cycle, max(half, -(-(sales * 3 // 5 - half) // cycle) * cycle + half))
    return warm, end


async def soak(terminals: int, sales: int, bounded: bool, capacity: int, keep_batches: int | None) -> dict[str, Any]:
    identities = generate_identities(terminals)
    config = HostConfig()
    for identity in identities:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    warm_at, sales = sample_points(terminals, sales, capacity)
    points: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="possim-soak-") as tmp:
        async with HostServer(config, str(Path(tmp) / "host.sqlite")) as host:
            url = await host.listen("tcp://127.0.0.1:0")
            if bounded:
                options: dict[str, Any] = {"batch_capacity": capacity}
                if keep_batches is not None:
                    options["keep_batches"] = keep_batches
            else:
                options = {"batch_capacity": 10**9, "keep_batches": None, "journal_events": MAX_EVENTS}
            load = LoadConfig(url=url, identities=identities, duration=3600.0, concurrency=terminals,
                              mix={"sale": 1}, reply_timeout=30.0, max_transactions=sales, **options)

            def progress(report: Any) -> None:
                if report.transactions in (warm_at, sales) and report.transactions not in points:
                    points[report.transactions] = sample()

            started = time.perf_counter()
            report = await LoadRunner(load, on_progress=progress).run()
            wall = time.perf_counter() - started
    warm, end = points[warm_at], points[sales]
    between = sales - warm_at
    return {"bounded": bounded, "transactions": report.transactions, "approved": report.approved,
            "errors": report.errors, "settlements": report.settlements, "signed_off": report.signed_off,
            "wall_s": round(wall, 1), "heap_kb_per_sale": (end["heap_kb"] - warm["heap_kb"]) / between,
            "rss_kb_per_sale": (end["rss_kb"] - warm["rss_kb"]) / between,
            "heap_mb_at_end": end["heap_kb"] / 1024, "rss_mb_at_end": end["rss_kb"] / 1024}


def run_child(args: argparse.Namespace, bounded: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "bounded" if bounded else "unbounded", "--terminals",
           str(args.terminals), "--sales", str(args.sales), "--capacity", str(args.capacity),
           *(["--keep-batches", str(args.keep_batches)] if args.keep_batches is not None else []),
           *(["--tracemalloc"] if args.tracemalloc else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"the {'bounded' if bounded else 'unbounded'} run failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--sales", type=int, default=60_000, help="sales in all, over the fleet")
    parser.add_argument("--capacity", type=int, default=50, help="batch capacity of the bounded run")
    parser.add_argument("--keep-batches", type=int, help="settled batches a journal keeps in the bounded run "
                                                        "(default: LoadConfig's, 1)")
    parser.add_argument("--tracemalloc", action="store_true", help="measure the Python heap too (slower)")
    parser.add_argument("--child", choices=("bounded", "unbounded"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.tracemalloc:
            tracemalloc.start()
        result = asyncio.run(soak(args.terminals, args.sales, args.child == "bounded", args.capacity,
                                  args.keep_batches))
        print(json.dumps(result))
        return
    warm_at, args.sales = sample_points(args.terminals, args.sales, args.capacity)
    runs = [run_child(args, bounded) for bounded in (True, False)]
    keep = LoadConfig(url="", identities=[]).keep_batches if args.keep_batches is None else args.keep_batches
    per_terminal = args.sales // args.terminals
    print(f"{args.terminals} terminals, {args.sales} sales ({per_terminal} each); growth measured from sale "
          f"{warm_at} to the last")
    for run in runs:
        label = (f"bounded (batch capacity {args.capacity}, {keep} settled batch(es) kept)"
                 if run["bounded"] else "unbounded (no batch capacity, every batch kept)")
        heap = (f"{run['heap_kb_per_sale']:.3f} KB Python heap / sale ({run['heap_mb_at_end']:.1f} MB at the end), "
                if args.tracemalloc else "")
        print(f"  {label}: {run['rss_kb_per_sale']:.3f} KB RSS / sale ({run['rss_mb_at_end']:.1f} MB at the end), "
              f"{heap}{run['approved']}/{run['transactions']} approved, {run['settlements']} mid-run settlements, "
              f"{run['signed_off']} signed off, {run['errors']} errors, {run['wall_s']} s")
    bounded, unbounded = runs
    print(f"soak_kb_per_sale_bounded={bounded['rss_kb_per_sale']:.3f} "
          f"soak_kb_per_sale_unbounded={unbounded['rss_kb_per_sale']:.3f}")


if __name__ == "__main__":
    main()
