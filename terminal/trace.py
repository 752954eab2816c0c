"""Frame traces: timestamped hex and decoded frames, card data masked, for any link.

A trace must be safe to attach to a bug report: the PAN (in field 2 and inside track data) shows
only its first 6 and last 4 digits, even in the hex dump, and PIN blocks and keys are starred out.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from protocol.dialect import Dialect, get_dialect
from protocol.errors import ProtocolError
from protocol.message import Message, display_value, mask_pan


def _secrets(message: Message) -> list[tuple[str, str]]:
    """(hex text to hide, replacement) pairs for the frame's hex dump."""
    out: list[tuple[str, str]] = []
    pans = {str(message[n]).split("D")[0] for n in (2, 35, 36) if isinstance(message.get(n), str)}
    for pan in pans:
        if len(pan) > 10:
            out.append((pan, mask_pan(pan)))
    for n in (52, 62):
        value = message.get(n)
        if isinstance(value, bytes) and value:
            out.append((value.hex(), "*" * (2 * len(value))))
    return out


def masked_hex(frame: bytes, message: Message | None) -> str:
    text = frame.hex().upper()
    if message is None:
        return text
    for secret, replacement in _secrets(message):
        text = re.sub(re.escape(secret), replacement, text, flags=re.IGNORECASE)
    return text


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
        line = f"{stamp} {direction} {len(frame)}B {masked_hex(frame, message)}\n    {decoded}\n"
        with self._lock:
            self._stream.write(line)

    def close(self) -> None:
        if self._owns:
            self._stream.close()
