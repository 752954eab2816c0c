"""Links: how frames travel (TCP, serial, in memory), behind one small interface.

    link = await open_link("tcp://127.0.0.1:5800")          # client end: a FrameLink
    server = await serve_link("tcp://0.0.0.0:5800", handler)  # handler(link) per connection
    a, b = memory_pair()                                     # two ends back to back, for tests

A FrameLink sends and receives `protocol.framing.Frame`s: `send`, `receive` (LinkClosed at EOF,
FramingError on garbage), `close`, `closed`, `peer`, and a `trace(direction, bytes)` hook.
Opening fails with LinkUnavailable; a bad URL or an unknown scheme is a ValueError.
"""

from . import serial as _serial  # noqa: F401  (registers serial:// and the pyserial URL schemes)
from .base import FrameLink, LinkClosed, LinkUnavailable, TraceHook
from .memory import MemoryFrameLink, memory_pair
from .stream import StreamFrameLink
from .tcp import connect_tcp, serve_tcp
from .url import (
    LinkURL,
    Server,
    check_link_url,
    open_link,
    parse_link_url,
    register_scheme,
    serve_link,
    supported_schemes,
)

__all__ = [
    "FrameLink",
    "LinkClosed",
    "LinkURL",
    "LinkUnavailable",
    "MemoryFrameLink",
    "Server",
    "StreamFrameLink",
    "TraceHook",
    "check_link_url",
    "connect_tcp",
    "memory_pair",
    "open_link",
    "parse_link_url",
    "register_scheme",
    "serve_link",
    "serve_tcp",
    "supported_schemes",
]
