"""Frame traces: timestamped hex and decoded frames, card data masked, for any link.

A trace must be safe to attach to a bug report. In the hex dump of a frame that decodes, the bytes
of each field are masked where its decoded rendering (`protocol.message.display_value`) is: the PAN
in field 2 and in track 2/3 keeps its first 6 and last 4 digits, the rest of the track data, the
PIN block (52) and the keys (62) are starred, each at its own byte positions (`Dialect.layout`).
A frame that does not decode is dumped only up to the end of its bitmap; see `masked_hex`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from protocol.dialect import Dialect, get_dialect
from protocol.errors import ProtocolError
from protocol.fields import FieldSpec
from protocol.framing import TPDU_ID
from protocol.message import FieldValue, Message, display_value


def _masked_data_hex(spec: FieldSpec, value: FieldValue, shown: str, data: bytes) -> str:
    """The hex of one field's data with every character `shown` hides starred at its position.

    BCD digits are one hex character each (after a leading pad nibble when right-aligned), so the
    hex keeps exactly the digits the decoded part keeps; one-byte-per-character data keeps two
    hex characters per kept character. Anything else whose rendering hides it is starred whole.
    """
    text = data.hex().upper()
    if not isinstance(value, str) or len(shown) != len(value):
        return "*" * len(text)
    if spec.kind in ("n", "z") and spec.data_encoding == "bcd":
        width, lead = 1, 1 if spec.align == "right" and len(value) % 2 else 0
    elif len(data) == len(value):
        width, lead = 2, 0
    else:
        return "*" * len(text)
    chars = list(text)
    for i, (clear, masked) in enumerate(zip(value, shown, strict=True)):
        if clear != masked:
            at = lead + i * width
            chars[at:at + width] = "*" * width
    return "".join(chars)


def masked_hex(frame: bytes, message: Message | None, *, dialect: Dialect, header_bytes: int) -> str:
    """The frame as upper-case hex that carries no card data.

    Decoded (`message` given): every byte in clear but the data of the fields whose rendering in the
    trace is masked (length prefixes stay: they say how long the hidden value is).

    Undecodable (`message` None): the length prefix, TPDU, header, MTI and primary bitmap in clear,
    then `<N bytes withheld>`. Once a frame does not parse, its field boundaries cannot be trusted - a
    flipped bitmap bit makes field 3 read the PAN - so no field can be masked by number, and a
    digit-run masker would miss the PIN block and track 2 after the separator. The header, MTI and
    bitmap are what someone debugging a host needs next to the decode error, which names the field
    and the byte offset (from the MTI) where parsing stopped. The secondary bitmap is withheld too:
    with bit 1 flipped on, those 8 bytes are the PAN. When the dialect has a TPDU and the frame's is
    not there (0x60), even the "MTI" may be card data, so only the length prefix is shown. No digest
    of the rest is written: an unkeyed hash over fields that are mostly guessable would let a reader
    confirm a guessed PAN.
    """
    head, body = frame[:header_bytes], frame[header_bytes:]
    spans = dialect.layout(body)
    if message is None:
        prefix = dialect.framing.length_format.size
        if dialect.framing.tpdu and frame[prefix:prefix + 1] != bytes([TPDU_ID]):
            head, body, spans = frame[:prefix], frame[prefix:], []
        primary = 8 if dialect.bitmap_encoding == "binary" else 16
        readable = max((min(end, start + primary) if number == 1 else end
                        for number, start, end in spans if number in (0, 1)), default=0)
        withheld = len(body) - readable
        return (head + body[:readable]).hex().upper() + (f"<{withheld} bytes withheld>" if withheld else "")
    out = [head.hex().upper()]
    for number, start, end in spans:
        raw = body[start:end]
        value = message.fields.get(number)
        if value is None:  # MTI and bitmap
            out.append(raw.hex().upper())
            continue
        shown = display_value(number, value, mti=message.mti)
        if shown == (value.hex().upper() if isinstance(value, bytes) else value):
            out.append(raw.hex().upper())
            continue
        spec = dialect.specs[number]
        cut = spec.prefix_size
        out.append(raw[:cut].hex().upper() + _masked_data_hex(spec, value, shown, raw[cut:]))
    return "".join(out)


def describe(message: Message) -> str:
    parts = [f"MTI {message.mti}"]
    for n in sorted(message.fields):
        parts.append(f"{n}={display_value(n, message.fields[n], mti=message.mti)}")
    return " ".join(parts)


class FrameTracer:
    """A link trace hook `(direction, frame_bytes)` that appends to a file (thread-safe, line-buffered)."""

    def __init__(self, stream: IO[str], *, dialect: Dialect, clock: Callable[[], float] = time.time,
                 header_bytes: int = 13, owns: bool = False) -> None:
        self._stream = stream
        self._dialect = dialect
        self._clock = clock
        self._skip = header_bytes  # length prefix + TPDU + header before the MTI
        self._owns = owns
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, *, dialect: str = "cup-pos") -> FrameTracer:
        stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
        d = get_dialect(dialect)
        prefix = d.framing.length_format.size
        return cls(stream, dialect=d, owns=True,
                   header_bytes=prefix + (5 if d.framing.tpdu else 0) + (6 if d.framing.header else 0))

    def __call__(self, direction: str, frame: bytes) -> None:
        body = frame[self._skip:] if len(frame) > self._skip else b""
        message: Message | None
        try:
            message = self._dialect.decode(body)
            decoded = describe(message)
        except ProtocolError as exc:
            message, decoded = None, f"undecodable: {exc}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._clock()))
        shown = masked_hex(frame, message, dialect=self._dialect, header_bytes=self._skip)
        line = f"{stamp} {direction} {len(frame)}B {shown}\n    {decoded}\n"
        with self._lock:
            self._stream.write(line)

    def close(self) -> None:
        if self._owns:
            self._stream.close()
