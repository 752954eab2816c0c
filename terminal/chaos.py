"""Message-level faults on a link: drop, delay, duplicate, corrupt - matched on what the frame *means*.

`FaultyLink` wraps any `FrameLink` (TCP, serial, memory) and applies `MessageFault` rules to frames
going out ("tx") or coming in ("rx"), matched by MTI, processing code, STAN, n-th occurrence or
probability, drawn from a seeded RNG so a run replays exactly (DESIGN principle 6: a fault changes
what the link does; the terminal and host react as they would to the real thing).

    link = FaultyLink(inner, dialect)
    link.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))   # FM-03
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from protocol.dialect import Dialect
from protocol.errors import ProtocolError
from protocol.framing import Frame, encode_frame
from protocol.message import Message

from .links.base import FrameLink

ACTIONS = ("drop", "delay", "duplicate", "corrupt_mac", "corrupt_data", "override_rc", "garbage")
_DIGITS = {"mti": 4, "processing_code": 6, "stan": 6}  # match fields: ISO 8583 numeric strings of this length


def check_number(name: str, value: Any, *, low: float = 0, high: float | None = None, integer: bool = False,
                 exclusive: bool = False, unit: str = "") -> None:
    """Raise ValueError unless `value` is a finite number (an int when `integer`) within the range.

    Why so strict: rules come from TOML and JSON written by hand. A string fails later with a TypeError
    far from the file ("'<=' not supported ..."), a bool is an int to Python but never what was meant,
    and NaN compares false with everything, so it slips through any range check and the fault silently
    never (or always) fires. `exclusive` makes `low` itself invalid (a delay of 0 is no delay).
    """
    kind = "an integer" if integer else "a number"
    bound = f"from {low:g} to {high:g}" if high is not None else f"{'>' if exclusive else '>='} {low:g}"
    wanted = f"{kind} {bound}"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if ok:
        ok = (value > low if exclusive else value >= low) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{name} must be {wanted}{unit}, got {value!r}")


def check_text(name: str, value: Any, *, pattern: str | None = None, example: str = "") -> None:
    """Raise ValueError unless `value` is a string (matching `pattern`): `mti = 210` in TOML is an integer
    that would never equal the frame's "0210", a rule that silently never fires."""
    if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
        like = f" like {example!r}" if example else ""
        raise ValueError(f"{name} must be a string{like}, got {value!r}")


