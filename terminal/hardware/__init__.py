"""The terminal's hardware models: card reader, printer, battery, display, keypad, signature pad.

Plain, deterministic Python objects with no I/O: randomness comes from one seeded `random.Random`, time
from an injected clock (the event loop's `loop.time`). An asyncio driver calls them and turns their
outcomes (a `CardReadError`, a `PrinterError`, a low battery, a diagnostics key event) into triggers of
the terminal's state machine. Each device has named fault points (`catalogue()` lists them all) that a
fault plan arms by count, probability or always.

    hw = Hardware(HardwareProfile(seed=7, paper_lines=200), clock=loop.time)
    hw.fault("reader.read_error").arm(count=1)
    hw.reader.read(card, "swipe")      # raises CardReadError("read error, swipe again")

Built for fleets: every object uses __slots__, queues and lists are created on first use, and one
`HardwareProfile` is shared by all terminals that use it (its default `op_costs` is one shared
read-only mapping). The `random.Random` (about 2.9 KB) would be the biggest part of a bundle, and an
idle terminal never draws from it: each terminal gets a `LazyRandom`, which creates its own
`random.Random(seed)` on the first draw, so every terminal keeps its own seeded sequence.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from terminal.hardware.battery import DEFAULT_OP_COSTS, Battery, BatteryStatus
from terminal.hardware.card_reader import (
    FIELD_WEAR_CAP,
    FIELD_WEAR_RATE,
    CardRead,
    CardReader,
    CardReadError,
)
from terminal.hardware.cards import Card, CardCatalogue, named_card, tlv_decode, tlv_encode
from terminal.hardware.display import Display, KeyEvent, Keypad
from terminal.hardware.faults import FaultPoint, FaultPoints, catalogue, fault_point_names
from terminal.hardware.printer import DEFAULT_PAPER_LINES, DEFAULT_PAPER_LOW_LINES, Printer, PrinterError, PrintResult
from terminal.hardware.receipts import (
    Receipt,
    ReceiptData,
    SettlementData,
    declined_receipt,
    settlement_voucher,
    signoff_voucher,
    transaction_receipt,
)
from terminal.hardware.signature_pad import SignaturePad, SignatureResult

__all__ = [
    "FIELD_WEAR_CAP",
    "FIELD_WEAR_RATE",
    "Battery",
    "BatteryStatus",
    "Card",
    "CardCatalogue",
    "CardRead",
    "CardReadError",
    "CardReader",
    "Display",
    "FaultPoint",
    "FaultPoints",
    "Hardware",
    "HardwareProfile",
    "KeyEvent",
    "Keypad",
    "LazyRandom",
    "PrintResult",
    "Printer",
    "PrinterError",
    "Receipt",
    "ReceiptData",
    "SettlementData",
    "SignaturePad",
    "SignatureResult",
    "catalogue",
    "declined_receipt",
    "fault_point_names",
    "named_card",
    "settlement_voucher",
    "signoff_voucher",
    "tlv_decode",
    "tlv_encode",
    "transaction_receipt",
]


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """How a terminal's hardware is built. Immutable: one profile can serve a whole fleet."""

    seed: int = 0
    serial: str = "00000001"  # interface device serial (EMV 9F1E), 8 characters
    # printer
    paper_lines: int = DEFAULT_PAPER_LINES
    paper_low_lines: int = DEFAULT_PAPER_LOW_LINES
    keep_printed: int = 10  # whole receipts kept in `printer.printed` for inspection (the journal keeps them all)
    # battery
    battery_level: float = 100.0
    battery_low: float = 50.0
    battery_critical: float = 10.0
    idle_drain_per_hour: float = 2.0
    charge_per_hour: float = 30.0
    plugged_in: bool = False
    op_costs: Mapping[str, float] = dataclasses.field(default_factory=lambda: DEFAULT_OP_COSTS)  # shared, read-only
    # card reader
    pin_capable: bool = True
    base_read_error_rate: float = 0.0
    wear_rate: float = 0.0  # FIELD_WEAR_RATE for the source's "oxidised contacts" figures
    wear_cap: float = 0.5
    # signature pad
    signature_behaviour: str = "sign"  # sign | refuse | ignore
    sign_after_s: float = 5.0
    # display / keypad
    display_history: int = 20  # screens kept in `display.history`
    diagnostics_hold_s: float = 3.0

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> HardwareProfile:
        """A profile from config (e.g. a TOML table); unknown keys are an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown hardware settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> HardwareProfile:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_PROFILE = HardwareProfile()


class LazyRandom:
    """`random.Random(seed)`, created on the first draw: the same sequence, 48 bytes until then.

    A `random.Random` holds its Mersenne Twister state inline (about 2.9 KB); a signed-in idle
    terminal never draws from its rng, so a fleet of 10,000 would carry 29 MB of unused state. One rng
    shared by the fleet would be as cheap but would tie each terminal's draws to the others' (no
    per-terminal seeded determinism); this keeps one sequence per terminal and pays for it on use.
    Every attribute (`random`, `getrandbits`, `seed`, `getstate`, ...) is the real generator's.
    """

    __slots__ = ("_random", "_seed")

    def __init__(self, seed: int | float | str | bytes | bytearray | None = None) -> None:
        self._seed = seed
        self._random: random.Random | None = None

    @property
    def real(self) -> random.Random:
        """The `random.Random` behind this one (created now if no draw made it yet)."""
        if self._random is None:
            self._random = random.Random(self._seed)
            self._seed = None
        return self._random

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __repr__(self) -> str:
        return f"LazyRandom({'drawn' if self._random is not None else f'seed={self._seed!r}'})"


class Hardware:
    """One terminal's devices, built from a profile, sharing one seeded rng and one clock.

    The battery and the display exist from the start (power-on and every screen use them); the
    reader, printer, keypad and signature pad are built on first use, from the same profile, rng and
    clock: building them draws nothing from the rng, so when they come to exist changes no sequence,
    and a signed-in idle terminal of a fleet does not carry them. Their settings are checked here,
    so a bad profile still fails when the hardware is built.
    """

    __slots__ = ("_clock", "_keypad", "_printer", "_reader", "_signature_pad", "battery", "display", "profile", "rng")

    def __init__(
        self,
        profile: HardwareProfile | Mapping[str, object] | None = None,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        seed: int | None = None,
    ) -> None:
        if profile is None:
            profile = DEFAULT_PROFILE
        elif not isinstance(profile, HardwareProfile):
            profile = HardwareProfile.from_dict(profile)
        if profile is not DEFAULT_PROFILE:  # the default's settings are known good
            CardReader.check(base_error_rate=profile.base_read_error_rate, wear_rate=profile.wear_rate,
                             wear_cap=profile.wear_cap)
            Printer.check(paper_lines=profile.paper_lines, paper_low_lines=profile.paper_low_lines,
                          keep_printed=profile.keep_printed)
            SignaturePad.check(behaviour=profile.signature_behaviour, sign_after_s=profile.sign_after_s)
        self.profile = profile
        if rng is None:  # duck-typed as a random.Random: it forwards every attribute to one
            rng = cast(random.Random, LazyRandom(profile.seed if seed is None else seed))
        self.rng = rng
        self._clock = clock
        self.battery = Battery(
            clock=clock,
            rng=rng,
            level=profile.battery_level,
            low=profile.battery_low,
            critical=profile.battery_critical,
            idle_drain_per_hour=profile.idle_drain_per_hour,
            charge_per_hour=profile.charge_per_hour,
            op_costs=None if profile.op_costs == DEFAULT_OP_COSTS else profile.op_costs,
            plugged_in=profile.plugged_in,
        )
        self.display = Display(clock=clock, history_size=profile.display_history)
        self._reader: CardReader | None = None
        self._printer: Printer | None = None
        self._keypad: Keypad | None = None
        self._signature_pad: SignaturePad | None = None

    @property
    def reader(self) -> CardReader:
        if self._reader is None:
            profile = self.profile
            self._reader = CardReader(
                rng=self.rng,
                clock=self._clock,
                battery=self.battery,
                pin_capable=profile.pin_capable,
                base_error_rate=profile.base_read_error_rate,
                wear_rate=profile.wear_rate,
                wear_cap=profile.wear_cap,
                ifd_serial=profile.serial,
            )
        return self._reader

    @property
    def printer(self) -> Printer:
        if self._printer is None:
            profile = self.profile
            self._printer = Printer(
                rng=self.rng,
                battery=self.battery,
                paper_lines=profile.paper_lines,
                paper_low_lines=profile.paper_low_lines,
                keep_printed=profile.keep_printed,
            )
        return self._printer

    @property
    def keypad(self) -> Keypad:
        if self._keypad is None:
            self._keypad = Keypad(clock=self._clock, diagnostics_hold_s=self.profile.diagnostics_hold_s)
        return self._keypad

    @property
    def signature_pad(self) -> SignaturePad:
        if self._signature_pad is None:
            profile = self.profile
            self._signature_pad = SignaturePad(
                rng=self.rng,
                behaviour=profile.signature_behaviour,
                sign_after_s=profile.sign_after_s,
                battery=self.battery,
            )
        return self._signature_pad

    @classmethod
    def from_config(cls, config: object, *, clock: Callable[[], float], rng: random.Random | None = None) -> Hardware:
        """Build from a `terminal.config.TerminalConfig`: its `seed`, `serial` and `[terminal.hardware]` table.

        Keys in the hardware table win over the terminal's seed and serial.
        """
        settings: dict[str, object] = {"seed": getattr(config, "seed", 0)}
        serial = getattr(config, "serial", "")
        if serial:
            settings["serial"] = str(serial)[-8:]
        settings.update(getattr(config, "hardware", None) or {})
        return cls(HardwareProfile.from_dict(settings), clock=clock, rng=rng)

    def _fault_sets(self) -> tuple[FaultPoints, ...]:
        return (self.battery.faults, self.printer.faults, self.reader.faults, self.signature_pad.faults)

    def all_fault_points(self) -> dict[str, FaultPoint]:
        """{"reader.read_error": FaultPoint, ...} for every fault point of this terminal."""
        return {name: point for faults in self._fault_sets() for name, point in faults.items()}

    def fault(self, name: str) -> FaultPoint:
        """One fault point by full name ("printer.jam"); KeyError naming the known ones otherwise."""
        device, _, short = name.partition(".")
        for faults in self._fault_sets():
            if faults.device == device and short in faults:
                return faults[short]
        raise KeyError(f"no fault point {name!r}; known: {', '.join(fault_point_names())}")

    def disarm_all(self) -> None:
        for faults in self._fault_sets():
            faults.disarm_all()

    def describe_faults(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for faults in self._fault_sets():
            out.update(faults.describe())
        return out

    def diagnostics(self) -> dict[str, object]:
        """What the terminal's diagnostic screen and the status upload report about its hardware."""
        battery = self.battery.status()
        return {
            "battery": {
                "level": round(battery.level, 2),
                "charging": battery.charging,
                "low": battery.low,
                "critical": battery.critical,
                "powered": battery.powered,
            },
            "printer": self.printer.status(),
            "reader": self.reader.diagnostics(),
            "faults_armed": sorted(n for n, d in self.describe_faults().items() if d["armed"]),
        }

    def __repr__(self) -> str:
        return f"Hardware(seed={self.profile.seed}, {self.battery!r}, {self.printer!r})"
