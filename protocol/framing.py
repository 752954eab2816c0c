"""Framing, sans-I/O: length prefix, TPDU and the 6-byte header around each ISO 8583 message.

    | length (2, big-endian; or 2 BCD, or 4 ASCII digits) | TPDU (5) | header (6) | MTI, bitmap, fields |

The length counts everything after itself. TPDU and header are optional per dialect (`has_tpdu`,
`has_header`); a `Frame` then carries None for them.

`FrameDecoder` is fed whatever chunks a transport delivers and returns whole frames (model: h11's
receive_data / next_event). It never touches a socket or a clock.

* Default mode (TCP): bytes that are not a frame raise `FramingError` with the stream offset of the
  offending byte; the caller drops the connection. Frames completed before the bad bytes are returned
  first: the call that meets the bad bytes returns them, and the next call raises.
* `resync=True` (serial: a byte stream with no connection boundaries) never raises. It skips line
  noise and broken frames to the next plausible frame and records what it skipped in `skipped`
  (`drain_skipped()` hands the records over). See `FrameDecoder` for the rules and their limits.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass

from .errors import FramingError, ProtocolError

TPDU_ID = 0x60
HEADER_APP_TYPE = 0x60
HEADER_VERSION = 0x31
DEFAULT_MAX_SIZE = 4096
TPDU_SIZE = 5
HEADER_SIZE = 6
BITMAP_SIZE = 8


class LengthFormat(enum.Enum):
    """How a frame's length is written before it (the length counts the bytes after itself)."""

    BINARY2 = "binary2"  # 2 bytes big-endian (cup-pos)
    BCD2 = "bcd2"  # 2 bytes BCD: 04 26 = 426
    ASCII4 = "ascii4"  # 4 ASCII digits: b"0426"
    NONE = "none"  # no length (the whole input is one frame; not for streams)

    @property
    def size(self) -> int:
        """Bytes the prefix takes."""
        return _PREFIX_SIZES[self]

    @property
    def max_length(self) -> int:
        """The largest length the prefix can express (0 for NONE)."""
        return _PREFIX_MAXIMA[self]

    def encode(self, length: int) -> bytes:
        if self is LengthFormat.NONE:
            return b""
        if not 0 <= length <= self.max_length:
            raise FramingError(f"length {length} does not fit a {self.value} prefix (at most {self.max_length})")
        if self is LengthFormat.BINARY2:
            return length.to_bytes(2, "big")
        if self is LengthFormat.BCD2:
            return bytes.fromhex(f"{length:04d}")
        return f"{length:04d}".encode("ascii")

    def decode(self, raw: bytes | bytearray) -> int | None:
        """The length a prefix declares, or None when the bytes are not a prefix of this format."""
        if len(raw) != self.size or self is LengthFormat.NONE:
            return None
        if self is LengthFormat.BINARY2:
            return int.from_bytes(raw, "big")
        if self is LengthFormat.BCD2:
            text = raw.hex()
            return int(text) if text.isdigit() else None
        return int(raw) if raw.isdigit() else None  # bytes.isdigit: ASCII digits only


_PREFIX_SIZES = {LengthFormat.BINARY2: 2, LengthFormat.BCD2: 2, LengthFormat.ASCII4: 4, LengthFormat.NONE: 0}
_PREFIX_MAXIMA = {LengthFormat.BINARY2: 0xFFFF, LengthFormat.BCD2: 9999, LengthFormat.ASCII4: 9999,
                  LengthFormat.NONE: 0}


