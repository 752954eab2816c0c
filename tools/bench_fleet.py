"""A fleet's business day in virtual time, and the memory each idle signed-in terminal costs.

    python tools/bench_fleet.py [--terminals 10000] [--sales 10]

Everything runs in one process on a looptime event loop (virtual time: the two-hour idle costs
nothing), terminals wired to the reference host over in-memory links (real frames, no sockets):
every terminal signs in, makes `--sales` sales, sits idle past its 2-hour threshold and is signed off
automatically (settlement + sign-off). Memory: RSS added per signed-in terminal, minus the RSS of the
same number of bare in-memory journals measured in the same run ("beyond the journal").
Last line: `rss_per_terminal_kb=X day_wall_s=Y terminals=N` (targets in issue 9: <= 10 KB, < 120 s).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol.dialect import get_dialect
from terminal.channel import HostChannel
from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.dayend import sign_off_when_idle
from terminal.links import memory_pair
from terminal.load import generate_identities


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def day(count: int, sales: int) -> tuple[float, float, int]:
    ids = generate_identities(count)
    config = HostConfig()
    for identity in ids:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    dialect = get_dialect()
    loop = asyncio.get_running_loop()
    async with HostServer(config, ":memory:") as host:
        gc.collect()
        before = rss_kb()
        terminals, serving = [], []
        for identity in ids:
            near, far = memory_pair()
            serving.append(asyncio.create_task(host._serve(far)))  # served as a TCP connection would be

            async def connector(link=near):
                return link

            tc = TerminalConfig(tid=identity.tid, mid=identity.mid, tmk=identity.tmk, journal=":memory:",
                                require_signature=False, hardware={"plugged_in": True})
            channel = HostChannel("memory://host", dialect=dialect, tpdu=tc.tpdu, firmware=tc.firmware,
                                  clock=loop.time, connector=connector)
            terminals.append(Terminal(tc, channel=channel, clock=loop.time))
        wall = time.perf_counter()
        await asyncio.gather(*(t.power_on() for t in terminals))
        await asyncio.gather(*(t.sign_in() for t in terminals))
        gc.collect()
        signed_in_rss = rss_kb()
        for _ in range(sales):
            await asyncio.gather(*(t.sale(1000) for t in terminals))
        results = await asyncio.gather(*(sign_off_when_idle(t, t.config.idle_sign_off) for t in terminals))
        day_wall = time.perf_counter() - wall
        signed_off = sum(r.ok and t.state == "signed_out" for r, t in zip(results, terminals, strict=True))
        for t in terminals:
            await t.shut_down()
            t.journal.close()
        await asyncio.gather(*serving, return_exceptions=True)
    per_terminal = (signed_in_rss - before) / count - journal_cost(count)
    return per_terminal, day_wall, signed_off


def journal_cost(count: int) -> float:
    """RSS of `count` open in-memory journals, measured in a fresh process so freed memory cannot hide it."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
            "from tools.bench_fleet import rss_kb\nfrom terminal.journal import Journal\n"
            f"before = rss_kb(); js = [Journal.open(':memory:', tid=f'{{i:08d}}', mid='8'*15, pan_key=bytes(16)) "
            f"for i in range({count})]\nprint((rss_kb() - before) / {count})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--sales", type=int, default=10)
    args = parser.parse_args()
    try:
        import looptime
    except ImportError:
        sys.exit("tools/bench_fleet.py needs looptime (pip install -e '.[test]')")
    loop = looptime.new_event_loop(start=0)
    try:
        per_terminal, wall, signed_off = loop.run_until_complete(day(args.terminals, args.sales))
    finally:
        loop.close()
    print(f"{args.terminals} terminals: sign-in, {args.sales} sales each, 2 h idle, auto sign-off in {wall:.1f} s of "
          f"wall time ({signed_off} signed off); {per_terminal:.1f} KB RSS per signed-in terminal beyond its journal")
    print(f"rss_per_terminal_kb={per_terminal:.1f} day_wall_s={wall:.1f} terminals={args.terminals}")


if __name__ == "__main__":
    main()
