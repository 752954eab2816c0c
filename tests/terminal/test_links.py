"""Links over real loopback TCP and in memory: frames both ways, trace, EOF, garbage, refused, URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from protocol.errors import FramingError
from protocol.framing import Frame, Header, LengthFormat, Tpdu, encode_frame
from terminal.links import (
    FrameLink,
    LinkClosed,
    LinkUnavailable,
    connect_tcp,
    memory_pair,
    open_link,
    parse_link_url,
    register_scheme,
    serve_link,
    supported_schemes,
)
from terminal.links import url as url_module

REQUEST = Frame(Tpdu(dest=6), Header.for_firmware("3.0.8"), b"\x08\x20" + bytes(8))
REPLY = Frame(Tpdu(src=6), Header.for_firmware("3.0.8", requirement=3), b"\x08\x30" + bytes(8))
WAIT = 5  # seconds: the bound on every wait in these tests


def swapped(frame: Frame) -> Frame:
    return Frame(frame.tpdu.swapped() if frame.tpdu else None, frame.header, frame.payload)


async def echo(link: FrameLink) -> None:
    while True:
        frame = await link.receive()
        await link.send(swapped(frame))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """serve(handler, **framing) -> the tcp:// URL of a server on 127.0.0.1, an ephemeral port."""
    servers = []

    async def start(handler: Callable[[FrameLink], Awaitable[None]], **framing: object) -> str:
        server = await serve_link("tcp://127.0.0.1:0", handler, **framing)
        servers.append(server)
        return f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """raw_server(callback) -> port of a plain asyncio server (a peer that is not a link)."""
    servers = []

    async def start(callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> int:
        server = await asyncio.start_server(callback, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


# -- TCP -------------------------------------------------------------------------------------------

async def test_tcp_frames_round_trip_and_the_trace_sees_the_bytes(serve):
    url = await serve(echo)
    link = await open_link(url)
    seen: list[tuple[str, bytes]] = []
    link.trace = lambda direction, data: seen.append((direction, data))
    try:
        assert link.peer == url and not link.closed
        for _ in range(3):
            await link.send(REQUEST)
            assert await asyncio.wait_for(link.receive(), WAIT) == swapped(REQUEST)
        assert seen == [("tx", encode_frame(REQUEST)), ("rx", encode_frame(swapped(REQUEST)))] * 3
    finally:
        await link.close()
    assert link.closed


async def test_the_server_can_speak_first_and_sees_its_own_trace(serve):
    server_seen: list[tuple[str, bytes]] = []
    done = asyncio.Event()

    async def host(link: FrameLink) -> None:
        link.trace = lambda direction, data: server_seen.append((direction, data))
        assert link.peer.startswith("tcp://127.0.0.1:")
        await link.send(REPLY)
        assert await link.receive() == REQUEST
        done.set()

    link = await open_link(await serve(host))
    try:
        assert await asyncio.wait_for(link.receive(), WAIT) == REPLY
        await link.send(REQUEST)
        await asyncio.wait_for(done.wait(), WAIT)
        assert server_seen == [("tx", encode_frame(REPLY)), ("rx", encode_frame(REQUEST))]
        # the handler returned: the server closed the link
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(link.receive(), WAIT)
    finally:
        await link.close()


async def test_frames_arriving_together_or_in_pieces_are_all_received(serve):
    url = await serve(echo)
    link = await open_link(url)
    try:
        await link.send_bytes(encode_frame(REQUEST) * 3)  # three frames in one write
        for _ in range(3):
            assert await asyncio.wait_for(link.receive(), WAIT) == swapped(REQUEST)
        raw = encode_frame(REQUEST)
        for i in range(len(raw)):  # one frame a byte at a time
            await link.send_bytes(raw[i:i + 1])
        assert await asyncio.wait_for(link.receive(), WAIT) == swapped(REQUEST)
    finally:
        await link.close()


async def test_framing_options_apply_to_both_ends(serve):
    url = await serve(echo, length=LengthFormat.BCD2, has_header=False)
    link = await open_link(url, length=LengthFormat.BCD2, has_header=False)
    frame = Frame(Tpdu(dest=6), None, REQUEST.payload)
    seen: list[bytes] = []
    link.trace = lambda direction, data: seen.append(data)
    try:
        await link.send(frame)
        assert await asyncio.wait_for(link.receive(), WAIT) == swapped(frame)
        assert seen[0][:2] == b"\x00\x15"  # 15 bytes, in BCD
    finally:
        await link.close()


async def test_eof_is_link_closed(raw_server):
    async def closer(reader, writer):
        writer.close()

    link = await open_link(f"tcp://127.0.0.1:{await raw_server(closer)}")
    with pytest.raises(LinkClosed, match="closed the link"):
        await asyncio.wait_for(link.receive(), WAIT)
    assert link.closed
    with pytest.raises(LinkClosed):
        await link.send(REQUEST)


async def test_eof_in_the_middle_of_a_frame_says_so(raw_server):
    async def half(reader, writer):
        writer.write(encode_frame(REQUEST)[:10])
        await writer.drain()
        writer.close()

    link = await open_link(f"tcp://127.0.0.1:{await raw_server(half)}")
    with pytest.raises(LinkClosed, match="10 bytes into a frame"):
        await asyncio.wait_for(link.receive(), WAIT)


async def test_garbage_from_the_peer_is_a_framing_error_and_the_connection_closes(raw_server):
    peer_saw_eof = asyncio.Event()

    async def garbage(reader, writer):
        writer.write(encode_frame(REPLY) + b"\x00\x10\x99" + bytes(15))
        await writer.drain()
        await reader.read()  # until the link drops the connection
        peer_saw_eof.set()

    link = await open_link(f"tcp://127.0.0.1:{await raw_server(garbage)}")
    assert await asyncio.wait_for(link.receive(), WAIT) == REPLY  # the good frame before the garbage
    with pytest.raises(FramingError, match="TPDU id 99") as err:
        await asyncio.wait_for(link.receive(), WAIT)
    assert err.value.offset == len(encode_frame(REPLY)) + 2
    assert link.closed
    await asyncio.wait_for(peer_saw_eof.wait(), WAIT)
    with pytest.raises(LinkClosed):
        await link.receive()


async def test_an_oversize_frame_is_refused_on_both_sides(serve, raw_server):
    link = await open_link(await serve(echo))
    try:
        with pytest.raises(FramingError, match="exceeds the maximum 4096"):
            await link.send(Frame(Tpdu(), Header(), bytes(5000)))
        assert not link.closed  # nothing was sent: the link is still good
    finally:
        await link.close()

    async def oversize(reader, writer):
        writer.write(b"\x10\x01")
        await writer.drain()
        await reader.read()

    link = await open_link(f"tcp://127.0.0.1:{await raw_server(oversize)}")
    with pytest.raises(FramingError, match="4097 exceeds"):
        await asyncio.wait_for(link.receive(), WAIT)
    assert link.closed


async def test_closing_wakes_a_pending_receive(serve):
    async def silent(link):
        with contextlib.suppress(LinkClosed):
            await link.receive()

    link = await open_link(await serve(silent))
    pending = asyncio.create_task(link.receive())
    await asyncio.sleep(0)
    await link.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(pending, WAIT)


async def test_connecting_to_a_closed_port_is_link_unavailable():
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LinkUnavailable, match=rf"tcp://127.0.0.1:{port}: Connection refused"):
        await asyncio.wait_for(open_link(f"tcp://127.0.0.1:{port}"), WAIT)


async def test_a_connect_timeout_is_link_unavailable(serve):
    url = parse_link_url(await serve(echo))
    with pytest.raises(LinkUnavailable, match="no answer within 0 s"):
        await connect_tcp(url.host, url.port, timeout=0)


async def test_serving_on_a_busy_port_is_link_unavailable(serve):
    url = await serve(echo)
    with pytest.raises(LinkUnavailable, match="cannot listen on"):
        await serve_link(url, echo)


async def test_handler_errors_are_logged_and_the_server_keeps_serving(serve, caplog):
    calls = 0

    async def flaky(link):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        if calls == 2:
            await link.receive()  # the client sends garbage
            return
        await echo(link)

    url = await serve(flaky)
    caplog.set_level(logging.DEBUG, logger="possim.links")
    first = await open_link(url)
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(first.receive(), WAIT)  # the server closed it after the handler failed
    second = await open_link(url)
    await second.send_bytes(b"\x00\x00")
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(second.receive(), WAIT)
    third = await open_link(url)
    try:
        await third.send(REQUEST)
        assert await asyncio.wait_for(third.receive(), WAIT) == swapped(REQUEST)
    finally:
        await third.close()
    failures = [r for r in caplog.records if r.name == "possim.links"]
    assert any(r.levelno == logging.ERROR and r.exc_info and "handler bug" in str(r.exc_info[1]) for r in failures)
    assert any(r.levelno == logging.WARNING and "not a frame" in r.getMessage() for r in failures)


# -- in memory -------------------------------------------------------------------------------------

async def test_memory_pair_carries_frames_both_ways_through_the_real_framer():
    a, b = memory_pair()
    seen: list[tuple[str, bytes]] = []
    a.trace = lambda direction, data: seen.append((direction, data))
    assert (a.peer, b.peer) == ("memory://b", "memory://a")
    await a.send(REQUEST)
    assert await asyncio.wait_for(b.receive(), WAIT) == REQUEST
    await b.send(REPLY)
    assert await asyncio.wait_for(a.receive(), WAIT) == REPLY
    assert seen == [("tx", encode_frame(REQUEST)), ("rx", encode_frame(REPLY))]
    raw = encode_frame(REQUEST)
    for i in range(0, len(raw), 3):  # slices, as a slicer toxic writes them
        await a.send_bytes(raw[i:i + 3])
    assert await asyncio.wait_for(b.receive(), WAIT) == REQUEST


async def test_memory_pair_eof_close_and_garbage():
    a, b = memory_pair()
    await a.send(REQUEST)
    await a.close()
    assert await asyncio.wait_for(b.receive(), WAIT) == REQUEST  # sent before the close: delivered
    with pytest.raises(LinkClosed, match="memory://a closed"):
        await asyncio.wait_for(b.receive(), WAIT)
    with pytest.raises(LinkClosed):
        await a.send(REQUEST)
    with pytest.raises(LinkClosed):
        await b.send(REQUEST)

    c, _d = memory_pair()
    pending = asyncio.create_task(c.receive())
    await asyncio.sleep(0)
    await c.close()  # this end closing wakes its own receive
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(pending, WAIT)

    e, f = memory_pair()
    await e.send_bytes(b"\x00\x00")
    with pytest.raises(FramingError, match="zero-length"):
        await asyncio.wait_for(f.receive(), WAIT)
    assert f.closed
    with pytest.raises(FramingError, match="exceeds"):
        await e.send(Frame(None, None, bytes(5000)))


async def test_memory_pair_garbage_after_frames_names_its_stream_offset():
    """Between frames an idle end lets go of its decoder; the stream offset still counts every byte."""
    a, b = memory_pair()
    for frame in (REQUEST, REPLY):
        await a.send(frame)
        assert await asyncio.wait_for(b.receive(), WAIT) == frame
    raw = encode_frame(REQUEST)
    await a.send_bytes(raw[:7])  # a frame split over two writes, idle in between
    await asyncio.sleep(0)
    await a.send_bytes(raw[7:])
    assert await asyncio.wait_for(b.receive(), WAIT) == REQUEST
    await a.send_bytes(b"\x00\x10\x99" + bytes(15))
    with pytest.raises(FramingError, match="TPDU id 99") as err:
        await asyncio.wait_for(b.receive(), WAIT)
    assert err.value.offset == len(encode_frame(REQUEST)) * 2 + len(encode_frame(REPLY)) + 2
    assert b.closed


async def test_memory_pair_a_cancelled_receive_loses_nothing_and_one_receive_at_a_time():
    a, b = memory_pair()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.receive(), 0.01)  # the waiting receive is cancelled
    await a.send(REQUEST)
    await a.send(REPLY)
    assert await asyncio.wait_for(b.receive(), WAIT) == REQUEST
    assert await asyncio.wait_for(b.receive(), WAIT) == REPLY
    waiting = asyncio.create_task(b.receive())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another receive"):  # like a stream: one reader
        await b.receive()
    await a.send(REQUEST)
    assert await asyncio.wait_for(waiting, WAIT) == REQUEST