@dataclass(frozen=True)
class Tpdu:
    """Transport PDU: id 0x60, destination and source addresses (2 bytes each, big-endian).

    `60 00 06 00 00` is id 0x60, dest 0x0006, src 0x0000. A host's reply swaps the addresses.
    """

    id: int = TPDU_ID
    dest: int = 0
    src: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 0xFF:
            raise ValueError(f"TPDU id {self.id} is not a byte")
        if not (0 <= self.dest <= 0xFFFF and 0 <= self.src <= 0xFFFF):
            raise ValueError(f"TPDU addresses are 2 bytes (0..65535), got dest={self.dest} src={self.src}")

    def to_bytes(self) -> bytes:
        return bytes([self.id]) + self.dest.to_bytes(2, "big") + self.src.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Tpdu:
        if len(raw) != TPDU_SIZE:
            raise FramingError(f"a TPDU is 5 bytes, got {len(raw)}")
        return _tpdu(bytes(raw)) if cls is Tpdu else cls(raw[0], int.from_bytes(raw[1:3], "big"),
                                                          int.from_bytes(raw[3:5], "big"))

    @classmethod
    def from_hex(cls, text: str) -> Tpdu:
        """From 10 hex digits, as in configuration files (`--tpdu 6000060000`)."""
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"TPDU {text!r} is not hex") from None
        if len(raw) != TPDU_SIZE:
            raise ValueError(f"TPDU {text!r} is not 10 hex digits")
        return cls.from_bytes(raw)

    def swapped(self) -> Tpdu:
        """The TPDU of a reply: destination and source exchanged."""
        return Tpdu(self.id, self.src, self.dest)

    @property
    def hex(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True)
class Header:
    """The 6-byte application header: type, version, status + processing requirement, sub-version.

    Byte 3: terminal status in the high nibble (0 normal, 1 test), processing requirement in the low
    nibble - how a host asks the terminal for work: 0 none, 1 download parameters, 3 sign in again,
    6 download firmware (project-defined values). The 3-byte BCD sub-version carries the firmware
    version: 3.0.8 -> 03 00 08.
    """

    app_type: int = HEADER_APP_TYPE
    version: int = HEADER_VERSION
    status: int = 0
    requirement: int = 0
    sub_version: bytes = b"\x03\x00\x08"

    def __post_init__(self) -> None:
        if not (0 <= self.app_type <= 0xFF and 0 <= self.version <= 0xFF):
            raise ValueError("header application type and version are bytes (0..255)")
        if not (0 <= self.status <= 15 and 0 <= self.requirement <= 15):
            raise ValueError("header status and processing requirement are nibbles (0..15)")
        if not isinstance(self.sub_version, bytes | bytearray) or len(self.sub_version) != 3:
            raise ValueError("header sub-version is 3 bytes")
        object.__setattr__(self, "sub_version", bytes(self.sub_version))

    def to_bytes(self) -> bytes:
        return bytes([self.app_type, self.version, self.status << 4 | self.requirement]) + self.sub_version

    @classmethod
    def from_bytes(cls, raw: bytes) -> Header:
        if len(raw) != HEADER_SIZE:
            raise FramingError(f"a header is 6 bytes, got {len(raw)}")
        return _header(bytes(raw)) if cls is Header else cls(raw[0], raw[1], raw[2] >> 4, raw[2] & 0x0F,
                                                               bytes(raw[3:6]))

    @classmethod
    def for_firmware(cls, firmware: str, **kw: int) -> Header:
        """A header whose sub-version is `firmware` ("3.0.8" -> 03 00 08); ValueError if it does not fit."""
        parts = firmware.split(".")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) <= 99 for p in parts):
            raise ValueError(f"firmware version {firmware!r} must be three numbers 0..99, like 3.0.8")
        return cls(sub_version=bytes.fromhex("".join(f"{int(p):02d}" for p in parts)), **kw)

    @property
    def firmware(self) -> str:
        """The sub-version as a version string: 03 00 08 -> "3.0.8", 31 10 03 -> "31.10.3".

        A sub-version that is not BCD (some other vendor's use of the bytes) is returned as hex.
        """
        text = self.sub_version.hex()
        if not text.isdigit():
            return text.upper()
        return ".".join(str(int(text[i:i + 2])) for i in (0, 2, 4))

    @property
    def hex(self) -> str:
        return self.to_bytes().hex().upper()


# A link sees the same few TPDUs and headers in every frame; both are immutable, so one object per
# distinct 5 or 6 bytes serves them all (building and validating a frozen dataclass per frame showed
# in the profile of a sale).
@functools.lru_cache(maxsize=256)
def _tpdu(raw: bytes) -> Tpdu:
    return Tpdu(raw[0], int.from_bytes(raw[1:3], "big"), int.from_bytes(raw[3:5], "big"))


