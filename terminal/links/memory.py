"""An in-memory link pair: two ends back to back (h11's ConnectionPair, python-can's virtual bus).

Frames go through the real encoder and decoder, so tests of a terminal and a host wired this way
see exactly the bytes a socket would carry, without a socket.
"""

from __future__ import annotations

import asyncio

from protocol.framing import Frame, FrameDecoder, encode_frame

from .base import FrameLink, LinkClosed

_EOF = b""


class MemoryFrameLink(FrameLink):
    def __init__(self, name: str) -> None:
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._decoder = FrameDecoder()
        self._pending: list[Frame] = []
        self._closed = False
        self._other: MemoryFrameLink | None = None
        self._name = name

    @property
    def peer(self) -> str:
        return f"memory://{self._name}"

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: Frame) -> None:
        if self._closed or self._other is None or self._other._closed:
            raise LinkClosed("memory link closed")
        data = encode_frame(frame)
        self._trace("tx", data)
        self._other._inbox.put_nowait(data)

    async def receive(self) -> Frame:
        while not self._pending:
            if self._closed:
                raise LinkClosed("memory link closed")
            data = await self._inbox.get()
            if data == _EOF:
                self._closed = True
                raise LinkClosed("peer closed the memory link")
            self._pending.extend(self._decoder.feed(data))
        frame = self._pending.pop(0)
        self._trace("rx", encode_frame(frame))
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._other is not None and not self._other._closed:
            self._other._inbox.put_nowait(_EOF)


def memory_pair() -> tuple[MemoryFrameLink, MemoryFrameLink]:
    """Two connected ends: what one sends, the other receives."""
    a, b = MemoryFrameLink("a"), MemoryFrameLink("b")
    a._other, b._other = b, a
    return a, b
