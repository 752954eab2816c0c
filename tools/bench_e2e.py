"""End-to-end sale throughput against the reference host, beside the ceiling of bare asyncio.

    python tools/bench_e2e.py [--terminals 50] [--seconds 5]
    python tools/bench_e2e.py --instructions      (needs valgrind; about 90 s)

Three runs over loopback TCP, each with the server in its own process and the clients in this one:
1. possim: signed-in terminals run sales in a closed loop against `possim host` (MAC, journal, ledger).
2. ceiling: a bare asyncio server that answers each length-prefixed frame with a frame of the sale
   reply's size, and bare clients sending frames of the sale request's size - no decoding, no work.
3. host floor: the same bare clients sending signed sale frames to `tools/host_floor.py`, the least a
   durable host must do per sale (decode, MAC check, one ledger commit, signed reply). Its
   `floor_ratio` bounds what `ratio` can reach against any Python host with a durable SQLite ledger
   on this machine, however cheap the terminals become.
The last line is `e2e_tps=X ceiling_tps=Y ratio=Z` (the target in issue 9 is ratio >= 0.25); the line
before it is `floor_tps=X floor_ratio=Y`.

Seconds move with the machine's load; `--instructions` does not: it counts what the terminal side
costs per sale under valgrind's callgrind - 20 signed-in terminals making 5, then 25 sales each
against a `possim host` process (a fresh one per run, not counted), the difference over the extra
sales - and prints `terminal_instructions_per_sale=N`. The kernel's share (the socket calls) is not
in it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from host_floor import sale_bodies  # noqa: E402

from terminal.load import generate_identities, write_identities  # noqa: E402

BARE_SERVER = r"""
import asyncio, sys
size = int(sys.argv[1])
reply = size.to_bytes(2, "big") + b"\x60" * size
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readexactly(2)
            await reader.readexactly(int.from_bytes(head, "big"))
            writer.write(reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; it and the first line it prints (its URL or port)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@contextmanager
def server(cmd: list[str]) -> Iterator[str]:
    """A server process for the length of a run: the first line it prints, then it is stopped."""
    proc, first_line = start(cmd)
    try:
        yield first_line
    finally:
        proc.terminate()
        proc.wait(10)


async def possim_run(url: str, identities: list, seconds: float) -> tuple[int, int, int]:
    from terminal.load import LoadConfig, LoadRunner

    config = LoadConfig(url=url, identities=identities, duration=seconds, concurrency=len(identities),
                        mix={"sale": 1}, reply_timeout=30.0)
    runner = LoadRunner(config)
    report = await runner.run()
    return report.transactions, report.approved, round(report.tps)


async def bare_clients(port: int, bodies: list[bytes], seconds: float) -> float:
    """Frames per second of one bare client per body, each sending its body and awaiting any reply."""
    count = 0

    async def client(body: bytes) -> None:
        nonlocal count
        request = len(body).to_bytes(2, "big") + body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            writer.write(request)
            await writer.drain()
            head = await reader.readexactly(2)
            await reader.readexactly(int.from_bytes(head, "big"))
            count += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(body) for body in bodies))
    return count / (time.perf_counter() - started)


async def fixed_sales(url: str, identities: list, sales: int) -> None:
    """Every terminal signs in and makes exactly `sales` sales (a callgrind run: the same work each time)."""
    from terminal.load import LoadConfig, LoadRunner

    runner = LoadRunner(LoadConfig(url=url, identities=identities, mix={"sale": 1}, reply_timeout=60.0))
    runner.terminals = [runner._make(identity) for identity in identities]
    await runner._sign_in_all()

    async def sell(term) -> None:
        for k in range(sales):
            result = await term.sale(1000 + k)
            if not result.ok:
                raise SystemExit(f"sale {k} of {term.tid} failed: {result.message}")

    await asyncio.gather(*(sell(term) for term in runner.terminals))


def instructions(terminals: int) -> int:
    counts = (5, 25)
    collected = []
    identities = generate_identities(terminals)
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "ids.csv"
        write_identities(identities, ids)
        for sales in counts:
            with server([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
                         str(Path(tmp) / f"h{sales}.sqlite"), "--terminals-csv", str(ids)]) as url:
                run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                      sys.executable, __file__, "--only", url, str(terminals), str(sales)],
                                     capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            found = re.search(r"Collected : (\d+)", run.stderr)
            if run.returncode != 0 or found is None:
                raise SystemExit(f"callgrind run failed: {run.stderr[-2000:]}")
            collected.append(int(found.group(1)))
    return (collected[1] - collected[0]) // (terminals * (counts[1] - counts[0]))


def sale_sizes() -> tuple[int, int]:
    """Bytes after the length prefix of a typical sale request and its reply, from the real codec."""
    from protocol import catalogue
    from protocol.catalogue import CardData
    from protocol.dialect import get_dialect

    d = get_dialect()
    card = CardData(pan="6222020000000015", expiry="3012", track2="6222020000000015D30122010000000000")
    request = catalogue.sale(tid="80000001", mid="898100000000001", stan="000002", batch="000001", card=card,
                             amount_fen=1234)
    request[64] = bytes(8)
    reply = catalogue.reply(request, "00", f37="000000000001", f38="123456", f12="120000", f13="1122", f64=bytes(8))
    return 11 + len(d.encode(request)), 11 + len(d.encode(reply))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--instructions", action="store_true",
                        help="count the terminal side's instructions per sale under valgrind (20 terminals)")
    parser.add_argument("--only", nargs=3, metavar=("URL", "TERMINALS", "SALES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        url, terminals, sales = args.only
        asyncio.run(fixed_sales(url, generate_identities(int(terminals)), int(sales)))
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind on the PATH")
        print(f"terminal_instructions_per_sale={instructions(20)} (20 terminals, sales over loopback TCP)")
        return
    identities = generate_identities(args.terminals)
    request_size, reply_size = sale_sizes()
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "ids.csv"
        write_identities(identities, ids)
        with server([sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
                     str(Path(tmp) / "h.sqlite"), "--terminals-csv", str(ids)]) as url:
            transactions, approved, e2e = asyncio.run(possim_run(url, identities, args.seconds))
        with server([sys.executable, "-c", BARE_SERVER, str(reply_size)]) as port:
            dummy = b"\x60" * request_size
            ceiling = asyncio.run(bare_clients(int(port), [dummy] * args.terminals, args.seconds))
        with server([sys.executable, str(ROOT / "tools" / "host_floor.py"), "--serve",
                     str(Path(tmp) / "floor.sqlite")]) as port:
            floor = asyncio.run(bare_clients(int(port), sale_bodies(args.terminals), args.seconds))
    print(f"{args.terminals} terminals, {args.seconds:g}s each run; sale frames {request_size} B up, "
          f"{reply_size} B down")
    print(f"  possim sales:        {e2e:>8,.0f}/s ({approved} approved of {transactions})")
    print(f"  bare asyncio frames: {ceiling:>8,.0f}/s")
    print(f"  host floor, bare clients: {floor:>8,.0f}/s (tools/host_floor.py: decode, MAC, one ledger "
          f"commit, reply)")
    print(f"floor_tps={floor:.0f} floor_ratio={floor / ceiling:.2f}")
    print(f"e2e_tps={e2e:.0f} ceiling_tps={ceiling:.0f} ratio={e2e / ceiling:.2f}")

if __name__ == "__main__":
    main()
