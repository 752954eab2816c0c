"""The host's own cost per sale, without sockets or terminals: `AcquirerHost.handle` timed per request.

    python tools/bench_host.py [--terminals 50] [--sales 100] [--memory] [--profile 25]
    python tools/bench_host.py --instructions [--terminals 20 --sales 25]    (needs valgrind)

`tools/bench_e2e.py` measures sales over loopback TCP; when it is slow this says how much of a sale is
the host's work. It builds signed-in terminals against an in-process `AcquirerHost` with a file
ledger in a temporary directory (WAL, the configured durability - the way `possim host` runs it),
pre-builds every signed 0200 sale frame (so the terminal side costs nothing while timing), then
times `handle()` over them, round robin across terminals. As a same-run peer it times a bare
`dialect.decode` + `dialect.encode` of the same frames: the floor any host pays to read a request
and write a reply of that shape. The last line is
`host_us_per_sale=X codec_us=Y ratio=Y/X`: wall-clock microseconds per request, X the best of
`--rounds` consecutive slices of the run (others' load comes and goes; every slice pays its share of
commits and WAL checkpoints), Y the best of three passes. The line before gives the whole run's
mean, median and process CPU time per request.

Wall and CPU times move with the machine's load; `--instructions` does not: it runs the setup twice
under valgrind's callgrind, once handling the first fifth of the frames and once all of them, and
prints `host_instructions_per_sale` (the difference over the extra frames; the kernel's share of a
commit is not in it). About three minutes for the default 500 frames.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquirer.config import HostConfig  # noqa: E402
from acquirer.host import AcquirerHost  # noqa: E402
from acquirer.ledger import Ledger  # noqa: E402
from protocol import catalogue, security  # noqa: E402
from protocol.catalogue import CardData  # noqa: E402
from protocol.composite import Field60  # noqa: E402
from protocol.dialect import get_dialect  # noqa: E402
from protocol.framing import Frame, Header, Tpdu  # noqa: E402
from terminal.load import generate_identities  # noqa: E402

CARD = CardData(pan="6222020000000015", expiry="3012", track2="6222020000000015D30122010000000000")
HEADER = Header.for_firmware("3.0.8")
TPDU = Tpdu(dest=6)


def build_host(db_path: str, terminals: int) -> tuple[AcquirerHost, Ledger, list]:
    """A host as `possim host --terminals-csv` builds one: registry from identities, file ledger."""
    identities = generate_identities(terminals)
    config = HostConfig()
    for ident in identities:
        config.add_terminal(ident.tid, ident.mid, ident.tmk)
    ledger = Ledger(db_path, synchronous=config.durability)
    host = AcquirerHost(config, ledger)
    ledger.sync_merchants(config.merchants.values())
    return host, ledger, identities


def sign_in_all(host: AcquirerHost, identities: list, stan: str = "000001",
                took: list[float] | None = None) -> list[tuple[str, str, str, bytes]]:
    """Sign every terminal in through `handle`; (tid, mid, batch, MAC key) for each. With `took`, the
    wall seconds of each sign-in's `handle` are appended to it."""
    dialect = get_dialect()
    out = []
    for ident in identities:
        request = catalogue.sign_in(tid=ident.tid, mid=ident.mid, stan=stan, batch="000001")
        frame = Frame(TPDU, HEADER, dialect.encode(request))
        started = time.perf_counter()
        reply_frame = host.handle(frame)
        if took is not None:
            took.append(time.perf_counter() - started)
        assert reply_frame is not None
        reply = dialect.decode(reply_frame.payload)
        assert reply[39] == "00", f"sign-in of {ident.tid} answered {reply[39]}"
        keys = security.unwrap_working_keys(bytes.fromhex(ident.tmk), reply[62])
        out.append((ident.tid, ident.mid, Field60.parse(str(reply[60])).batch, keys.mac_key))
    return out


def sale_frames(terminals: list[tuple[str, str, str, bytes]], sales: int) -> list[Frame]:
    """Signed 0200 sale frames, round robin across terminals (STANs from 000002 on)."""
    dialect = get_dialect()
    frames = []
    for n in range(sales):
        for tid, mid, batch, mac_key in terminals:
            msg = catalogue.sale(tid=tid, mid=mid, stan=f"{n + 2:06d}", batch=batch, card=CARD,
                                 amount_fen=1000 + n)
            frames.append(Frame(TPDU, HEADER, security.sign(dialect, msg, mac_key)))
    return frames


def time_host(host: AcquirerHost, frames: list[Frame]) -> tuple[list[float], float, list[Frame | None]]:
    """(wall seconds of each request, CPU seconds in all, replies) for handling every frame once."""
    handle, clock = host.handle, time.perf_counter
    replies: list[Frame | None] = []
    took: list[float] = []
    cpu = time.process_time()
    for frame in frames:
        started = clock()
        replies.append(handle(frame))
        took.append(clock() - started)
    return took, time.process_time() - cpu, replies


