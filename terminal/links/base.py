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
    """One end of a frame-carrying link.

    `trace`, when set, is called as trace(direction, frame_bytes) for every frame: "tx" before it is
    sent, "rx" when it is received; the bytes are the whole frame, length prefix included. It must
    not block (log, append to a list). Links that can also put raw bytes on the wire (a chaos toxic
    slicing a frame) offer `async send_bytes(data)`.
    """

    trace: TraceHook | None = None

    @abc.abstractmethod
    async def send(self, frame: Frame) -> None:
        """Send one frame; LinkClosed if the link is closed or lost, FramingError if it is oversize."""

    @abc.abstractmethod
    async def receive(self) -> Frame:
        """The next frame; LinkClosed at EOF or reset, FramingError on garbage (the link is then closed)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close this end (idempotent); a receive waiting on it raises LinkClosed."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @property
    def peer(self) -> str:
        """The other end, for logs: "tcp://127.0.0.1:5800", "/dev/ttyUSB0", "memory://b"."""
        return "?"

    def _trace(self, direction: str, data: bytes) -> None:
        if self.trace is not None:
            self.trace(direction, data)

    async def __aenter__(self) -> FrameLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
