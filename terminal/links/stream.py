"""A frame link over an asyncio byte stream (TCP sockets, serial ports, pipes)."""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.errors import FramingError
from protocol.framing import DEFAULT_MAX_SIZE, Frame, FrameDecoder, LengthFormat, encode_frame

from .base import FrameLink, LinkClosed


class StreamFrameLink(FrameLink):
    """Frames over a StreamReader / StreamWriter pair, decoded with the sans-I/O FrameDecoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True, has_header: bool = True,
                 max_size: int = DEFAULT_MAX_SIZE, resync: bool = False, peer: str = "") -> None:
        self._reader = reader
        self._writer = writer
        self._length = length
        self._max_size = max_size
        self._decoder = FrameDecoder(length=length, has_tpdu=has_tpdu, has_header=has_header, max_size=max_size,
                                     resync=resync)
        self._ready: deque[Frame] = deque()
        self._closed = False
        self._peer = peer or str(writer.get_extra_info("peername") or "?")
        self.skipped: list[tuple[int, int, str]] = []

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: Frame) -> None:
        if self._closed:
            raise LinkClosed(f"link to {self._peer} is closed")
        data = encode_frame(frame, self._length, self._max_size)
        self._trace("tx", data)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise LinkClosed(f"link to {self._peer} lost: {exc}") from None

    async def send_bytes(self, data: bytes) -> None:
        """Raw bytes onto the stream (a chaos toxic slicing a frame); the peer's framer reassembles them."""
        if self._closed:
            raise LinkClosed(f"link to {self._peer} is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise LinkClosed(f"link to {self._peer} lost: {exc}") from None

    async def receive(self) -> Frame:
        while not self._ready:
            if self._closed:
                raise LinkClosed(f"link to {self._peer} is closed")
            try:
                chunk = await self._reader.read(65536)
            except (ConnectionError, OSError) as exc:
                await self.close()
                raise LinkClosed(f"link to {self._peer} lost: {exc}") from None
            if not chunk:
                await self.close()
                raise LinkClosed(f"{self._peer} closed the link")
            try:
                frames = self._decoder.feed(chunk)
            except FramingError:
                await self.close()
                raise
            skipped = self._decoder.drain_skipped()
            if skipped:
                self.skipped.extend(skipped)
            self._ready.extend(frames)
        frame = self._ready.popleft()
        if self.trace is not None:
            self._trace("rx", encode_frame(frame, self._length, self._max_size))
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except (ConnectionError, OSError, RuntimeError):
            pass