def time_codec(frames: list[Frame], repeats: int = 3) -> float:
    """Best-of-`repeats` wall seconds for a bare decode + encode of every frame's payload."""
    dialect = get_dialect()
    decode, encode = dialect.decode, dialect.encode
    payloads = [f.payload for f in frames]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for payload in payloads:
            encode(decode(payload))
        best = min(best, time.perf_counter() - started)
    return best


def handle_only(terminals: int, sales: int, count: int) -> None:
    """The setup, then `handle` on the first `count` sale frames and nothing else (for callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        host, ledger, identities = build_host(str(Path(tmp) / "h.sqlite"), terminals)
        frames = sale_frames(sign_in_all(host, identities), sales)
        for frame in frames[:count]:
            host.handle(frame)
        ledger.close()


def instructions(terminals: int, sales: int) -> int:
    """Instructions per `handle` of a sale: callgrind totals of two runs that differ only in how many
    of the same frames they handle, divided by that difference."""
    total = terminals * sales
    counts = (total // 5, total)
    collected = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                                  sys.executable, __file__, "--terminals", str(terminals), "--sales", str(sales),
                                  "--only", str(count)], capture_output=True, text=True, check=True)
            found = re.search(r"Collected : (\d+)", run.stderr)
            assert found is not None, run.stderr[-2000:]
            collected.append(int(found.group(1)))
    return (collected[1] - collected[0]) // (counts[1] - counts[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=50)
    parser.add_argument("--sales", type=int, default=100, help="sales per terminal")
    parser.add_argument("--rounds", type=int, default=5, help="slices of the run; the best one is reported")
    parser.add_argument("--memory", action="store_true", help="an in-memory ledger instead of a file")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="run the host pass under cProfile and print the top N functions (by own time)")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per sale under valgrind (defaults: 20 terminals x 25 sales)")
    parser.add_argument("--only", type=int, metavar="K", help=argparse.SUPPRESS)  # one callgrind run
    args = parser.parse_args()
    if args.only is not None:
        handle_only(args.terminals, args.sales, args.only)
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind on the PATH")
        terminals = args.terminals if "--terminals" in sys.argv else 20
        sales = args.sales if "--sales" in sys.argv else 25
        print(f"host_instructions_per_sale={instructions(terminals, sales)} "
              f"({terminals} terminals x {sales} sales, file ledger)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        host, ledger, identities = build_host(":memory:" if args.memory else str(Path(tmp) / "h.sqlite"),
                                              args.terminals)
        try:
            sign_in_all(host, identities)  # the first sign-in creates each session
            sign_ins: list[float] = []
            terminals = sign_in_all(host, identities, "000002", sign_ins)  # the usual one: it exists
            warmup = sale_frames(terminals, 2)
            frames = sale_frames(terminals, args.sales + 2)[len(warmup):]
            time_host(host, warmup)  # caches, statements, the first WAL pages
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            took, cpu, replies = time_host(host, frames)
            if profiler is not None:
                profiler.disable()
            dialect = get_dialect()
            codes = {dialect.decode(r.payload)[39] if r is not None else None for r in replies}
            assert codes <= {"00"}, f"not every sale was approved: {codes}"
        finally:
            ledger.close()
    codec = time_codec(frames)
    count = len(frames)
    # a loaded machine steals whole stretches: the best of `rounds` consecutive slices is the
    # host's own cost (each slice still pays its share of WAL checkpoints), the mean is what it was
    size = max(1, count // args.rounds)
    slices = [took[i:i + size] for i in range(0, count, size) if len(took[i:i + size]) == size]
    host_us = min(sum(s) / len(s) for s in slices) * 1e6
    mean_us, p50_us = sum(took) / count * 1e6, sorted(took)[count // 2] * 1e6
    cpu_us, codec_us = cpu / count * 1e6, codec / count * 1e6
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    print(f"{args.terminals} terminals x {args.sales} sales ({count} requests), "
          f"{'memory' if args.memory else 'file'} ledger")
    print(f"host_us_per_sign_in={sorted(sign_ins)[len(sign_ins) // 2] * 1e6:.1f} (median of {len(sign_ins)})")
    print(f"host_mean_us={mean_us:.1f} host_p50_us={p50_us:.1f} host_cpu_us={cpu_us:.1f} "
          f"(best of {len(slices)} slices below)")
    print(f"host_us_per_sale={host_us:.1f} codec_us={codec_us:.1f} ratio={codec_us / host_us:.3f}")


if __name__ == "__main__":
    main()
