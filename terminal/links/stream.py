"""A frame link over an asyncio byte stream (TCP sockets, serial ports, pipes)."""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.errors import FramingError
from protocol.framing import DEFAULT_MAX_SIZE, Frame, FrameDecoder, LengthFormat, Validator, encode_frame

from .base import FrameLink, LinkClosed

CLOSE_TIMEOUT = 5.0  # seconds a close waits for unsent bytes to leave before it aborts the connection


class StreamFrameLink(FrameLink):
    """Frames over a StreamReader / StreamWriter pair, decoded with the sans-I/O FrameDecoder.

    Framing options (`length`, `has_tpdu`, `has_header`, `max_size`, `resync`, `mti`, `validate`) are
    the FrameDecoder's. Without `resync` (TCP) bytes that are not a frame make `receive` close the link
    and raise FramingError - after the good frames that came before them. With `resync` (serial) they
    are skipped and recorded in `skipped`.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True, has_header: bool = True,
                 max_size: int = DEFAULT_MAX_SIZE, resync: bool = False, mti: str | None = "bcd",
                 validate: Validator | None = None, peer: str = "") -> None:
        self._reader = reader
        self._writer = writer
        self._length = length
        self._max_size = max_size
        self._decoder = FrameDecoder(length=length, has_tpdu=has_tpdu, has_header=has_header, max_size=max_size,
                                     resync=resync, mti=mti, validate=validate)
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
        await self._write(data)

    async def send_bytes(self, data: bytes) -> None:
        """Raw bytes onto the stream (a chaos toxic slicing a frame); the peer's framer reassembles them."""
        if self._closed:
            raise LinkClosed(f"link to {self._peer} is closed")
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise LinkClosed(f"link to {self._peer} lost: {exc}") from exc

    async def receive(self) -> Frame:
        while not self._ready:
            if self._closed:
                raise LinkClosed(f"link to {self._peer} is closed")
            if self._decoder.error is not None:  # bad bytes after frames already returned
                await self.close()
                raise self._decoder.error
            try:
                chunk = await self._reader.read(65536)
            except (ConnectionError, OSError) as exc:
                await self.close()
                raise LinkClosed(f"link to {self._peer} lost: {exc}") from exc
            if not chunk:
                if self._closed:  # closed by this end while the read waited
                    raise LinkClosed(f"link to {self._peer} is closed")
                await self.close()
                partial = len(self._decoder.pending)
                raise LinkClosed(f"{self._peer} closed the link"
                                 + (f" {partial} bytes into a frame" if partial else ""))
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
        """Close the connection: unsent bytes get CLOSE_TIMEOUT seconds to leave, then it is aborted."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT)
        except TimeoutError:
            self._writer.transport.abort()
        except (ConnectionError, OSError, RuntimeError):
            pass