async def test_memory_pair_framing_options():
    a, b = memory_pair(length=LengthFormat.ASCII4, has_tpdu=False, has_header=False)
    frame = Frame(None, None, REQUEST.payload)
    seen: list[bytes] = []
    a.trace = lambda direction, data: seen.append(data)
    await a.send(frame)
    assert await asyncio.wait_for(b.receive(), WAIT) == frame
    assert seen == [b"0010" + REQUEST.payload]


# -- URLs ------------------------------------------------------------------------------------------

def test_url_parsing():
    url = parse_link_url("tcp://127.0.0.1:5800")
    assert (url.scheme, url.host, url.port, str(url)) == ("tcp", "127.0.0.1", 5800, "tcp://127.0.0.1:5800")
    url = parse_link_url("TCP://[::1]:5800")
    assert (url.scheme, url.host, url.port) == ("tcp", "::1", 5800)
    url = parse_link_url("serial:///dev/ttyUSB0?baud=9600&parity=N")
    assert (url.scheme, url.host, url.path, url.params) == ("serial", "", "/dev/ttyUSB0", {"baud": "9600",
                                                                                            "parity": "N"})
    assert parse_link_url("socket://localhost:7000").port == 7000
    assert parse_link_url("loop://").scheme == "loop"


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:5800", "no scheme"),
    ("localhost:5800", "no scheme"),
    ("tcp://127.0.0.1", "host and port"),
    ("tcp://:5800", "host and port"),
    ("tcp://127.0.0.1:99999", "invalid port"),
    ("tcp://127.0.0.1:http", "invalid port"),
])
def test_bad_urls_are_value_errors(url, message):
    with pytest.raises(ValueError, match=message):
        parse_link_url(url)


