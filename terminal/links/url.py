"""Link URLs: `tcp://host:port`, `serial:///dev/ttyX?baud=9600`, and pyserial URLs.

A registry maps a scheme to an opener (client side) and a server (host side), so the serial
transport plugs in without the terminal or host knowing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from .base import FrameLink
from .tcp import Handler, connect_tcp, serve_tcp


@dataclass(frozen=True)
class LinkURL:
    url: str
    scheme: str
    host: str = ""
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)


def parse_link_url(url: str) -> LinkURL:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError(f"link {url!r} has no scheme; use tcp://host:port or serial:///dev/ttyX")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"link {url!r} has an invalid port") from None
    if scheme == "tcp" and (not parts.hostname or port is None):
        raise ValueError(f"link {url!r}: tcp links need host and port, like tcp://127.0.0.1:5800")
    return LinkURL(url, scheme, parts.hostname or "", port, parts.path, dict(parse_qsl(parts.query)))


class Server(Protocol):
    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


Opener = Callable[[LinkURL], Awaitable[FrameLink]]
ServerFactory = Callable[[LinkURL, Handler], Awaitable[Any]]

_OPENERS: dict[str, Opener] = {}
_SERVERS: dict[str, ServerFactory] = {}


def register_scheme(scheme: str, opener: Opener, server: ServerFactory | None = None) -> None:
    _OPENERS[scheme] = opener
    if server is not None:
        _SERVERS[scheme] = server


def supported_schemes() -> list[str]:
    return sorted(_OPENERS)


async def open_link(url: str, **kw: Any) -> FrameLink:
    """Open the client end of a link; LinkUnavailable when it cannot be reached."""
    parsed = parse_link_url(url)
    opener = _OPENERS.get(parsed.scheme)
    if opener is None:
        raise ValueError(f"unsupported link scheme {parsed.scheme!r}; supported: {', '.join(supported_schemes())}")
    return await opener(parsed, **kw)


async def serve_link(url: str, handler: Handler) -> Any:
    """Listen on a link URL; `handler(link)` runs per connection (TCP) or once per device (serial)."""
    parsed = parse_link_url(url)
    factory = _SERVERS.get(parsed.scheme)
    if factory is None:
        raise ValueError(f"cannot serve on {parsed.scheme!r}; servable: {', '.join(sorted(_SERVERS))}")
    return await factory(parsed, handler)


async def _open_tcp(url: LinkURL, **kw: Any) -> FrameLink:
    return await connect_tcp(url.host, url.port or 0, **kw)


async def _serve_tcp(url: LinkURL, handler: Handler) -> Any:
    return await serve_tcp(url.host, url.port or 0, handler)


register_scheme("tcp", _open_tcp, _serve_tcp)
