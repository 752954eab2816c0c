"""The e-signature pad: the customer signs, refuses, or walks away.

`capture(timeout_s)` decides at once what the customer does and returns a `SignatureResult` whose
`elapsed_s` says how long it took (the pad does no waiting itself: the asyncio driver sleeps that long
on the loop's clock, or calls `acapture`, which does). Outcomes:

- "captured": the customer signed after `sign_after_s` (<= timeout); `image` is a small PNG (well under
  the 512 bytes field 62 can carry), drawn from the seeded rng, so reproducible.
- "refused": the customer declined to sign (fault `refuse`, or behaviour "refuse").
- "timed_out": nothing within `timeout_s` (fault `timeout`, behaviour "ignore", or a slow signer).

A transaction whose signature was not captured stays approved and is marked unsigned (FM-11).
"""

from __future__ import annotations

import asyncio
import random
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from terminal.hardware.faults import FaultPoints, declare

if TYPE_CHECKING:
    from terminal.hardware.battery import Battery

BEHAVIOURS = ("sign", "refuse", "ignore")
IMAGE_WIDTH = 96
IMAGE_HEIGHT = 32
#: How long a refusing customer takes to press "refuse".
REFUSE_AFTER_S = 2.0


@dataclass(frozen=True, slots=True, repr=False)
class SignatureResult:
    status: str  # captured | refused | timed_out
    elapsed_s: float
    image: bytes | None = None

    @property
    def captured(self) -> bool:
        return self.status == "captured"

    def __repr__(self) -> str:
        size = f"{len(self.image)} bytes" if self.image is not None else None
        return f"SignatureResult({self.status!r}, elapsed_s={self.elapsed_s}, image={size})"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def signature_png(rng: random.Random, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> bytes:
    """A 1-bit greyscale PNG of a scribble: a random walk across the pad (deterministic for a seeded rng)."""
    rows = [bytearray(b"\xff" * ((width + 7) // 8)) for _ in range(height)]  # 1 = white paper
    y = height // 2
    for x in range(4, width - 4):
        y = min(height - 3, max(2, y + rng.choice((-2, -1, 0, 1, 2))))
        for dy in (0, 1):
            rows[y + dy][x // 8] &= ~(0x80 >> (x % 8)) & 0xFF  # 0 = black ink
    raw = b"".join(b"\x00" + bytes(row) for row in rows)  # filter type 0 per scanline
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


class SignaturePad:
    FAULT_NAMES = declare(
        "signature",
        {
            "refuse": "the customer refuses to sign: status 'refused'",
            "timeout": "the customer never signs: status 'timed_out' after the full timeout",
        },
    )

    __slots__ = ("_battery", "_rng", "behaviour", "captures", "faults", "refusals", "sign_after_s", "timeouts")

    @staticmethod
    def check(*, behaviour: str, sign_after_s: float) -> None:
        """ValueError for settings a pad cannot have (`Hardware` checks them before it builds one)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"signature behaviour must be one of {', '.join(BEHAVIOURS)}, got {behaviour!r}")
        if sign_after_s < 0:
            raise ValueError(f"sign_after_s must be >= 0, got {sign_after_s}")

    def __init__(
        self,
        *,
        rng: random.Random,
        behaviour: str = "sign",
        sign_after_s: float = 5.0,
        battery: Battery | None = None,
    ) -> None:
        self.check(behaviour=behaviour, sign_after_s=sign_after_s)
        self._rng = rng
        self._battery = battery
        self.behaviour = behaviour
        self.sign_after_s = float(sign_after_s)
        self.faults = FaultPoints("signature", self.FAULT_NAMES, rng)
        self.captures = 0
        self.refusals = 0
        self.timeouts = 0

    def capture(self, timeout_s: float) -> SignatureResult:
        if timeout_s <= 0:
            raise ValueError(f"signature timeout must be > 0 s, got {timeout_s}")
        if self._battery is not None:
            self._battery.consume("signature")
        if self.faults.fires("refuse") or self.behaviour == "refuse":
            self.refusals += 1
            return SignatureResult("refused", min(REFUSE_AFTER_S, timeout_s))
        if self.faults.fires("timeout") or self.behaviour == "ignore" or self.sign_after_s > timeout_s:
            self.timeouts += 1
            return SignatureResult("timed_out", float(timeout_s))
        self.captures += 1
        return SignatureResult("captured", self.sign_after_s, signature_png(self._rng))

    async def acapture(self, timeout_s: float) -> SignatureResult:
        """`capture`, then wait its `elapsed_s` on the running loop's clock."""
        result = self.capture(timeout_s)
        await asyncio.sleep(result.elapsed_s)
        return result

    def __repr__(self) -> str:
        return f"SignaturePad(behaviour={self.behaviour!r}, captures={self.captures})"