async def test_unknown_schemes_name_the_supported_ones():
    assert {"tcp", "serial", "loop", "socket", "rfc2217", "spy"} <= set(supported_schemes())
    with pytest.raises(ValueError, match=r"unsupported link scheme 'gopher'.*supported: .*tcp"):
        await open_link("gopher://x:1")
    with pytest.raises(ValueError, match=r"cannot serve on 'gopher'.*servable: .*tcp"):
        await serve_link("gopher://x:1", echo)


async def test_a_registered_scheme_is_opened_and_served_by_url(monkeypatch):
    monkeypatch.setattr(url_module, "_OPENERS", dict(url_module._OPENERS))
    monkeypatch.setattr(url_module, "_SERVERS", dict(url_module._SERVERS))
    ends = memory_pair()
    served = []

    async def opener(url, **kw):
        assert url.host == "bus" and kw == {"option": 1}
        return ends[0]

    async def server(url, handler):
        served.append(asyncio.create_task(handler(ends[1])))
        return object()

    register_scheme("mem", opener, server)
    await serve_link("mem://bus", echo)
    link = await open_link("mem://bus", option=1)
    await link.send(REQUEST)
    assert await asyncio.wait_for(link.receive(), WAIT) == swapped(REQUEST)
    await link.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(served[0], WAIT)
