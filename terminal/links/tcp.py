"""TCP links: a client connection and a server that hands each connection to a handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .base import FrameLink, LinkUnavailable
from .stream import StreamFrameLink

log = logging.getLogger("possim.links")

Handler = Callable[[FrameLink], Awaitable[None]]


async def connect_tcp(host: str, port: int, *, timeout: float | None = None, **framing: Any) -> StreamFrameLink:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise LinkUnavailable(f"cannot connect to tcp://{host}:{port}: {exc.strerror or exc or 'timeout'}") from None
    return StreamFrameLink(reader, writer, peer=f"tcp://{host}:{port}", **framing)


async def serve_tcp(host: str, port: int, handler: Handler, **framing: Any) -> asyncio.Server:
    """Serve frames on host:port; each connection runs `handler(link)` and is closed after it returns."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        link = StreamFrameLink(reader, writer, peer=f"tcp://{peer[0]}:{peer[1]}" if peer else "tcp://?", **framing)
        try:
            await handler(link)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for %s failed", link.peer)
        finally:
            await link.close()

    try:
        return await asyncio.start_server(on_connect, host, port)
    except OSError as exc:
        raise LinkUnavailable(f"cannot listen on tcp://{host}:{port}: {exc.strerror or exc}") from None
