"""The link seam: something that carries frames (model: python-can's Bus, h11's I/O split).

Terminal, host, proxy and daemon talk to a `FrameLink` and never to a socket or a serial port, so
TCP, serial and in-memory links are interchangeable plugs, and faults can wrap any of them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from protocol.framing import Frame

TraceHook = Callable[[str, bytes], None]


class LinkClosed(ConnectionError):
    """The peer closed the link (EOF or reset)."""


class LinkUnavailable(ConnectionError):
    """The link could not be opened: refused, no route, no such device, device busy."""


class FrameLink(abc.ABC):
    """One end of a frame-carrying link. `trace`, when set, sees every frame's bytes ("tx" / "rx")."""

    trace: TraceHook | None = None

    @abc.abstractmethod
    async def send(self, frame: Frame) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> Frame:
        """The next frame; LinkClosed at EOF, FramingError on garbage (the link is then closed)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @property
    def peer(self) -> str:
        return "?"

    def _trace(self, direction: str, data: bytes) -> None:
        if self.trace is not None:
            self.trace(direction, data)

    async def __aenter__(self) -> FrameLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
