"""Framing, sans-I/O: length prefix, TPDU and the 6-byte header around each ISO 8583 message.

`FrameDecoder` is fed whatever chunks a transport delivers and returns whole frames (model: h11's
receive_data / next_event). On TCP a bad frame is fatal for the connection (the caller drops it);
on a serial line, which has no connection boundaries, `resync=True` skips garbage and line noise
to the next plausible frame without losing a good frame that follows, and reports what it skipped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import FramingError

TPDU_ID = 0x60
HEADER_APP_TYPE = 0x60
HEADER_VERSION = 0x31
DEFAULT_MAX_SIZE = 4096


class LengthFormat(enum.Enum):
    """How a frame's length is written before it (the length counts the bytes after itself)."""

    BINARY2 = "binary2"  # 2 bytes big-endian (cup-pos)
    BCD2 = "bcd2"  # 2 bytes BCD: 04 26 = 426
    ASCII4 = "ascii4"  # 4 ASCII digits
    NONE = "none"  # no length (the whole input is one frame)

    @property
    def size(self) -> int:
        return {"binary2": 2, "bcd2": 2, "ascii4": 4, "none": 0}[self.value]

    def encode(self, length: int) -> bytes:
        if self is LengthFormat.BINARY2:
            return length.to_bytes(2, "big")
        if self is LengthFormat.BCD2:
            return bytes.fromhex(f"{length:04d}")
        if self is LengthFormat.ASCII4:
            return f"{length:04d}".encode()
        return b""

    def decode(self, raw: bytes) -> int | None:
        """The length a prefix declares, or None when the prefix is not of this format."""
        if self is LengthFormat.BINARY2:
            return int.from_bytes(raw, "big")
        if self is LengthFormat.BCD2:
            text = raw.hex()
            return int(text) if text.isdigit() else None
        if self is LengthFormat.ASCII4:
            return int(raw) if raw.isdigit() and raw.isascii() else None
        return None


@dataclass(frozen=True)
class Tpdu:
    """Transport PDU: id 0x60, destination and source addresses. A reply swaps the addresses."""

    id: int = TPDU_ID
    dest: int = 0
    src: int = 0

    def to_bytes(self) -> bytes:
        return bytes([self.id]) + self.dest.to_bytes(2, "big") + self.src.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Tpdu:
        if len(raw) != 5:
            raise FramingError(f"a TPDU is 5 bytes, got {len(raw)}")
        return cls(raw[0], int.from_bytes(raw[1:3], "big"), int.from_bytes(raw[3:5], "big"))

    def swapped(self) -> Tpdu:
        return Tpdu(self.id, self.src, self.dest)

    @property
    def hex(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True)
class Header:
    """The 6-byte application header: type, version, status + processing requirement, sub-version.

    The processing requirement (low nibble of byte 3) is how a host asks the terminal for work:
    0 none, 1 download parameters, 3 sign in again, 6 download firmware (project-defined values).
    The 3-byte BCD sub-version carries the firmware version: 3.0.8 -> 03 00 08.
    """

    app_type: int = HEADER_APP_TYPE
    version: int = HEADER_VERSION
    status: int = 0
    requirement: int = 0
    sub_version: bytes = b"\x03\x00\x08"

    def __post_init__(self) -> None:
        if not (0 <= self.status <= 15 and 0 <= self.requirement <= 15):
            raise ValueError("header status and processing requirement are nibbles (0..15)")
        if len(self.sub_version) != 3:
            raise ValueError("header sub-version is 3 bytes")

    def to_bytes(self) -> bytes:
        return bytes([self.app_type, self.version, self.status << 4 | self.requirement]) + self.sub_version

    @classmethod
    def from_bytes(cls, raw: bytes) -> Header:
        if len(raw) != 6:
            raise FramingError(f"a header is 6 bytes, got {len(raw)}")
        return cls(raw[0], raw[1], raw[2] >> 4, raw[2] & 0x0F, bytes(raw[3:6]))

    @classmethod
    def for_firmware(cls, firmware: str, **kw: int) -> Header:
        parts = firmware.split(".")
        if len(parts) != 3 or not all(p.isdigit() and int(p) <= 99 for p in parts):
            raise ValueError(f"firmware version {firmware!r} must be three numbers 0..99 like 3.0.8")
        return cls(sub_version=bytes.fromhex("".join(f"{int(p):02d}" for p in parts)), **kw)

    @property
    def firmware(self) -> str:
        text = self.sub_version.hex()
        if not text.isdigit():
            return text.upper()
        return ".".join(str(int(text[i:i + 2])) for i in (0, 2, 4))

    @property
    def hex(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True)
