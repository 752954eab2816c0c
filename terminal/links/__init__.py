"""Links: how frames travel (TCP, serial, in memory), behind one small interface."""

from . import serial as _serial  # noqa: F401  (registers serial:// and the pyserial URL schemes)
from .base import FrameLink, LinkClosed, LinkUnavailable, TraceHook
from .memory import memory_pair
from .stream import StreamFrameLink
from .tcp import connect_tcp, serve_tcp
from .url import LinkURL, open_link, parse_link_url, register_scheme, serve_link, supported_schemes

__all__ = [
    "FrameLink",
    "LinkClosed",
    "LinkURL",
    "LinkUnavailable",
    "StreamFrameLink",
    "TraceHook",
    "connect_tcp",
    "memory_pair",
    "open_link",
    "parse_link_url",
    "register_scheme",
    "serve_link",
    "serve_tcp",
    "supported_schemes",
]
