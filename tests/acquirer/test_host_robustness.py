"""The host under bad input and bad luck: fuzzed payloads, garbage floods, stalled peers, SIGKILL.

- `AcquirerHost.handle` never raises, whatever the payload (hypothesis: random bytes and mutations
  of real requests); it answers or it drops.
- Many connections throwing garbage at once, and a peer that stalls mid-frame, do not stop a good
  terminal being served over real loopback TCP.
- `possim host` killed with SIGKILL keeps every committed transaction and every session (the
  terminal's working keys still verify after the restart).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acquirer.config import HostConfig
from acquirer.host import AcquirerHost, HostServer
from acquirer.ledger import Ledger
from protocol import catalogue, security
from protocol.codes import RESPONSE_CODES
from protocol.framing import Frame, Header, Tpdu
from terminal.links import open_link

from .test_host_e2e import CARD, MID, TID, TMK, D, HandTerminal

# ------------------------------------------------------------------------------------------------
# the sans-I/O core never raises
# ------------------------------------------------------------------------------------------------


def _core() -> tuple[AcquirerHost, bytes]:
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    host = AcquirerHost(config, Ledger(":memory:"))
    sign_in = host.handle(Frame(Tpdu(dest=6), Header(), D.encode(
        catalogue.sign_in(tid=TID, mid=MID, stan="000001", batch="000001"))))
    keys = security.unwrap_working_keys(bytes.fromhex(TMK), D.decode(sign_in.payload)[62])
    sale = catalogue.sale(tid=TID, mid=MID, stan="000002", batch="000001", card=CARD, amount_fen=100)
    security.sign(D, sale, keys.mac_key)
    return host, D.encode(sale)


CORE, SALE = _core()
ANSWERS = set(RESPONSE_CODES)  # every answer is a code of cup-pos.md (and never an exception)


def _check(payload: bytes) -> None:
    reply = CORE.handle(Frame(Tpdu(dest=6), Header(), payload))
    if reply is not None:
        message = D.decode(reply.payload)
        assert message.response_code in ANSWERS, message
        if message.response_code == "30":  # addressed to the registered terminal, never to bytes of the request
            assert (message.get(41), message.get(42)) == (TID, MID), message


def test_a_misframed_sale_is_never_answered_with_its_own_card_bytes():
    """Every single flipped bit of the bitmaps: a format-error reply used to echo "fields" 41/42 decoded
    from wherever the misframing put them - the PAN or track 2 among them - onto the wire and into the log."""
    pan_bcd = bytes.fromhex(CARD.pan)
    for bit in range(16 * 8):
        data = bytearray(SALE)
        data[2 + bit // 8] ^= 0x80 >> (bit % 8)  # after the 2-byte BCD MTI
        reply = CORE.handle(Frame(Tpdu(dest=6), Header(), bytes(data)))
        if reply is not None:
            assert pan_bcd not in reply.payload, bit
            _check(bytes(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_payloads_are_answered_or_dropped(payload):
    _check(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SALE) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, len(SALE)))
def test_mutated_sales_are_answered_or_dropped(flips, cut):
    data = bytearray(SALE)
    for offset, value in flips:
        data[offset] = value
    _check(bytes(data[:cut] if cut else data))


# ------------------------------------------------------------------------------------------------
# floods and stalls over real TCP
# ------------------------------------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path):
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    async with HostServer(config, str(tmp_path / "host.sqlite")) as srv:
        srv.url = await srv.serve("tcp://127.0.0.1:0")
        assert srv.address == srv.url
        yield srv


async def test_garbage_from_many_connections_while_a_good_terminal_is_served(server, caplog):
    caplog.set_level(logging.WARNING, logger="possim.host")
    host, port = server.url[6:].split(":")
    rng = random.Random(7)
    stop = asyncio.Event()
    attempts = 0

    async def vandal() -> None:
        nonlocal attempts
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.01)
                continue
            kind = rng.randrange(3)
            if kind == 0:
                junk = rng.randbytes(rng.randrange(1, 200))  # bytes that are not a frame
            elif kind == 1:
                junk = b"\xff\xff" + rng.randbytes(64)  # a length far over 4 KiB
            else:
                body = rng.randbytes(rng.randrange(20, 80))  # a well-framed payload of noise
                junk = len(body).to_bytes(2, "big") + body
            attempts += 1
            try:
                writer.write(junk)
                await writer.drain()
                await asyncio.wait_for(reader.read(4096), 2)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

    vandals = [asyncio.create_task(vandal()) for _ in range(12)]
    try:
        link = await open_link(server.url)
        term = HandTerminal(link)
        assert (await term.sign_in())[39] == "00"
        results = [(await term.financial("sale", 100 + i))[39] for i in range(25)]
        await link.close()
    finally:
        stop.set()
        await asyncio.gather(*vandals, return_exceptions=True)
    assert results == ["00"] * 25 and attempts > 12
    assert server.admin.totals(TID, "000001") == (sum(100 + i for i in range(25)), 25, 0, 0)
    logged = [json.loads(r.message) for r in caplog.records if r.message.startswith("{")]
    assert any(line.get("event") in ("dropped", "malformed") for line in logged)


async def test_a_peer_stalled_mid_frame_does_not_hold_up_others(server):
    host, port = server.url[6:].split(":")
    stalled = []
    for _ in range(5):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"\x00\x80\x60\x00")  # promises 128 bytes, sends 2, then waits forever
        await writer.drain()
        stalled.append(writer)
    link = await open_link(server.url)
    term = HandTerminal(link)
    assert (await term.sign_in())[39] == "00"
    assert (await term.financial("sale", 100))[39] == "00"
    await link.close()
    for writer in stalled:
        writer.close()


# ------------------------------------------------------------------------------------------------
# SIGKILL
# ------------------------------------------------------------------------------------------------


async def _start(db: str, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db", db,
        "--terminal", f"{TID}:{MID}:{TMK}", *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, line.decode().strip()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_a_killed_host_keeps_every_committed_transaction_and_session(tmp_path):
    db = str(tmp_path / "killed.sqlite")
    proc, url = await _start(db)
    try:
        link = await open_link(url)
        term = HandTerminal(link)
        assert (await term.sign_in())[39] == "00"
        replies = [await term.financial("sale", amount) for amount in (1000, 2000, 3000)]
        assert [r[39] for r in replies] == ["00"] * 3  # each reply was sent after its commit
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 15) == -signal.SIGKILL
        await link.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    ledger = Ledger(db)
    assert ledger.totals(TID, "000001") == (6000, 3, 0, 0)
    assert [r["rrn"] for r in ledger.batch_txns(TID, "000001")] == [r[37] for r in replies]
    ledger.close()
    proc, url = await _start(db)  # the same file, a new process
    try:
        link = await open_link(url)
        term.link = link  # the terminal keeps its working keys: the session outlived the host
        assert (await term.financial("sale", 4000))[39] == "00"
        dup = catalogue.sale(tid=TID, mid=MID, stan=replies[0][11], batch="000001", card=CARD, amount_fen=1000)
        assert (await term.send(dup))[39] == "94"  # STANs seen before the kill are still duplicates
        await link.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_host_process_writes_one_json_line_per_message(tmp_path):
    log = tmp_path / "host.jsonl"
    proc, url = await _start(str(tmp_path / "h.sqlite"), "--log", str(log))
    try:
        link = await open_link(url)
        term = HandTerminal(link)
        await term.sign_in()
        await term.financial("sale", 100)
        await link.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [(line["mti"], line["rc"]) for line in lines] == [("0800", "00"), ("0200", "00")]
    assert all({"tid", "stan", "latency_ms"} <= set(line) for line in lines)
    assert lines[1]["pan"] == "622202******0015" and CARD.pan not in log.read_text("utf-8")
