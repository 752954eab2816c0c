"""Links over real loopback TCP and in memory: frames both ways, trace, EOF, garbage, refused."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import FramingError
from protocol.framing import Frame, Header, Tpdu
from terminal.links import LinkClosed, LinkUnavailable, memory_pair, open_link, parse_link_url, serve_link

FRAME = Frame(Tpdu(dest=6), Header.for_firmware("3.0.8"), b"\x08\x20" + bytes(8))


async def _echo_server():
    async def handler(link):
        while True:
            try:
                frame = await link.receive()
            except (LinkClosed, FramingError):
                return
            await link.send(Frame(frame.tpdu.swapped() if frame.tpdu else None, frame.header, frame.payload))

    server = await serve_link("tcp://127.0.0.1:0", handler)
    port = server.sockets[0].getsockname()[1]
    return server, f"tcp://127.0.0.1:{port}"


async def test_tcp_frames_round_trip_and_trace_sees_bytes():
    server, url = await _echo_server()
    try:
        link = await open_link(url)
        seen: list[tuple[str, bytes]] = []
        link.trace = lambda d, b: seen.append((d, b))
        await link.send(FRAME)
        reply = await asyncio.wait_for(link.receive(), 5)
        assert reply.payload == FRAME.payload and reply.tpdu == Tpdu(src=6)
        assert [d for d, _ in seen] == ["tx", "rx"] and seen[0][1][:2] == len(seen[0][1][2:]).to_bytes(2, "big")
        await link.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_garbage_from_the_peer_is_a_framing_error_and_closes():
    async def handler(link):
        await asyncio.sleep(0)

    async def garbage(reader, writer):
        writer.write(b"\x00\x10\x99" + bytes(15))
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = await open_link(f"tcp://127.0.0.1:{port}")
        with pytest.raises(FramingError, match="TPDU"):
            await asyncio.wait_for(link.receive(), 5)
        assert link.closed
    finally:
        server.close()
        await server.wait_closed()


async def test_eof_is_link_closed():
    async def closer(reader, writer):
        writer.close()

    server = await asyncio.start_server(closer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        link = await open_link(f"tcp://127.0.0.1:{port}")
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(link.receive(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_connecting_to_a_closed_port_is_link_unavailable():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(LinkUnavailable, match=str(port)):
        await open_link(f"tcp://127.0.0.1:{port}")


async def test_memory_pair_carries_frames_and_eof():
    a, b = memory_pair()
    await a.send(FRAME)
    assert await b.receive() == FRAME
    await a.close()
    with pytest.raises(LinkClosed):
        await b.receive()


def test_url_parsing_and_errors():
    url = parse_link_url("serial:///dev/ttyUSB0?baud=9600&parity=N")
    assert (url.scheme, url.path, url.params["baud"]) == ("serial", "/dev/ttyUSB0", "9600")
    with pytest.raises(ValueError, match="host and port"):
        parse_link_url("tcp://127.0.0.1")
    with pytest.raises(ValueError, match="no scheme"):
        parse_link_url("127.0.0.1:5800")


async def test_unknown_scheme_names_the_supported_ones():
    with pytest.raises(ValueError, match="tcp"):
        await open_link("gopher://x:1")
