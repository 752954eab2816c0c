"""The reference host's configuration: registry of merchants and terminals, policy, calendar.

From a TOML file (`possim host --config host.toml`) or from `TID:MID:TMK` specs on the command line,
where a merchant is created on the fly (T1, default name). Errors name the entry and the problem.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any


class HostConfigError(ValueError):
    """A host configuration entry that is missing or malformed."""


@dataclass
class Merchant:
    mid: str
    name: str
    settlement_type: str = "T1"  # T0: same day; T1: next business day

    def __post_init__(self) -> None:
        if len(self.mid) != 15:
            raise HostConfigError(f"merchant {self.mid!r}: id must be 15 characters")
        if self.settlement_type not in ("T0", "T1"):
            raise HostConfigError(f"merchant {self.mid}: settlement_type must be T0 or T1")


@dataclass
class TerminalEntry:
    tid: str
    mid: str
    tmk: str
    status: str = "active"  # active | disabled

    def __post_init__(self) -> None:
        if len(self.tid) != 8:
            raise HostConfigError(f"terminal {self.tid!r}: id must be 8 characters")
        try:
            if len(bytes.fromhex(self.tmk)) != 16:
                raise ValueError
        except ValueError:
            raise HostConfigError(f"terminal {self.tid}: tmk must be 32 hex characters") from None
        if self.status not in ("active", "disabled"):
            raise HostConfigError(f"terminal {self.tid}: status must be active or disabled")

    @property
    def tmk_bytes(self) -> bytes:
        return bytes.fromhex(self.tmk)


@dataclass
class RiskRules:
    """Defaults from the source documents: > 50,000 CNY in one transaction, > 500 a day."""

    single_limit_fen: int = 5_000_000
    daily_count_limit: int = 500


@dataclass
class MaintenanceWindow:
    start: float  # epoch seconds
    end: float
    mode: str = "96"  # 96: answer 96; refuse: refuse connections

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass
class HostConfig:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    terminals: dict[str, TerminalEntry] = field(default_factory=dict)
    min_firmware: str = "0.0.0"
    key_mode: str = "004"
    risk: RiskRules = field(default_factory=RiskRules)
    maintenance: list[MaintenanceWindow] = field(default_factory=list)
    holidays: set[date] = field(default_factory=set)
    institution: str = "48020000"  # acquiring institution id (field 32)

    def add_terminal(self, tid: str, mid: str, tmk: str, *, merchant_name: str | None = None) -> TerminalEntry:
        if mid not in self.merchants:
            self.merchants[mid] = Merchant(mid, merchant_name or f"MERCHANT {mid}")
        entry = TerminalEntry(tid, mid, tmk.upper())
        self.terminals[tid] = entry
        return entry

    @classmethod
    def from_terminal_specs(cls, specs: list[str]) -> HostConfig:
        """`TID:MID:TMKHEX` specs: merchants created on the fly (T1), defaults for the rest."""
        config = cls()
        config.add_terminal_specs(specs)
        return config

    def add_terminal_specs(self, specs: list[str]) -> None:
        for spec in specs:
            parts = spec.split(":")
            if len(parts) != 3:
                raise HostConfigError(f"--terminal {spec!r}: expected TID:MID:TMKHEX")
            self.add_terminal(*parts)

    def add_terminals_csv(self, path: str | Path) -> int:
        """A CSV with a header `tid,mid,tmk` (as written by `possim load --emit-identities`)."""
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as exc:
            raise HostConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        for number, row in enumerate(rows, start=2):
            try:
                self.add_terminal(row["tid"], row["mid"], row["tmk"])
            except (KeyError, TypeError):
                raise HostConfigError(f"{path} line {number}: expected columns tid,mid,tmk") from None
        return len(rows)

    @classmethod
    def load(cls, path: str | Path) -> HostConfig:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise HostConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise HostConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<config>") -> HostConfig:
        data = dict(data.get("host", data))
        config = cls()
        try:
            config.min_firmware = str(data.get("min_firmware", config.min_firmware))
            config.key_mode = str(data.get("key_mode", config.key_mode))
            risk = data.get("risk", {})
            config.risk = RiskRules(int(risk.get("single_limit_fen", 5_000_000)),
                                    int(risk.get("daily_count_limit", 500)))
            for m in data.get("merchants", []):
                merchant = Merchant(str(m["mid"]), str(m.get("name", f"MERCHANT {m['mid']}")),
                                    str(m.get("settlement_type", "T1")))
                config.merchants[merchant.mid] = merchant
            for t in data.get("terminals", []):
                entry = TerminalEntry(str(t["tid"]), str(t["mid"]), str(t["tmk"]).upper(),
                                      str(t.get("status", "active")))
                if entry.mid not in config.merchants:
                    config.merchants[entry.mid] = Merchant(entry.mid, f"MERCHANT {entry.mid}")
                config.terminals[entry.tid] = entry
            for w in data.get("maintenance", []):
                config.maintenance.append(
                    MaintenanceWindow(float(w["start"]), float(w["end"]), str(w.get("mode", "96"))))
            config.holidays = {date.fromisoformat(str(d)) for d in data.get("holidays", [])}
        except KeyError as exc:
            raise HostConfigError(f"{source}: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise HostConfigError(f"{source}: {exc}") from None
        if config.key_mode not in ("001", "003", "004"):
            raise HostConfigError(f"{source}: key_mode must be 001, 003 or 004")
        return config
