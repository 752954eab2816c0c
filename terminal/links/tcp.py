"""TCP links: a client connection and a server that hands each connection to a handler."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.errors import FramingError

from .base import FrameLink, LinkClosed, LinkUnavailable
from .stream import StreamFrameLink

log = logging.getLogger("possim.links")

Handler = Callable[[FrameLink], Awaitable[None]]


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def connect_tcp(host: str, port: int, *, timeout: float | None = None, **framing: Any) -> StreamFrameLink:
    """Connect to host:port. LinkUnavailable (refused, no route, unknown host, no answer in `timeout`).

    `framing` goes to StreamFrameLink (length, has_tpdu, has_header, max_size, ...).
    """
    target = f"tcp://{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:  # before OSError: TimeoutError is one
        raise LinkUnavailable(f"cannot connect to {target}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise LinkUnavailable(f"cannot connect to {target}: {_reason(exc)}") from exc
    return StreamFrameLink(reader, writer, peer=target, **framing)


async def serve_tcp(host: str, port: int, handler: Handler, **framing: Any) -> asyncio.Server:
    """Listen on host:port (port 0: any free port); each connection runs `handler(link)`.

    The link is closed when the handler returns. A handler that raises is logged, never crashes the
    server: LinkClosed (the peer went away) at debug level, FramingError (the peer sent bytes that are
    not a frame) as a warning, anything else with its traceback. LinkUnavailable if it cannot listen.
    """

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"tcp://{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "tcp://?"
        link = StreamFrameLink(reader, writer, peer=name, **framing)
        try:
            await handler(link)
        except LinkClosed as exc:
            log.debug("%s: %s", name, exc)
        except FramingError as exc:
            log.warning("%s sent bytes that are not a frame (%s); connection dropped", name, exc)
        except Exception:
            log.exception("handler for %s failed", name)
        finally:
            await link.close()

    try:
        return await asyncio.start_server(on_connect, host, port)
    except OSError as exc:
        raise LinkUnavailable(f"cannot listen on tcp://{host}:{port}: {_reason(exc)}") from exc