class Frame:
    """One frame: TPDU and header (None in dialects without them) and the message from the MTI on."""

    tpdu: Tpdu | None
    header: Header | None
    payload: bytes


def encode_frame(frame: Frame, length: LengthFormat = LengthFormat.BINARY2, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    body = (frame.tpdu.to_bytes() if frame.tpdu else b"") + (frame.header.to_bytes() if frame.header else b"")
    body += frame.payload
    if len(body) > max_size:
        raise FramingError(f"frame of {len(body)} bytes exceeds the maximum {max_size}")
    return length.encode(len(body)) + body


def split_body(body: bytes, *, has_tpdu: bool = True, has_header: bool = True, offset: int = 0) -> Frame:
    """A frame body (after the length) into TPDU, header and payload, checking the fixed bytes."""
    pos = 0
    tpdu = header = None
    if has_tpdu:
        if len(body) < 5:
            raise FramingError("frame shorter than its TPDU", offset=offset)
        if body[0] != TPDU_ID:
            raise FramingError(f"TPDU id {body[0]:02X} is not 60", offset=offset)
        tpdu = Tpdu.from_bytes(body[:5])
        pos = 5
    if has_header:
        if len(body) < pos + 6:
            raise FramingError("frame shorter than its header", offset=offset + pos)
        if body[pos] != HEADER_APP_TYPE:
            raise FramingError(f"header application type {body[pos]:02X} is not 60", offset=offset + pos)
        header = Header.from_bytes(body[pos:pos + 6])
        pos += 6
    return Frame(tpdu, header, bytes(body[pos:]))


def decode_frame(data: bytes, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> Frame:
    """Exactly one whole frame (prefix included unless `length` is NONE)."""
    size = length.size
    if size:
        if len(data) < size:
            raise FramingError("input shorter than the length prefix", offset=0)
        declared = length.decode(data[:size])
        if declared is None:
            raise FramingError(f"length prefix {data[:size].hex().upper()} is not {length.value}", offset=0)
        if declared != len(data) - size:
            raise FramingError(f"length prefix says {declared} bytes, {len(data) - size} follow", offset=0)
    if len(data) - size > max_size:
        raise FramingError(f"frame of {len(data) - size} bytes exceeds the maximum {max_size}", offset=0)
    return split_body(data[size:], has_tpdu=has_tpdu, has_header=has_header, offset=size)


def plausible_mti(raw: bytes) -> bool:
    """Two BCD bytes forming an ISO 8583 MTI: version 0, class 1-9, function 0-9, origin 0-5."""
    if len(raw) < 2:
        return False
    text = raw[:2].hex()
    return text.isdigit() and text[0] == "0" and text[1] != "0" and text[3] in "012345"


class FrameDecoder:
    """Feed bytes, get frames. `resync=True` is for byte streams with no boundaries (serial lines)."""

    def __init__(self, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE, resync: bool = False) -> None:
        if length is LengthFormat.NONE:
            raise ValueError("a stream decoder needs a length prefix")
        self.length = length
        self.has_tpdu = has_tpdu
        self.has_header = has_header
        self.max_size = max_size
        self.resync = resync
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0]
        self.skipped: list[tuple[int, int, str]] = []
        self._min_body = (5 if has_tpdu else 0) + (6 if has_header else 0) + 2 + 8

    @property
    def pending(self) -> bytes:
        return bytes(self._buffer)

    def drain_skipped(self) -> list[tuple[int, int, str]]:
        skipped, self.skipped = self.skipped, []
        return skipped

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _consume(self, n: int) -> bytes:
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._offset += n
        return chunk

    def _skip(self, n: int, reason: str) -> None:
        if self.skipped and self.skipped[-1][0] + self.skipped[-1][1] == self._offset:
            start, count, first_reason = self.skipped[-1]
            self.skipped[-1] = (start, count + n, first_reason)
        else:
            self.skipped.append((self._offset, n, reason))
        self._consume(n)

    def _check_candidate(self) -> tuple[int | None, str]:
        """(body length, '') when the buffer starts like a frame, (None, reason) when it cannot."""
        size = self.length.size
        declared = self.length.decode(bytes(self._buffer[:size]))
        if declared is None:
            return None, "length prefix is not valid"
        if declared == 0:
            return None, "zero-length frame"
        if declared > self.max_size:
            return None, f"frame length {declared} exceeds the maximum {self.max_size}"
        if self.resync and declared < self._min_body:
            return None, f"frame length {declared} is too short for a message"
        pos = size
        head = self._buffer
        if self.has_tpdu and len(head) > pos and head[pos] != TPDU_ID:
            return None, f"TPDU id {head[pos]:02X} is not 60"
        pos += 5 if self.has_tpdu else 0
        if self.has_header and len(head) > pos and head[pos] != HEADER_APP_TYPE:
            return None, f"header application type {head[pos]:02X} is not 60"
        if self.resync:
            if self.has_header and len(head) > pos + 1 and head[pos + 1] != HEADER_VERSION:
                return None, f"header version {head[pos + 1]:02X} is not 31"
            pos += 6 if self.has_header else 0
            if len(head) >= pos + 2 and not plausible_mti(bytes(head[pos:pos + 2])):
                return None, "no valid MTI after the header"
        return declared, ""

    def _next(self) -> Frame | None:
        size = self.length.size
        while True:
            if len(self._buffer) < size:
                return None
            declared, reason = self._check_candidate()
            if declared is None:
                if not self.resync:
                    raise FramingError(reason, offset=self._offset)
                self._skip(1, reason)
                continue
            if len(self._buffer) < size + declared:
                if self.resync and self._later_frame_complete(declared):
                    self._skip(1, "incomplete frame superseded by a later complete frame")
                    continue
                return None
            raw = self._consume(size + declared)
            try:
                return split_body(raw[size:], has_tpdu=self.has_tpdu, has_header=self.has_header,
                                  offset=self._offset - declared)
            except FramingError:
                if not self.resync:
                    raise
                # put the bytes back after the first one and keep scanning
                self._buffer[0:0] = raw[1:]
                self._offset -= len(raw) - 1
                self.skipped.append((self._offset - 1, 1, "frame failed validation"))

    def _later_frame_complete(self, declared: int) -> bool:
        """Serial only: whether a complete plausible frame starts inside the current candidate.

        A false start (noise that looks like a length) would otherwise make the decoder wait for
        bytes that never come while good frames pile up behind it.
        """
        size = self.length.size
        buffer = self._buffer
        for start in range(1, len(buffer) - size):
            if self.has_tpdu and buffer[start + size] != TPDU_ID:
                continue
            later = self.length.decode(bytes(buffer[start:start + size]))
            if later is None or later < self._min_body or later > self.max_size:
                continue
            if len(buffer) < start + size + later:
                continue
            try:
                body = bytes(buffer[start + size:start + size + later])
                frame = split_body(body, has_tpdu=self.has_tpdu, has_header=self.has_header)
            except FramingError:
                continue
            if plausible_mti(frame.payload):
                return True
        return False
