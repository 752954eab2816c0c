"""The least a durable cup-pos host must do per sale, as a server: the floor under `possim host`.

    python tools/host_floor.py --serve DB      (prints its port, then answers sale frames)
    python tools/host_floor.py --time [DB]     (its cost per sale in this process, no sockets;
                                                 without DB an in-memory SQLite ledger)

`tools/bench_e2e.py` runs this server beside the bare one and drives both with the same bare
clients, so its `floor_ratio` is the throughput any Python host that keeps a durable ledger could
reach against that run's ceiling, whatever its terminals cost. Per frame it does only what no host can
skip: split the frame, decode the message, check its MAC, commit one ledger transaction (an RRN and the
transaction's row, in the same WAL file with the same durability `possim host` uses), build the reply,
MAC it and encode it. It skips everything else the reference host does (terminal registry, session and
duplicate checks, risk rules, funds rows, daily counts, events), so it is a lower bound on a host's work.

The floor numbers the ledger rows itself (its own STAN sequence per terminal) so that a client can send
the same few signed frames again and again; the row and its indexes cost the same.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquirer.ledger import Ledger  # noqa: E402
from protocol import catalogue, security  # noqa: E402
from protocol.catalogue import CardData  # noqa: E402
from protocol.dialect import get_dialect  # noqa: E402
from protocol.framing import Frame, Header, Tpdu, split_body  # noqa: E402

MAC_KEY = bytes(range(1, 17))  # both ends know it: the floor has no sign-in
CARD = CardData(pan="6222020000000015", expiry="3012", track2="6222020000000015D30122010000000000")


class FloorHost:
    """Answers a signed 0200 sale body with a signed 0210 body, committing one ledger row per sale."""

    def __init__(self, db_path: str) -> None:
        self.ledger = Ledger(db_path)
        self.dialect = get_dialect()
        self._stan = itertools.count(1)

    def handle(self, body: bytes) -> bytes:
        frame = split_body(body)
        request = self.dialect.decode(frame.payload)
        if not security.verify(self.dialect, request, MAC_KEY, encoded=frame.payload):
            raise ValueError("MAC check failed on a floor request")
        ledger = self.ledger
        with ledger.tx() as db:
            rrn = ledger.take_rrn(db)
            ledger.insert_txn(db, tid=request[41], mid=request[42], batch="000001", stan=f"{next(self._stan):06d}",
                              mti=request.mti, kind="sale", amount_fen=int(str(request[4])), pan=request[2],
                              rrn=rrn, rc="00", status="approved")
        reply = catalogue.reply(request, "00", f37=rrn, f38="000001", f12="120000", f13="1201", f64=bytes(8))
        assert frame.tpdu is not None
        return Frame(frame.tpdu.swapped(), frame.header, security.sign(self.dialect, reply, MAC_KEY)).body()


def sale_bodies(count: int) -> list[bytes]:
    """`count` signed sale frame bodies (distinct terminals and STANs) for the floor's clients."""
    dialect = get_dialect()
    bodies = []
    for n in range(count):
        msg = catalogue.sale(tid=f"{80000001 + n}", mid="898100000000001", stan=f"{n + 2:06d}", batch="000001",
                             card=CARD, amount_fen=1000 + n)
        bodies.append(Frame(Tpdu(dest=6), Header.for_firmware("3.0.8"), security.sign(dialect, msg, MAC_KEY)).body())
    return bodies


async def serve(db_path: str) -> None:
    """The bare server's loop (`bench_e2e.BARE_SERVER`) with the floor's work between read and write."""
    host = FloorHost(db_path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                reply = host.handle(await reader.readexactly(int.from_bytes(head, "big")))
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def time_floor(db_path: str, sales: int = 5000) -> tuple[float, float]:
    """(wall, CPU) microseconds per sale of `FloorHost.handle`, after 300 sales to warm it."""
    host = FloorHost(db_path)
    bodies = sale_bodies(50)
    for n in range(300):
        host.handle(bodies[n % 50])
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(sales):
        host.handle(bodies[n % 50])
    return (time.perf_counter() - wall) / sales * 1e6, (time.process_time() - cpu) / sales * 1e6


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2]))
    elif 2 <= len(sys.argv) <= 3 and sys.argv[1] == "--time":
        wall_us, cpu_us = time_floor(sys.argv[2] if len(sys.argv) == 3 else ":memory:")
        print(f"floor_wall_us={wall_us:.0f} floor_cpu_us={cpu_us:.0f} (5,000 sales, "
              f"{'file' if len(sys.argv) == 3 else 'in-memory'} ledger)")
    else:
        raise SystemExit(__doc__)
