"""The display and the keypad.

`Display.show(*lines)` replaces what the screen shows and records it, with the clock's time, in a
bounded history (created on first use). The state machine writes merchant-facing text only: a PAN is
shown masked (`protocol.message.mask_pan`), never in full.

`Keypad` turns key presses into `KeyEvent`s on a queue. Holding Confirm for 3 s or more yields a
`diagnostics` event (source: "hold Confirm 3 s for network diagnostic mode"). Tests use the sync side
(`press`, `hold`, `get_nowait`, `drain`); the asyncio driver awaits `get()`. A hold can be given as a
duration (`hold(key, seconds)`) or measured on the clock (`key_down` ... `key_up`), so a virtual clock
drives it too.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

Clock = Callable[[], float]


class Display:
    """The screen: what it shows now and the last `history_size` screens, each with the clock's time.

    The history is a ring in one flat list - time, lines, time, lines, ... - created on first use,
    grown to 2 x `history_size` items and then overwritten in place: no deque (760 bytes even empty)
    and no (time, lines) tuple per screen, since a fleet keeps 10,000 of these.
    """

    __slots__ = ("_clock", "_history", "_next", "history_size", "lines")

    def __init__(self, *, clock: Clock, history_size: int = 20) -> None:
        if history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {history_size}")
        self._clock = clock
        self.history_size = history_size
        self.lines: tuple[str, ...] = ()
        self._history: list[float | tuple[str, ...]] | None = None
        self._next = 0  # once the ring is full: the index of its oldest time, the next to overwrite

    def show(self, *lines: str) -> None:
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"display lines must be str, got {type(line).__name__}")
        # one copy of each screen line however many terminals show it ("FW 3.0.8", "BATCH 000001"): a
        # fleet's displays and their histories otherwise hold thousands of equal strings
        lines = tuple(map(sys.intern, lines))
        self.lines = lines
        if self.history_size:
            ring = self._history
            if ring is None:
                ring = self._history = []
            if len(ring) < 2 * self.history_size:
                ring.append(self._clock())
                ring.append(lines)
            else:
                i = self._next
                ring[i] = self._clock()
                ring[i + 1] = lines
                self._next = (i + 2) % len(ring)

    def clear(self) -> None:
        self.show()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def shows(self, text: str) -> bool:
        """True when `text` appears on the screen now (case-insensitive)."""
        return text.lower() in self.text.lower()

    @property
    def history(self) -> list[tuple[float, tuple[str, ...]]]:
        """(time, lines) of the last `history_size` screens, oldest first."""
        ring = self._history
        if ring is None:
            return []
        if self._next:
            ring = ring[self._next:] + ring[:self._next]
        return cast(list[tuple[float, tuple[str, ...]]], list(zip(ring[0::2], ring[1::2], strict=True)))

    def ever_showed(self, text: str) -> bool:
        """True when `text` appeared on any screen still in the history (case-insensitive)."""
        needle = text.lower()
        return any(needle in "\n".join(lines).lower() for _, lines in self.history)

    def __repr__(self) -> str:
        return f"Display({list(self.lines)!r})"


KEYS = frozenset(
    {*"0123456789", "00", ".", "confirm", "cancel", "clear", "menu", "func", "up", "down", "alpha", "feed"}
)
CONFIRM = "confirm"
DIAGNOSTICS_HOLD_S = 3.0


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """kind: "press" (a key), "hold" (a long press of a key with no hold function) or "diagnostics"."""

    kind: str
    key: str
    at: float
    seconds: float = 0.0


class Keypad:
    __slots__ = ("_clock", "_down", "_queue", "diagnostics_hold_s", "presses")

    def __init__(self, *, clock: Clock, diagnostics_hold_s: float = DIAGNOSTICS_HOLD_S) -> None:
        self._clock = clock
        self.diagnostics_hold_s = diagnostics_hold_s
        self._queue: asyncio.Queue[KeyEvent] | None = None
        self._down: dict[str, float] | None = None
        self.presses = 0

    @staticmethod
    def _check(key: str) -> str:
        if key not in KEYS:
            raise ValueError(f"unknown key {key!r}; keys: {', '.join(sorted(KEYS))}")
        return key

    def _emit(self, event: KeyEvent) -> KeyEvent:
        if self._queue is None:
            self._queue = asyncio.Queue()  # binds to a loop only when someone awaits get()
        self._queue.put_nowait(event)
        return event

    # Input (what a person does) --------------------------------------------------------------
    def press(self, key: str) -> KeyEvent:
        self._check(key)
        self.presses += 1
        return self._emit(KeyEvent("press", key, self._clock()))

    def enter(self, keys: str) -> list[KeyEvent]:
        """Press each character of `keys` ("1234" for a PIN-less amount entry, "12.34")."""
        return [self.press(ch) for ch in keys]

    def hold(self, key: str, seconds: float) -> KeyEvent:
        """A key held for `seconds` (the clock is not advanced): Confirm >= 3 s -> diagnostics."""
        self._check(key)
        if seconds < 0:
            raise ValueError(f"hold time must be >= 0, got {seconds}")
        self.presses += 1
        return self._emit(self._release_event(key, self._clock(), seconds))

    def key_down(self, key: str) -> None:
        """Start holding `key`; `key_up` emits the event measured on the clock."""
        self._check(key)
        if self._down is None:
            self._down = {}
        self._down.setdefault(key, self._clock())

    def key_up(self, key: str) -> KeyEvent:
        if self._down is None or key not in self._down:
            raise ValueError(f"key {key!r} is not held down")
        started = self._down.pop(key)
        self.presses += 1
        now = self._clock()
        return self._emit(self._release_event(key, now, now - started))

    def _release_event(self, key: str, at: float, seconds: float) -> KeyEvent:
        if seconds >= self.diagnostics_hold_s:
            kind = "diagnostics" if key == CONFIRM else "hold"
            return KeyEvent(kind, key, at, seconds)
        return KeyEvent("press", key, at, seconds)

    # Output (what the driver reads) ----------------------------------------------------------
    @property
    def pending(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def get_nowait(self) -> KeyEvent | None:
        if self._queue is None or self._queue.empty():
            return None
        return self._queue.get_nowait()

    def drain(self) -> list[KeyEvent]:
        out = []
        while (event := self.get_nowait()) is not None:
            out.append(event)
        return out

    async def get(self) -> KeyEvent:
        """Wait for the next key event (the asyncio driver's side)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        return await self._queue.get()

    def __repr__(self) -> str:
        return f"Keypad(pending={self.pending})"
