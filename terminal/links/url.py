"""Link URLs: `tcp://host:port`, `serial:///dev/ttyX?baud=9600`, and pyserial URLs.

A registry maps a scheme to an opener (client side) and a server factory (host side), so a transport
plugs in without the terminal or host knowing it (python-can's `Bus(interface=...)`):

    register_scheme("tcp", opener, server)     # opener(url: LinkURL, **kw) -> FrameLink
                                               # server(url: LinkURL, handler, **kw) -> Server
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
    """A parsed link URL: `url` as given, lower-case `scheme`, `host`, `port`, `path`, query `params`."""

    url: str
    scheme: str
    host: str = ""
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.url


def parse_link_url(url: str) -> LinkURL:
    """Split a link URL; ValueError when it has no scheme, a bad port, or (tcp) no host or port."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ValueError(f"link {url!r} has no scheme; use tcp://host:port or serial:///dev/ttyX")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"link {url!r} has an invalid port") from None
    if scheme == "tcp" and (not parts.hostname or port is None):
        raise ValueError(f"link {url!r}: tcp links need host and port, like tcp://127.0.0.1:5800")
    return LinkURL(url, scheme, parts.hostname or "", port, parts.path, dict(parse_qsl(parts.query)))


class Server(Protocol):
    """What `serve_link` returns (asyncio.Server is one): stop with close(), then await wait_closed()."""

    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


Opener = Callable[..., Awaitable[FrameLink]]
ServerFactory = Callable[..., Awaitable[Any]]

_OPENERS: dict[str, Opener] = {}
_SERVERS: dict[str, ServerFactory] = {}


def register_scheme(scheme: str, opener: Opener, server: ServerFactory | None = None) -> None:
    """Make `scheme://` openable (and servable, with `server`); a later registration replaces one."""
    _OPENERS[scheme.lower()] = opener
    if server is not None:
        _SERVERS[scheme.lower()] = server


def supported_schemes() -> list[str]:
    return sorted(_OPENERS)


def check_link_url(url: str) -> LinkURL:
    """`url` parsed, or ValueError naming what is wrong with it (no scheme, a bad port, a scheme no transport
    opens) - for commands that take a URL and should say so before they start, not at the first connect."""
    parsed = parse_link_url(url)
    if parsed.scheme not in _OPENERS:
        raise ValueError(f"unsupported link scheme {parsed.scheme!r} in {url!r}; "
                         f"supported: {', '.join(supported_schemes())}")
    return parsed


async def open_link(url: str, **kw: Any) -> FrameLink:
    """The client end of a link. LinkUnavailable when it cannot be reached; ValueError for a bad URL.

    `kw` goes to the scheme's opener; for tcp: `timeout` and the framing options of StreamFrameLink.
    """
    parsed = check_link_url(url)
    return await _OPENERS[parsed.scheme](parsed, **kw)


async def serve_link(url: str, handler: Handler, **kw: Any) -> Server:
    """Listen on a link URL; `handler(link)` runs per connection (TCP) or per opening of a device (serial).

    The link is closed when the handler returns; a handler's exception is logged, not raised.
    """
    parsed = parse_link_url(url)
    factory = _SERVERS.get(parsed.scheme)
    if factory is None:
        raise ValueError(f"cannot serve on {parsed.scheme!r} links ({url!r}); "
                         f"servable: {', '.join(sorted(_SERVERS))}")
    return await (factory(parsed, handler, **kw) if kw else factory(parsed, handler))


async def _open_tcp(url: LinkURL, **kw: Any) -> FrameLink:
    return await connect_tcp(url.host, url.port or 0, **kw)


async def _serve_tcp(url: LinkURL, handler: Handler, **kw: Any) -> Any:
    return await serve_tcp(url.host, url.port or 0, handler, **kw)


register_scheme("tcp", _open_tcp, _serve_tcp)
