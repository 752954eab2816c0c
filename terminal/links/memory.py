"""An in-memory link pair: two ends back to back (h11's ConnectionPair, python-can's virtual bus).

Frames go through the real encoder and decoder, so tests of a terminal and a host wired this way
see exactly the bytes a socket would carry, without a socket.

Built for fleets (tools/bench_fleet.py wires 10,000 terminals this way): an idle end holds no
queue, no decoder and no list. An `asyncio.Queue` inbox with a `deque` of ready frames and an eager
`FrameDecoder` cost about 4.4 KB an end; here the inbox and the ready frames are plain lists that
exist only while they hold something, a decoder is made by bytes that arrive and let go of once it
holds no part of a frame (the next one carries on the stream offset, so errors still name the right
byte), and a receive that has to wait creates one Future, dropped when it wakes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from protocol.errors import FramingError
from protocol.framing import DEFAULT_MAX_SIZE, Frame, FrameDecoder, LengthFormat, encode_frame

from .base import FrameLink, LinkClosed

_EOF = None  # in an inbox: the other end closed; or this end closed, waking its own receive

Framing = tuple[LengthFormat, bool, bool, int]  # length, has_tpdu, has_header, max_size
_DEFAULT_FRAMING: Framing = (LengthFormat.BINARY2, True, True, DEFAULT_MAX_SIZE)  # shared by most links


class MemoryFrameLink(FrameLink):
    """One end of a `memory_pair`. Like a TCP link: send, receive, EOF, garbage, raw `send_bytes`.

    Like a stream, one receive at a time: a second `receive()` while one waits is a RuntimeError.
    """

    def __init__(self, name: str, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> None:
        framing = (length, has_tpdu, has_header, max_size)
        self._framing = _DEFAULT_FRAMING if framing == _DEFAULT_FRAMING else framing
        self._inbox: list[bytes | None] | None = None  # bytes from the other end (or _EOF), oldest first
        self._waiter: asyncio.Future[None] | None = None  # the waiting receive's wake-up
        self._decoder: FrameDecoder | None = None  # while part of a frame (or a framing error) is held
        self._offset = 0  # stream offset of the next byte a new decoder is fed
        self._ready: list[Frame] | None = None  # decoded, not yet returned, oldest first
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
        data = encode_frame(frame, self._framing[0], self._framing[3])
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
            self._other._put(data)

    def _put(self, item: bytes | None) -> None:
        if self._inbox is None:
            self._inbox = [item]
        else:
            self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _get(self) -> bytes | None:
        """The oldest item of the inbox, waiting for one (what `asyncio.Queue.get` did)."""
        while not self._inbox:
            if self._waiter is not None:
                raise RuntimeError("receive() called while another receive() is waiting on this link")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        inbox = self._inbox
        item = inbox.pop(0)
        if not inbox:
            self._inbox = None
        return item

    def _feed(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            length, has_tpdu, has_header, max_size = self._framing
            decoder = self._decoder = FrameDecoder(length=length, has_tpdu=has_tpdu, has_header=has_header,
                                                   max_size=max_size, offset=self._offset)
        frames = decoder.feed(data)
        if decoder.error is None and not decoder.pending:  # nothing held: an idle end keeps no decoder
            self._offset = decoder.offset
            self._decoder = None
        if not frames:
            return
        if self._ready:
            self._ready.extend(frames)
        else:
            self._ready = frames

    async def receive(self) -> Frame:
        while not self._ready:
            if self._closed:
                raise LinkClosed("memory link closed")
            if self._decoder is not None and self._decoder.error is not None:  # bad bytes after frames returned
                await self.close()
                raise self._decoder.error
            data = await self._get()
            if data is _EOF:
                if not self._closed:
                    self._closed = True
                    raise LinkClosed(f"{self.peer} closed the link")
                continue
            try:
                self._feed(data)
            except FramingError:
                await self.close()
                raise
        ready = self._ready
        frame = ready.pop(0)
        if not ready:
            self._ready = None
        if self.trace is not None:
            self._trace("rx", encode_frame(frame, self._framing[0], self._framing[3]))
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._put(_EOF)  # wake a receive waiting on this end
        if self._other is not None and not self._other._closed:
            self._other._put(_EOF)


def memory_pair(**framing: Any) -> tuple[MemoryFrameLink, MemoryFrameLink]:
    """Two connected ends ("a" and "b"): what one sends, the other receives.

    `framing` (length, has_tpdu, has_header, max_size) applies to both ends.
    """
    a, b = MemoryFrameLink("a", **framing), MemoryFrameLink("b", **framing)
    a._other, b._other = b, a
    return a, b
