"""An in-memory link pair: two ends back to back (h11's ConnectionPair, python-can's virtual bus).

Frames go through the real encoder and decoder, so tests of a terminal and a host wired this way
see exactly the bytes a socket would carry, without a socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from protocol.errors import FramingError
from protocol.framing import DEFAULT_MAX_SIZE, Frame, FrameDecoder, LengthFormat, encode_frame

from .base import FrameLink, LinkClosed

_EOF = None  # in an inbox: the other end closed; or this end closed, waking its own receive


class MemoryFrameLink(FrameLink):
    """One end of a `memory_pair`. Like a TCP link: send, receive, EOF, garbage, raw `send_bytes`."""

    def __init__(self, name: str, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._decoder = FrameDecoder(length=length, has_tpdu=has_tpdu, has_header=has_header, max_size=max_size)
        self._length = length
        self._max_size = max_size
        self._ready: deque[Frame] = deque()
        self._closed = False
        self._other: MemoryFrameLink | None = None
        self.name = name

    @property
    def peer(self) -> str:
        return f"memory://{self._other.name if self._other else '?'}"

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: Frame) -> None:
        data = encode_frame(frame, self._length, self._max_size)
        self._check_open()
        self._trace("tx", data)
        self._deliver(data)

    async def send_bytes(self, data: bytes) -> None:
        """Raw bytes to the other end's framer (slices of a frame, or garbage)."""
        self._check_open()
        self._deliver(bytes(data))

    def _check_open(self) -> None:
        if self._closed:
            raise LinkClosed("memory link closed")
        if self._other is None or self._other._closed:
            raise LinkClosed(f"{self.peer} closed the link")

    def _deliver(self, data: bytes) -> None:
        assert self._other is not None
        if data:
            self._other._inbox.put_nowait(data)

    async def receive(self) -> Frame:
        while not self._ready:
            if self._closed:
                raise LinkClosed("memory link closed")
            if self._decoder.error is not None:  # bad bytes after frames already returned
                await self.close()
                raise self._decoder.error
            data = await self._inbox.get()
            if data is _EOF:
                if not self._closed:
                    self._closed = True
                    raise LinkClosed(f"{self.peer} closed the link")
                continue
            try:
                self._ready.extend(self._decoder.feed(data))
            except FramingError:
                await self.close()
                raise
        frame = self._ready.popleft()
        if self.trace is not None:
            self._trace("rx", encode_frame(frame, self._length, self._max_size))
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put_nowait(_EOF)  # wake a receive waiting on this end
        if self._other is not None and not self._other._closed:
            self._other._inbox.put_nowait(_EOF)


def memory_pair(**framing: Any) -> tuple[MemoryFrameLink, MemoryFrameLink]:
    """Two connected ends ("a" and "b"): what one sends, the other receives.

    `framing` (length, has_tpdu, has_header, max_size) applies to both ends.
    """
    a, b = MemoryFrameLink("a", **framing), MemoryFrameLink("b", **framing)
    a._other, b._other = b, a
    return a, b