@dataclass
class MessageFault:
    """One rule. Unset match fields match anything; `count` limits how many times it fires.

    Every field is checked on construction (type, range, the parameter the action needs), so a bad rule
    from a file or the control API is refused where it is written, not skipped or crashed on mid-run.
    """

    action: str
    direction: str = "rx"  # tx: frames this end sends; rx: frames it receives
    mti: str | None = None
    processing_code: str | None = None
    stan: str | None = None
    nth: int | None = None  # fire only on the n-th matching frame (1-based)
    probability: float | None = None
    count: int | None = None
    delay: float | None = None  # seconds, for "delay" (required there: no default that means "no delay")
    rc: str = "96"  # for "override_rc" (96: system malfunction, the usual host failure)
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; actions: {', '.join(ACTIONS)}")
        if self.direction not in ("tx", "rx"):
            raise ValueError(f"fault direction must be tx or rx, got {self.direction!r}")
        for name, length in _DIGITS.items():
            value = getattr(self, name)
            if value is not None:
                check_text(name, value, pattern=rf"\d{{{length}}}", example="0210" if length == 4 else "000000")
        if self.nth is not None:
            check_number("nth", self.nth, low=1, integer=True)
        if self.count is not None:  # 0 would be a rule that never fires, silently
            check_number("count", self.count, low=1, integer=True)
        if self.probability is not None:
            check_number("probability", self.probability, high=1)
        if self.action == "delay":
            if self.delay is None:
                raise ValueError("action 'delay' needs delay = seconds (a number > 0)")
            check_number("delay", self.delay, exclusive=True, unit=" (seconds)")
        elif self.delay is not None:
            raise ValueError(f"delay applies to action 'delay' only, not {self.action!r}")
        check_text("rc", self.rc, pattern="[0-9A-Za-z]{2}", example="96")

    def matches(self, direction: str, message: Message | None) -> bool:
        if direction != self.direction or (self.count is not None and self.fired >= self.count):
            return False
        if message is None:
            return self.mti is None and self.processing_code is None and self.stan is None
        if self.mti is not None and message.mti != self.mti:
            return False
        if self.processing_code is not None and message.get(3) != self.processing_code:
            return False
        return self.stan is None or message.get(11) == self.stan

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class FaultSet:
    """The rules of one link, switchable at run time."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[MessageFault] = []
        self.toxics: list[Any] = []  # terminal.faultplan.LinkToxic
        self.rng = random.Random(seed)
        self.log: list[tuple[str, str, str]] = []  # (action, direction, MTI) of each fault that fired

    def add(self, fault: MessageFault) -> MessageFault:
        self.rules.append(fault)
        return fault

    def add_toxic(self, toxic: Any) -> Any:
        self.toxics.append(toxic)
        return toxic

    def clear(self) -> None:
        self.rules.clear()
        self.toxics.clear()

    def toxics_for(self, direction: str) -> list[Any]:
        """Link toxics that act on frames going `tx` (upstream) or `rx` (downstream) at this end."""
        wanted = "upstream" if direction == "tx" else "downstream"
        out = []
        for toxic in self.toxics:
            if toxic.direction not in (wanted, "both"):
                continue
            if toxic.probability is not None and self.rng.random() >= toxic.probability:
                continue
            out.append(toxic)
        return out

    def decide(self, direction: str, message: Message | None) -> MessageFault | None:
        for rule in self.rules:
            if not rule.matches(direction, message):
                continue
            rule.seen += 1
            if rule.nth is not None and rule.seen != rule.nth:
                continue
            if rule.probability is not None and self.rng.random() >= rule.probability:
                continue
            rule.fired += 1
            self.log.append((rule.action, direction, message.mti if message else "?"))
            return rule
        return None


class FaultyLink(FrameLink):
    """A link whose frames pass through a `FaultSet` in both directions."""

    def __init__(self, inner: FrameLink, dialect: Dialect, faults: FaultSet | None = None) -> None:
        self.inner = inner
        self.dialect = dialect
        self.faults = faults or FaultSet()
        self._queued: list[Frame] = []
        self._bytes: dict[str, int] = {}

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def peer(self) -> str:
        return self.inner.peer

    @property
    def trace(self) -> Any:  # type: ignore[override]
        return self.inner.trace

    @trace.setter
    def trace(self, hook: Any) -> None:
        self.inner.trace = hook

    def _decode(self, frame: Frame) -> Message | None:
        try:
            return self.dialect.decode(frame.payload)
        except ProtocolError:
            return None

    def _apply(self, rule: MessageFault, frame: Frame, message: Message | None) -> list[Frame]:
        if rule.action == "drop":
            return []
        if rule.action == "duplicate":
            return [frame, frame]
        if rule.action == "corrupt_mac" and message is not None and isinstance(message.get(64), bytes):
            message[64] = bytes(b ^ 0xFF for b in message[64])
            return [Frame(frame.tpdu, frame.header, self.dialect.encode(message))]
        if rule.action == "corrupt_data" and message is not None and isinstance(message.get(62), bytes):
            data = bytearray(message[62])
            if data:
                data[len(data) // 2] ^= 0xFF  # one flipped byte in the payload (a noisy line, a bad cache)
            message[62] = bytes(data)
            return [Frame(frame.tpdu, frame.header, self.dialect.encode(message))]
        if rule.action == "override_rc" and message is not None and 39 in message:
            message[39] = rule.rc
            return [Frame(frame.tpdu, frame.header, self.dialect.encode(message))]
        if rule.action == "garbage":
            return [Frame(frame.tpdu, frame.header, b"\xff" * 8)]
        return [frame]

    async def _toxic(self, direction: str, frame: Frame) -> bool:
        """Apply link toxics at frame level; False when the frame must not go through."""
        for toxic in self.faults.toxics_for(direction):
            kind = toxic.toxic
            if kind == "latency":
                jitter = toxic.jitter_ms * (2 * self.faults.rng.random() - 1)
                await asyncio.sleep(max(0.0, toxic.latency_ms + jitter) / 1000)
            elif kind == "bandwidth" and toxic.rate_kbps > 0:
                await asyncio.sleep(len(frame.payload) * 8 / (toxic.rate_kbps * 1000))
            elif kind == "timeout":
                self.faults.log.append(("timeout", direction, "?"))
                return False
            elif kind == "limit_data":
                self._bytes[direction] = self._bytes.get(direction, 0) + len(frame.payload)
                if self._bytes[direction] > toxic.bytes:
                    self.faults.log.append((kind, direction, "?"))
                    await self.inner.close()
                    return False
            elif kind in ("reset_peer", "down"):  # down: the network went away under an open connection
                self.faults.log.append((kind, direction, "?"))
                await self.inner.close()
                return False
            elif kind == "slicer" and direction == "tx" and hasattr(self.inner, "send_bytes"):
                data = encode_frame(frame)
                size = max(1, toxic.bytes or 1)
                for start in range(0, len(data), size):
                    await self.inner.send_bytes(data[start:start + size])
                    await asyncio.sleep(toxic.latency_ms / 1000)
                self.faults.log.append((kind, direction, "?"))
                return False  # already on the wire, in slices
        return True

    async def send(self, frame: Frame) -> None:
        faults = self.faults
        if not faults.rules and not faults.toxics:  # nothing switched on: no decode, no toll on a load run
            await self.inner.send(frame)
            return
        if not await self._toxic("tx", frame):
            return
        message = self._decode(frame)
        rule = self.faults.decide("tx", message)
        if rule is None:
            await self.inner.send(frame)
            return
        if rule.action == "delay":
            await asyncio.sleep(rule.delay or 0.0)
            await self.inner.send(frame)
            return
        for out in self._apply(rule, frame, message):
            await self.inner.send(out)

    async def receive(self) -> Frame:
        while True:
            if self._queued:
                return self._queued.pop(0)
            frame = await self.inner.receive()
            if not self.faults.rules and not self.faults.toxics:
                return frame
            if not await self._toxic("rx", frame):
                continue
            message = self._decode(frame)
            rule = self.faults.decide("rx", message)
            if rule is None:
                return frame
            if rule.action == "delay":
                await asyncio.sleep(rule.delay or 0.0)
                return frame
            self._queued.extend(self._apply(rule, frame, message))

    async def close(self) -> None:
        await self.inner.close()
