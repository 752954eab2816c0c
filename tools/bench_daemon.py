"""Idle cost of the sign-off daemon: CPU and memory per idle terminal, for a fleet of 1,000.

    python tools/bench_daemon.py [--terminals 1000] [--idle 5]

Starts a daemon (reference host in-process, in-memory journals), waits until every terminal is signed in,
then measures for `--idle` seconds of wall time: CPU used by the process (against the same window with
no fleet, measured first in the same run) and RSS added per terminal. Last line:
`idle_cpu_pct=X baseline_cpu_pct=Y rss_per_terminal_kb=Z terminals=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminal.daemon import FleetConfig, SignOffDaemon
from terminal.load import generate_identities
from tools.rss import rss_kb


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle_window(seconds: float) -> float:
    start_cpu, start = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds() - start_cpu) / (time.perf_counter() - start)


async def main(count: int, idle: float) -> None:
    baseline = await idle_window(idle)
    before = rss_kb()
    ids = generate_identities(count)
    config = FleetConfig.from_mapping({
        "daemon": {"token": "bench", "idle_threshold": "2h", "reminders": []},
        "host": {"listen": "tcp://127.0.0.1:0"},
        "terminals": [{"tid": i.tid, "mid": i.mid, "tmk": i.tmk, "journal": ":memory:"} for i in ids]})
    async with SignOffDaemon(config) as daemon:
        while sum(s.terminal.state == "ready" for s in daemon.supervisors.values()) < count:
            await asyncio.sleep(0.2)
        signed_in = rss_kb()
        cpu = await idle_window(idle)
    per_terminal = (signed_in - before) / count
    print(f"{count} signed-in idle terminals (host in-process, journals in memory): "
          f"{cpu:.2f}% CPU idle vs {baseline:.2f}% for an empty loop; {per_terminal:.1f} KB RSS each "
          "(terminal, journal connection, host session)")
    print(f"idle_cpu_pct={cpu:.2f} baseline_cpu_pct={baseline:.2f} rss_per_terminal_kb={per_terminal:.1f} "
          f"terminals={count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.terminals, args.idle))