@functools.lru_cache(maxsize=256)
def _header(raw: bytes) -> Header:
    return Header(raw[0], raw[1], raw[2] >> 4, raw[2] & 0x0F, raw[3:6])


@dataclass(frozen=True)
class Frame:
    """One frame: TPDU and header (None in dialects without them) and the message from the MTI on."""

    tpdu: Tpdu | None
    header: Header | None
    payload: bytes

    def body(self) -> bytes:
        """The bytes after the length prefix."""
        return (self.tpdu.to_bytes() if self.tpdu else b"") + (self.header.to_bytes() if self.header else b"") \
            + bytes(self.payload)


def encode_frame(frame: Frame, length: LengthFormat = LengthFormat.BINARY2, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The frame on the wire, length prefix first. FramingError if it is empty or over `max_size`."""
    body = frame.body()
    if not body:
        raise FramingError("an empty frame cannot be sent (its length would be 0)")
    if len(body) > max_size:
        raise FramingError(f"frame of {len(body)} bytes exceeds the maximum {max_size}")
    return length.encode(len(body)) + body


def split_body(body: bytes, *, has_tpdu: bool = True, has_header: bool = True, offset: int = 0) -> Frame:
    """A frame body (after the length) into TPDU, header and payload, checking the fixed bytes.

    `offset` is where `body` starts in the caller's input, so errors name the byte at fault.
    """
    pos = 0
    tpdu = header = None
    if has_tpdu:
        if len(body) < TPDU_SIZE:
            raise FramingError(f"frame of {len(body)} bytes is shorter than its TPDU", offset=offset)
        if body[0] != TPDU_ID:
            raise FramingError(f"TPDU id {body[0]:02X} is not 60", offset=offset)
        tpdu = Tpdu.from_bytes(bytes(body[:TPDU_SIZE]))
        pos = TPDU_SIZE
    if has_header:
        if len(body) < pos + HEADER_SIZE:
            raise FramingError(f"frame of {len(body)} bytes is shorter than its header", offset=offset + pos)
        if body[pos] != HEADER_APP_TYPE:
            raise FramingError(f"header application type {body[pos]:02X} is not 60", offset=offset + pos)
        header = Header.from_bytes(bytes(body[pos:pos + HEADER_SIZE]))
        pos += HEADER_SIZE
    return Frame(tpdu, header, bytes(body[pos:]))


def decode_frame(data: bytes, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE) -> Frame:
    """Exactly one whole frame (its length prefix included, unless `length` is NONE)."""
    size = length.size
    if size:
        if len(data) < size:
            raise FramingError(f"{len(data)} bytes is shorter than the length prefix", offset=0)
        declared = length.decode(data[:size])
        if declared is None:
            raise FramingError(f"length prefix {data[:size].hex().upper()} is not {length.value}", offset=0)
        if declared != len(data) - size:
            raise FramingError(f"length prefix says {declared} bytes, {len(data) - size} follow", offset=0)
    if len(data) == size:
        raise FramingError("zero-length frame", offset=0)
    if len(data) - size > max_size:
        raise FramingError(f"frame length {len(data) - size} exceeds the maximum {max_size}", offset=0)
    return split_body(data[size:], has_tpdu=has_tpdu, has_header=has_header, offset=size)


def plausible_mti(raw: bytes | bytearray, encoding: str = "bcd") -> bool:
    """Whether `raw` starts with an ISO 8583 MTI: version 0, class 1-9, function 0-9, origin 0-5.

    `encoding` is "bcd" (2 bytes: 02 00) or "ascii" (4 characters: b"0200").
    """
    if encoding == "bcd":
        if len(raw) < 2:
            return False
        text = bytes(raw[:2]).hex()
    else:
        if len(raw) < 4:
            return False
        text = bytes(raw[:4]).decode("latin-1")
    return text.isascii() and text.isdigit() and text[0] == "0" and text[1] != "0" and text[3] in "012345"


Validator = Callable[[Frame], object]

_NO, _MAYBE, _YES = 0, 1, 2  # what the bytes at a position say about a frame starting there
_EMIT, _REJECT, _WAIT = "emit", "reject", "wait"
_MTI_SIZES = {"bcd": 2, "ascii": 4, None: 0}


class FrameDecoder:
    """Feed bytes in any chunks, get whole frames.

    Default mode (TCP): a length of 0, a length over `max_size`, a length prefix that is not of the
    format, a length shorter than TPDU + header, a TPDU id that is not 0x60 or a header application
    type that is not 0x60 raises `FramingError` (offset = the offending byte's position in the whole
    stream; reason). The decoder is then dead: every later `feed` raises the same error. Frames that
    were complete before the bad bytes come first: the call that meets the bad bytes returns them and
    the next call raises.

    Resync mode (`resync=True`, serial lines) never raises. A position starts a *plausible* frame when
    its length is in [smallest message, max_size], the TPDU id is 0x60, the header application type
    is 0x60 (any version byte) and an MTI follows (`mti`: "bcd", "ascii", or None for no check).
    Anything else is skipped a byte at a time and recorded in `skipped` as (stream offset, bytes,
    reason for the first byte), adjacent skips merged. A plausible candidate may still be a false
    start: noise that looks like a header, or a frame cut short (device unplugged, bytes dropped by a
    UART) whose claimed length swallows the start of the next frame. The rules:

    1. A complete plausible frame (one that passes `validate`, when given) lying wholly inside a
       candidate's claimed body makes the candidate a false start: the scan resumes one byte after
       its start. So a candidate waiting for its bytes never holds back a frame that has arrived, and
       the wait is bounded by the claimed length (at most `max_size`).
    2. With `validate` (e.g. ``lambda f: dialect.decode(f.payload)``; it fails by returning False or
       raising a ProtocolError), a complete candidate that fails is a false start, and the scan
       resumes one byte after its start, so a frame it swallowed is found. One that passes goes on to
       rule 3 (a frame cut just before fixed-length fields still decodes).
    3. A complete candidate is a frame at once unless the header of a plausible frame that reaches
       past its end lies inside its body. Then what follows it decides: a plausible frame start
       confirms it; anything else means it swallowed the start of a real frame, and the scan resumes
       one byte after its start. Deciding waits for at most a header's worth of bytes after it; with
       fewer, the overlapping frame being complete decides against it.
    4. Look-behind: when the bytes right after a returned frame cannot start a frame, a frame that
       starts in its last few bytes (a header reaching past its end: the returned frame was cut short
       by a few bytes and its claimed length took in the start of the next one) is still found. The
       cut frame was returned as it was - the dialect or its MAC rejects it - and the next is not lost.

    `mti` and `validate` matter in resync mode only: on TCP a frame that does not decode is the
    dialect's business (a host answers it with 30).

    Without TPDU and header (an ASCII dialect, say) a plausible start is only a length and an MTI, which
    frame contents match all the time: rule 3 is off, rules 1 and 4 need `validate`, and without it a
    plausible candidate is trusted (wait for it, return it).

    Limits: a frame whose payload happens to hold a whole plausible frame is taken for a false start
    (rule 1), and one whose payload holds a plausible frame start waits for what follows it (rule 3):
    each about one frame in a million for binary payloads. A frame cut short whose claimed
    end falls inside the next frame at a point that happens to look like a frame start looks
    confirmed, and the frame it swallowed is lost with it unless `validate` rejects the cut one.
    """

    def __init__(self, *, length: LengthFormat = LengthFormat.BINARY2, has_tpdu: bool = True,
                 has_header: bool = True, max_size: int = DEFAULT_MAX_SIZE, resync: bool = False,
                 mti: str | None = "bcd", validate: Validator | None = None, offset: int = 0) -> None:
        if length is LengthFormat.NONE:
            raise ValueError("a stream decoder needs a length prefix (LengthFormat.NONE is for whole frames)")
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        if mti not in _MTI_SIZES:
            raise ValueError(f"mti must be 'bcd', 'ascii' or None, got {mti!r}")
        self.length = length
        self.has_tpdu = has_tpdu
        self.has_header = has_header
        self.max_size = max_size
        self.resync = resync
        self.mti = mti
        self.validate = validate
        self.skipped: list[tuple[int, int, str]] = []
        self._buffer = bytearray()
        self._offset = offset  # stream offset of _buffer[0]; a decoder that carries on an earlier one's stream
        # (a link that lets go of its idle decoder) starts at that one's offset, so errors name the right byte
        self._error: FramingError | None = None
        size = length.size
        self._size = size
        self._tpdu_at = size if has_tpdu else None
        self._header_at = size + (TPDU_SIZE if has_tpdu else 0) if has_header else None
        self._mti_at = size + (TPDU_SIZE if has_tpdu else 0) + (HEADER_SIZE if has_header else 0)
        self._mti_size = _MTI_SIZES[mti]
        self._prefix = self._mti_at + self._mti_size  # bytes that show whether a frame starts somewhere
        self._fixed = self._mti_at - size  # TPDU + header: bytes every frame body has
        self._min_body = self._fixed + self._mti_size + BITMAP_SIZE
        self._marker = self._tpdu_at if has_tpdu else self._header_at  # first fixed byte (0x60), if any
        # Without TPDU or header a plausible start is only a length and an MTI, which frame contents match
        # all the time (an ASCII dialect is all digits): then only `validate` can tell a false start.
        self._guarded = self._marker is not None or validate is not None
        # resync state, all stream offsets: positions after the head and before _scan_next are probed
        # for good, the plausible ones listed in _inner; the buffer keeps the last bytes of the frame
        # returned last (up to _behind) for rule 4.
        self._scan_next = 1
        self._inner: list[tuple[int, int]] = []  # (stream offset, declared length)
        self._verdicts: dict[int, bool] = {}  # validate() results by stream offset
        self._behind: int | None = None

    # -- public ---------------------------------------------------------------------------------
    @property
    def pending(self) -> bytes:
        """Bytes received and not yet returned in a frame or skipped."""
        return bytes(self._buffer[self._behind_count():])

    @property
    def offset(self) -> int:
        """Stream offset of the first pending byte."""
        return self._offset + self._behind_count()

    @property
    def error(self) -> FramingError | None:
        """The error that ended a default-mode stream (raised again by every `feed`), or None."""
        return self._error

    def drain_skipped(self) -> list[tuple[int, int, str]]:
        """The skip records so far, clearing them."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; returns the frames they complete, in order (possibly none). `feed(b"")` is fine."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        frames: list[Frame] = []
        while True:
            try:
                frame = self._next_resync() if self.resync else self._next_strict()
            except FramingError as exc:
                self._error = exc
                if frames:
                    return frames
                raise
            if frame is None:
                return frames
            frames.append(frame)

    # -- buffer ---------------------------------------------------------------------------------
    def _behind_count(self) -> int:
        return 0 if self._behind is None else max(0, self._behind - self._offset)

    def _advance(self, n: int) -> bytes:
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._offset += n
        head = self._offset
        if self._scan_next <= head:
            self._scan_next = head + 1
            self._inner.clear()
        elif self._inner and self._inner[0][0] <= head:
            self._inner = [entry for entry in self._inner if entry[0] > head]
        if len(self._verdicts) > 16:
            self._verdicts = {pos: v for pos, v in self._verdicts.items() if pos >= head}
        if self._behind is not None and self._behind <= head:
            self._behind = None
        return chunk

    def _skip(self, n: int, reason: str) -> None:
        quiet = self._behind_count()  # bytes already returned in a frame are not skipped again
        if n > quiet:
            start, count = self._offset + quiet, n - quiet
            last = self.skipped[-1] if self.skipped else None
            if last is not None and last[0] + last[1] == start:
                self.skipped[-1] = (last[0], last[1] + count, last[2])
            else:
                self.skipped.append((start, count, reason))
        self._advance(n)

    def _declared(self, pos: int) -> int | None:
        return self.length.decode(self._buffer[pos:pos + self._size])

    # -- default mode ---------------------------------------------------------------------------
    def _next_strict(self) -> Frame | None:
        buf, size = self._buffer, self._size
        if len(buf) < size:
            return None
        declared = self._declared(0)
        if declared is None:
            raise FramingError(f"length prefix {bytes(buf[:size]).hex().upper()} is not {self.length.value}",
                               offset=self._offset)
        if declared == 0:
            raise FramingError("zero-length frame", offset=self._offset)
        if declared > self.max_size:
            raise FramingError(f"frame length {declared} exceeds the maximum {self.max_size}", offset=self._offset)
        if declared < self._fixed:
            raise FramingError(f"frame length {declared} is shorter than its TPDU and header ({self._fixed})",
                               offset=self._offset)
        at = self._tpdu_at
        if at is not None and len(buf) > at and buf[at] != TPDU_ID:
            raise FramingError(f"TPDU id {buf[at]:02X} is not 60", offset=self._offset + at)
        at = self._header_at
        if at is not None and len(buf) > at and buf[at] != HEADER_APP_TYPE:
            raise FramingError(f"header application type {buf[at]:02X} is not 60", offset=self._offset + at)
        if len(buf) < size + declared:
            return None
        start = self._offset
        raw = self._advance(size + declared)
        return split_body(raw[size:], has_tpdu=self.has_tpdu, has_header=self.has_header, offset=start + size)

    # -- resync mode ----------------------------------------------------------------------------
    def _probe(self, pos: int) -> tuple[int, int, str]:
        """(_NO | _MAYBE | _YES, declared length, reason for _NO) for a frame starting at buffer `pos`.

        _MAYBE: the bytes there so far fit, but too few have arrived to tell.
        """
        buf = self._buffer
        avail = len(buf) - pos
        if avail < self._size:
            return _MAYBE, 0, ""
        declared = self._declared(pos)
        if declared is None:
            return _NO, 0, f"length prefix is not {self.length.value}"
        if declared == 0:
            return _NO, 0, "zero-length frame"
        if declared > self.max_size:
            return _NO, 0, f"frame length {declared} exceeds the maximum {self.max_size}"
        if declared < self._min_body:
            return _NO, 0, f"frame length {declared} is too short for a message"
        at = self._tpdu_at
        if at is not None and avail > at and buf[pos + at] != TPDU_ID:
            return _NO, 0, f"TPDU id {buf[pos + at]:02X} is not 60"
        at = self._header_at
        if at is not None and avail > at and buf[pos + at] != HEADER_APP_TYPE:
            return _NO, 0, f"header application type {buf[pos + at]:02X} is not 60"
        if self._mti_size and avail >= self._prefix:
            mti = buf[pos + self._mti_at:pos + self._prefix]
            if not plausible_mti(mti, self.mti or "bcd"):
                return _NO, 0, f"no valid MTI after the header ({bytes(mti).hex().upper()})"
        return (_YES if avail >= self._prefix else _MAYBE), declared, ""

    def _no_run(self, pos: int) -> int:
        """The first buffer position at or after `pos` whose marker byte (TPDU id, else header type)
        is 0x60 or not here yet: every position before it is certainly not a frame start."""
        marker = self._marker
        if marker is None:
            return pos
        found = self._buffer.find(TPDU_ID if self._tpdu_at is not None else HEADER_APP_TYPE, pos + marker)
        return (len(self._buffer) if found < 0 else found) - marker

    def _scan(self, upto: int) -> None:
        """Probe the positions after the head and before buffer position `upto`, as far as decidable."""
        head = self._offset
        pos = max(self._scan_next, head + 1) - head
        limit = min(upto, len(self._buffer))
        while pos < limit:
            jump = self._no_run(pos)
            if jump > pos:
                pos = min(jump, limit)
                continue
            state, declared, _ = self._probe(pos)
            if state == _MAYBE:
                break  # too near the end of the buffer: so is every later position
            if state == _YES:
                self._inner.append((head + pos, declared))
            pos += 1
        self._scan_next = max(self._scan_next, head + pos)

    def _frame_at(self, pos: int, declared: int) -> Frame:
        start = pos + self._size
        return split_body(bytes(self._buffer[start:start + declared]), has_tpdu=self.has_tpdu,
                          has_header=self.has_header, offset=self._offset + start)

    def _valid(self, pos: int, declared: int) -> bool:
        """`validate` on the complete frame at buffer `pos` (remembered by stream offset)."""
        key = self._offset + pos
        verdict = self._verdicts.get(key)
        if verdict is None:
            assert self.validate is not None
            try:
                verdict = self.validate(self._frame_at(pos, declared)) is not False
            except ProtocolError:
                verdict = False
            self._verdicts[key] = verdict
        return verdict

    def _complete_inside(self, end: int) -> int | None:
        """Rule 1: stream offset of a complete plausible (and valid) frame wholly inside the head's body."""
        self._scan(end)
        head = self._offset
        for pos, declared in self._inner:
            rel = pos - head
            if rel > end - self._prefix:
                break  # its header reaches past the candidate: what follows the candidate, rule 4's
            if rel + self._size + declared <= min(end, len(self._buffer)) and (
                    self.validate is None or self._valid(rel, declared)):
                return pos
        return None

    def _judge(self, end: int) -> tuple[str, str]:
        """Rule 3 for a complete candidate: (_EMIT | _REJECT | _WAIT, reason)."""
        head = self._offset
        # frames whose header lies inside and which reach past the end (the ones wholly inside were
        # rule 1's; starts whose header reaches past the end are rule 4's)
        inside = [(pos, declared) for pos, declared in self._inner if pos - head <= end - self._prefix]
        if not inside:
            return _EMIT, ""
        after = self._probe(end)[0] if end < len(self._buffer) else _MAYBE
        if after == _YES:
            return _EMIT, ""
        if after == _NO:
            return _REJECT, (f"false start: claims {end - self._size} bytes, but a frame starts inside it at "
                             f"byte {inside[0][0]} and none follows it")
        for pos, declared in inside:  # too few bytes after it to tell; a complete overlapping frame does
            if pos - head + self._size + declared <= len(self._buffer):
                return _REJECT, (f"false start: claims {end - self._size} bytes, but the complete frame at "
                                 f"byte {pos} overlaps its end")
        return _WAIT, ""

    def _look_behind(self) -> bool:
        """Rule 4. False to wait for bytes; True to go on (the head is where scanning continues)."""
        assert self._behind is not None
        end = self._behind - self._offset  # buffer position just after the frame returned last
        state = self._probe(end)[0] if end < len(self._buffer) else _MAYBE
        if state == _MAYBE:
            return False
        if state == _NO:
            for pos in range(end):
                if self._probe(pos)[0] != _NO:
                    self._advance(pos)  # a frame may start at pos: judge it by the usual rules
                    return True
        self._advance(end)
        return True

    def _next_resync(self) -> Frame | None:
        size = self._size
        while True:
            if self._behind is not None and not self._look_behind():
                return None
            state, declared, reason = self._probe(0)
            if state == _NO:
                self._skip(max(1, self._no_run(1)), reason)
                continue
            if state == _MAYBE:
                return None
            end = size + declared
            inside = self._complete_inside(end) if self._guarded else None
            if inside is not None:
                self._skip(1, f"false start: claims {declared} bytes, but a complete frame arrived inside it "
                              f"at byte {inside}")
                continue
            if len(self._buffer) < end:
                return None
            if self.validate is not None and not self._valid(0, declared):
                verdict, reason = _REJECT, f"frame of {declared} bytes failed validation"
            elif self._marker is not None:
                verdict, reason = self._judge(end)
            else:
                verdict = _EMIT
            if verdict == _WAIT:
                return None
            if verdict == _REJECT:
                self._skip(1, reason)
                continue
            frame = self._frame_at(0, declared)
            keep = min(self._prefix - 1, end) if self._guarded else 0
            self._advance(end - keep)
            self._behind = self._offset + keep
            return frame
