"""The terminal's battery: level, drain per operation and over time, charging, thresholds, power loss.

The level is a float 0..100 (percent). Time-based drain (idle) or charging is applied from the injected
clock whenever the battery is asked (`update()`, `status()`, `consume()`), so a virtual clock that jumps
two hours drains two hours' worth at once. Each operation costs a configurable amount (a printed line
costs more than a swipe); devices built with a battery charge their own operations. On mains
(plugged in) the adapter powers the operations and they cost the battery nothing - otherwise a
terminal on its charging base would die of a busy day, which real ones do not (a load run of a few
hundred sales per terminal used to end in "battery critical").

Thresholds (source: "keep the battery at 50% or more"): below `low` (default 50) the terminal warns;
below `critical` (default 10) it must refuse new transactions and close the day (settle, sign off)
before power-down. That policy belongs to the state machine; the battery reports the flags.

The power goes off when the level reaches 0 while unplugged, or when the `power_loss` fault fires during
`update()` (a sudden cut: connector jolt, battery pulled). The terminal stays off until `power_on()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from terminal.hardware.faults import FaultPoints, declare

Clock = Callable[[], float]

#: Percent of a full battery each operation costs.
DEFAULT_OP_COSTS: Mapping[str, float] = MappingProxyType(
    {
        "swipe": 0.005,
        "chip": 0.01,
        "contactless": 0.02,
        "print_line": 0.005,  # a 40-line receipt costs 0.2%
        "signature": 0.01,
        "network": 0.02,  # one request/response exchange
        "display": 0.0,
    }
)


@dataclass(frozen=True, slots=True)
class BatteryStatus:
    level: float
    charging: bool
    low: bool
    critical: bool
    powered: bool

    @property
    def can_transact(self) -> bool:
        """False below the critical threshold (or without power): refuse new transactions."""
        return self.powered and not self.critical


class Battery:
    FAULT_NAMES = declare(
        "battery",
        {
            "power_loss": "sudden power cut at the next update(): the terminal is off until power_on()",
        },
    )

    __slots__ = (
        "_charging",
        "_clock",
        "_cut",
        "_last",
        "_level",
        "_op_costs",
        "charge_per_hour",
        "critical_threshold",
        "faults",
        "idle_drain_per_hour",
        "low_threshold",
        "power_losses",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        level: float = 100.0,
        low: float = 50.0,
        critical: float = 10.0,
        idle_drain_per_hour: float = 2.0,
        charge_per_hour: float = 30.0,
        op_costs: Mapping[str, float] | None = None,
        plugged_in: bool = False,
    ) -> None:
        if not 0.0 <= critical <= low <= 100.0:
            raise ValueError(f"thresholds must satisfy 0 <= critical <= low <= 100, got {critical}, {low}")
        if idle_drain_per_hour < 0 or charge_per_hour < 0:
            raise ValueError("drain and charge rates must be >= 0")
        if not 0.0 <= level <= 100.0:
            raise ValueError(f"battery level must be within 0..100, got {level!r}")
        self._clock = clock
        self._last = clock()
        self._level = float(level)
        self.low_threshold = float(low)
        self.critical_threshold = float(critical)
        self.idle_drain_per_hour = float(idle_drain_per_hour)
        self.charge_per_hour = float(charge_per_hour)
        if op_costs is None:
            self._op_costs = DEFAULT_OP_COSTS
        else:
            for op, cost in op_costs.items():
                if cost < 0:
                    raise ValueError(f"battery cost of {op!r} must be >= 0, got {cost}")
            self._op_costs = MappingProxyType({**DEFAULT_OP_COSTS, **op_costs})
        self._charging = bool(plugged_in)
        self._cut = False
        self.power_losses = 0
        self.faults = FaultPoints("battery", self.FAULT_NAMES, rng)

    # Time ----------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed <= 0:
            return
        self._last = now
        if self._cut:
            return  # powered off: no idle drain (charging while off is ignored, kept simple)
        hours = elapsed / 3600.0
        if self._charging:
            self._level = min(100.0, self._level + self.charge_per_hour * hours)
        else:
            self._level = max(0.0, self._level - self.idle_drain_per_hour * hours)

    # Operations ----------------------------------------------------------------------------
    def consume(self, op: str, times: float = 1.0) -> float:
        """Charge `times` operations of kind `op`; returns the new level."""
        try:
            cost = self._op_costs[op]
        except KeyError:
            raise KeyError(f"unknown battery operation {op!r}; known: {', '.join(self._op_costs)}") from None
        self._advance()
        if not self._charging:
            self._level = max(0.0, self._level - cost * times)
        return self._level

    def op_cost(self, op: str) -> float:
        return self._op_costs[op]

    def update(self) -> BatteryStatus:
        """Apply drain/charge up to now and check the `power_loss` fault; the driver's periodic tick."""
        self._advance()
        if not self._cut and self.faults.fires("power_loss"):
            self._cut = True
            self.power_losses += 1
        return self._status()

    def status(self) -> BatteryStatus:
        self._advance()
        return self._status()

    def _status(self) -> BatteryStatus:
        level = self._level
        return BatteryStatus(
            level=level,
            charging=self._charging,
            low=level < self.low_threshold,
            critical=level < self.critical_threshold,
            powered=self.powered,
        )

    # Controls ------------------------------------------------------------------------------
    def plug_in(self) -> None:
        self._advance()
        self._charging = True

    def unplug(self) -> None:
        self._advance()
        self._charging = False

    def set_level(self, level: float) -> None:
        if not 0.0 <= level <= 100.0:
            raise ValueError(f"battery level must be within 0..100, got {level!r}")
        self._advance()
        self._level = float(level)

    def cut_power(self) -> None:
        """Cut the power now (what the `power_loss` fault does)."""
        self._advance()
        if not self._cut:
            self._cut = True
            self.power_losses += 1

    def power_on(self) -> bool:
        """Restore power after a cut; True when the terminal can run (charge left or mains)."""
        self._advance()
        self._cut = False
        return self.powered

    # Read-outs -----------------------------------------------------------------------------
    @property
    def level(self) -> float:
        self._advance()
        return self._level

    @property
    def charging(self) -> bool:
        return self._charging

    @property
    def powered(self) -> bool:
        return not self._cut and (self._level > 0.0 or self._charging)

    def hours_left(self) -> float | None:
        """Idle hours until empty at the idle drain rate (None while charging or with no idle drain)."""
        self._advance()
        if self._charging or self.idle_drain_per_hour <= 0:
            return None
        return self._level / self.idle_drain_per_hour

    def hours_to_critical(self) -> float | None:
        """Idle hours until the critical threshold (0 when already below it; None while charging)."""
        left = self.hours_left()
        if left is None:
            return None
        return max(0.0, (self._level - self.critical_threshold) / self.idle_drain_per_hour)

    def __repr__(self) -> str:
        return f"Battery(level={self._level:.2f}, charging={self._charging}, powered={self.powered})"
