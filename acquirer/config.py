"""The reference host's configuration: registry of merchants and terminals, policy, calendar.

From a TOML file (`possim host --config host.toml`), from a mapping (the daemon's `[host]` table), or
from `TID:MID:TMK` specs on the command line, where a merchant is created on the fly (T1, default
name). Every error names the entry and what is wrong with it.

    [host]
    min_firmware = "3.0.2"          # sign-in below this is refused (58, processing requirement 6)
    key_mode = "004"                # working keys when 60.3 does not ask: 004 (with track key), 003, 001
    institution = "48020000"        # acquiring institution id
    durability = "normal"           # ledger: "normal" survives a killed host; "full" also a power cut

    [host.risk]
    single_limit = "50000.00"       # yuan; a sale above it is approved but frozen for dual review
    daily_count_limit = 500         # more sales than this per terminal per day are flagged (frozen)

    [[host.merchants]]
    mid = "898100012340001"         # 15 characters
    name = "GOOD FOOD CAFE"
    settlement_type = "T1"          # T0: same day; T1: next business day

    [[host.terminals]]
    tid = "10000001"                # 8 characters
    mid = "898100012340001"         # must be a merchant above (when merchants are listed)
    tmk = "0123456789ABCDEFFEDCBA9876543210"
    status = "active"               # or "disabled" (answered 97)

    [[host.maintenance]]            # absolute: start/end as TOML datetimes, ISO 8601 text or epoch seconds
    start = 2026-11-22T01:00:00+08:00
    end = 2026-11-22T01:30:00+08:00
    mode = "96"                     # "96": answer 96; "refuse": close connections at once
    [[host.maintenance]]            # or recurring every day, local time (may wrap past midnight)
    daily = "23:50-00:10"

    [host.calendar]
    holidays = [2026-10-01, 2026-10-02]   # no T1 arrival on these days
    workdays = [2026-09-27]               # weekend days that are business days (make-up days)
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


class HostConfigError(ValueError):
    """A host configuration entry that is missing or malformed."""


SETTLEMENT_TYPES = ("T0", "T1")
TERMINAL_STATUSES = ("active", "disabled")
KEY_MODES = ("001", "003", "004")
MAINTENANCE_MODES = ("96", "refuse")
DURABILITY = ("normal", "full")
#: Keys of a `[host]` table that belong to whoever runs the host (the daemon, the CLI), not to it.
RUNNER_KEYS = frozenset({"listen", "db", "trace"})
_TOP_KEYS = frozenset({"min_firmware", "firmware_latest", "key_mode", "institution", "durability", "risk", "merchants",
                       "terminals", "maintenance", "calendar", "holidays", "workdays"}) | RUNNER_KEYS


@dataclass
class Merchant:
    mid: str
    name: str
    settlement_type: str = "T1"  # T0: same day; T1: next business day

    def __post_init__(self) -> None:
        if not isinstance(self.mid, str) or len(self.mid) != 15:
            raise HostConfigError(f"merchant {self.mid!r}: id must be 15 characters")
        if not isinstance(self.name, str) or not self.name.strip():
            raise HostConfigError(f"merchant {self.mid}: name must be a non-empty string")
        if self.settlement_type not in SETTLEMENT_TYPES:
            raise HostConfigError(f"merchant {self.mid}: settlement_type must be T0 or T1, "
                                  f"got {self.settlement_type!r}")


@dataclass
class TerminalEntry:
    tid: str
    mid: str
    tmk: str
    status: str = "active"  # active | disabled

    def __post_init__(self) -> None:
        if not isinstance(self.tid, str) or len(self.tid) != 8:
            raise HostConfigError(f"terminal {self.tid!r}: id must be 8 characters")
        if not isinstance(self.mid, str) or len(self.mid) != 15:
            raise HostConfigError(f"terminal {self.tid}: merchant id {self.mid!r} must be 15 characters")
        try:
            if len(bytes.fromhex(self.tmk)) != 16:
                raise ValueError
        except (ValueError, TypeError):
            raise HostConfigError(f"terminal {self.tid}: tmk must be 32 hex characters") from None
        self.tmk = self.tmk.upper()
        if self.status not in TERMINAL_STATUSES:
            raise HostConfigError(f"terminal {self.tid}: status must be active or disabled, got {self.status!r}")

    @property
    def tmk_bytes(self) -> bytes:
        return bytes.fromhex(self.tmk)


@dataclass
class RiskRules:
    """Defaults from the source documents: > 50,000 CNY in one transaction, > 500 a day."""

    single_limit_fen: int = 5_000_000
    daily_count_limit: int = 500

    def __post_init__(self) -> None:
        for name in ("single_limit_fen", "daily_count_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise HostConfigError(f"risk.{name} must be a whole number >= 0, got {value!r}")


@dataclass
class MaintenanceWindow:
    """A window when the host answers 96 (mode "96") or refuses connections (mode "refuse").

    Absolute (`start`/`end`, epoch seconds) or recurring every day (`daily`: minutes after local
    midnight, start and end; the end may be earlier than the start: the window wraps past midnight).
    """

    start: float | None = None
    end: float | None = None
    mode: str = "96"
    daily: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MAINTENANCE_MODES:
            raise HostConfigError(f"maintenance mode must be '96' or 'refuse', got {self.mode!r}")
        if self.daily is None:
            if self.start is None or self.end is None:
                raise HostConfigError("maintenance window needs start and end, or daily")
            if self.end <= self.start:
                raise HostConfigError("maintenance window ends before it starts")
        elif self.daily[0] == self.daily[1]:
            raise HostConfigError("daily maintenance window is empty (start = end)")

    def _minute(self, now: float) -> float:
        local = datetime.fromtimestamp(now)
        return local.hour * 60 + local.minute + local.second / 60

    def active(self, now: float) -> bool:
        if self.daily is None:
            assert self.start is not None and self.end is not None
            return self.start <= now < self.end
        begin, finish = self.daily
        minute = self._minute(now)
        if begin < finish:
            return begin <= minute < finish
        return minute >= begin or minute < finish

    def ends_at(self, now: float) -> float | None:
        """When the window (active at `now`) ends, in epoch seconds; None when it is not active."""
        if not self.active(now):
            return None
        if self.daily is None:
            return self.end
        minute = self._minute(now)
        remaining = (self.daily[1] - minute) % (24 * 60)
        return now + remaining * 60

    def as_dict(self) -> dict[str, Any]:
        if self.daily is not None:
            return {"daily": f"{self.daily[0] // 60:02d}:{self.daily[0] % 60:02d}-"
                             f"{self.daily[1] // 60:02d}:{self.daily[1] % 60:02d}", "mode": self.mode}
        return {"start": self.start, "end": self.end, "mode": self.mode}


@dataclass
class HostConfig:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    terminals: dict[str, TerminalEntry] = field(default_factory=dict)
    min_firmware: str = "0.0.0"
    firmware_latest: str = "3.0.8"  # what the host's TMS offers terminals that ask (firmware_sim)
    key_mode: str = "004"
    risk: RiskRules = field(default_factory=RiskRules)
    maintenance: list[MaintenanceWindow] = field(default_factory=list)
    holidays: set[date] = field(default_factory=set)
    workdays: set[date] = field(default_factory=set)  # weekend days that are business days
    institution: str = "48020000"  # acquiring institution id (field 32)
    durability: str = "normal"  # ledger synchronous: normal (WAL; survives a kill) or full (+ power loss)

    def add_terminal(self, tid: str, mid: str, tmk: str, *, merchant_name: str | None = None,
                     status: str = "active") -> TerminalEntry:
        entry = TerminalEntry(tid, mid, tmk, status)
        if mid not in self.merchants:
            self.merchants[mid] = Merchant(mid, merchant_name or f"MERCHANT {mid}")
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
            try:
                self.add_terminal(*parts)
            except HostConfigError as exc:
                raise HostConfigError(f"--terminal {parts[0]!r}: {exc}") from None

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
            except HostConfigError as exc:
                raise HostConfigError(f"{path} line {number}: {exc}") from None
        return len(rows)

    def is_business_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    @classmethod
    def load(cls, path: str | Path) -> HostConfig:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise HostConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise HostConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise HostConfigError(f"{path}: not UTF-8 text") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<config>") -> HostConfig:
        """Build from a TOML-shaped mapping (with or without the `[host]` wrapper)."""
        if not isinstance(data, Mapping):
            raise HostConfigError(f"{source}: expected a table, got {type(data).__name__}")
        host = data.get("host", data)
        if not isinstance(host, Mapping):
            raise HostConfigError(f"{source}: [host] must be a table")
        return _Loader(source).load(host)


# ------------------------------------------------------------------------------------------------


_DAILY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_VERSION = re.compile(r"^\d{1,2}\.\d{1,2}\.\d{1,2}$")


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> HostConfigError:
        return HostConfigError(f"{self.source}: {where}: {problem}")

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a table, got {type(value).__name__}")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be an array of tables, got {type(value).__name__}")
        return value

    def text(self, entry: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        if key not in entry:
            if default is None:
                raise self.fail(where, f"missing key {key!r}")
            return default
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(where, f"{key} must be text, got {type(value).__name__}")
        return str(value)

    def unknown(self, entry: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
        extra = sorted(set(entry) - set(allowed))
        if extra:
            raise self.fail(where, f"unknown key(s) {', '.join(map(repr, extra))}; "
                                   f"known: {', '.join(sorted(allowed))}")

    def wrap(self, where: str, exc: HostConfigError) -> HostConfigError:
        return self.fail(where, str(exc))

    # --------------------------------------------------------------------------------------------
    def load(self, host: Mapping[str, Any]) -> HostConfig:
        self.unknown(host, _TOP_KEYS, "[host]")
        config = HostConfig()
        config.min_firmware = self.text(host, "min_firmware", "min_firmware", config.min_firmware)
        if not _VERSION.match(config.min_firmware):
            raise self.fail("min_firmware", f"{config.min_firmware!r} is not a version like 3.0.8")
        config.firmware_latest = self.text(host, "firmware_latest", "firmware_latest", config.firmware_latest)
        config.key_mode = self.text(host, "key_mode", "key_mode", config.key_mode)
        if config.key_mode not in KEY_MODES:
            raise self.fail("key_mode", f"must be 001, 003 or 004, got {config.key_mode!r}")
        config.institution = self.text(host, "institution", "institution", config.institution)
        if not (config.institution.isdigit() and 1 <= len(config.institution) <= 11):
            raise self.fail("institution", f"must be 1 to 11 digits, got {config.institution!r}")
        config.durability = self.text(host, "durability", "durability", config.durability).lower()
        if config.durability not in DURABILITY:
            raise self.fail("durability", f"must be 'normal' or 'full', got {config.durability!r}")
        if "risk" in host:
            config.risk = self.risk(self.table(host["risk"], "[host.risk]"))
        for number, raw in enumerate(self.array(host.get("merchants", []), "merchants")):
            merchant = self.merchant(raw, number)
            if merchant.mid in config.merchants:
                raise self.fail(f"merchants[{number}]", f"merchant {merchant.mid} is listed twice")
            config.merchants[merchant.mid] = merchant
        declared = bool(config.merchants)
        for number, raw in enumerate(self.array(host.get("terminals", []), "terminals")):
            entry = self.terminal(raw, number)
            if entry.tid in config.terminals:
                raise self.fail(f"terminals[{number}]", f"terminal {entry.tid} is listed twice")
            if entry.mid not in config.merchants:
                if declared:
                    raise self.fail(f"terminals[{number}] ({entry.tid})",
                                    f"merchant {entry.mid} is not among the merchants listed")
                config.merchants[entry.mid] = Merchant(entry.mid, f"MERCHANT {entry.mid}")
            config.terminals[entry.tid] = entry
        for number, raw in enumerate(self.array(host.get("maintenance", []), "maintenance")):
            config.maintenance.append(self.window(raw, f"maintenance[{number}]"))
        calendar = self.table(host.get("calendar", {}), "[host.calendar]")
        self.unknown(calendar, {"holidays", "workdays"}, "[host.calendar]")
        for key in ("holidays", "workdays"):
            days = self.dates(host.get(key, []), key) | self.dates(calendar.get(key, []), f"calendar.{key}")
            setattr(config, key, days)
        both = config.holidays & config.workdays
        if both:
            raise self.fail("calendar", f"{min(both)} is both a holiday and a workday")
        return config

    def risk(self, risk: Mapping[str, Any]) -> RiskRules:
        self.unknown(risk, {"single_limit", "single_limit_fen", "daily_count_limit"}, "[host.risk]")
        rules = RiskRules()
        if "single_limit" in risk and "single_limit_fen" in risk:
            raise self.fail("[host.risk]", "give single_limit (yuan) or single_limit_fen, not both")
        if "single_limit" in risk:
            rules.single_limit_fen = self.yuan(risk["single_limit"], "risk.single_limit")
        if "single_limit_fen" in risk:
            rules.single_limit_fen = self.whole(risk["single_limit_fen"], "risk.single_limit_fen")
        if "daily_count_limit" in risk:
            rules.daily_count_limit = self.whole(risk["daily_count_limit"], "risk.daily_count_limit")
        return rules

    def whole(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where, f"must be a whole number >= 0, got {value!r}")
        return value

    def yuan(self, value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise self.fail(where, f"must be an amount in yuan like \"50000.00\", got {value!r}")
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(where, f"must be an amount in yuan like \"50000.00\", got {value!r}") from None
        fen = amount * 100
        if not amount.is_finite() or amount < 0 or fen != fen.to_integral_value():
            raise self.fail(where, f"must be a non-negative amount with at most two decimals, got {value!r}")
        return int(fen)

    def merchant(self, raw: Any, number: int) -> Merchant:
        where = f"merchants[{number}]"
        entry = self.table(raw, where)
        mid = self.text(entry, "mid", where)
        where = f"merchants[{number}] ({mid})"
        self.unknown(entry, {"mid", "name", "settlement_type"}, where)
        try:
            return Merchant(mid, self.text(entry, "name", where, f"MERCHANT {mid}"),
                            self.text(entry, "settlement_type", where, "T1").upper())
        except HostConfigError as exc:
            raise self.wrap(where, exc) from None

    def terminal(self, raw: Any, number: int) -> TerminalEntry:
        where = f"terminals[{number}]"
        entry = self.table(raw, where)
        tid = self.text(entry, "tid", where)
        where = f"terminals[{number}] ({tid})"
        self.unknown(entry, {"tid", "mid", "tmk", "status"}, where)
        try:
            return TerminalEntry(tid, self.text(entry, "mid", where), self.text(entry, "tmk", where),
                                 self.text(entry, "status", where, "active").lower())
        except HostConfigError as exc:
            raise self.wrap(where, exc) from None

    def window(self, raw: Any, where: str) -> MaintenanceWindow:
        entry = self.table(raw, where)
        self.unknown(entry, {"start", "end", "daily", "mode"}, where)
        mode = self.text(entry, "mode", where, "96")
        try:
            if "daily" in entry:
                if "start" in entry or "end" in entry:
                    raise HostConfigError("give daily or start/end, not both")
                return MaintenanceWindow(mode=mode, daily=parse_daily(str(entry["daily"])))
            for key in ("start", "end"):
                if key not in entry:
                    raise HostConfigError(f"missing key {key!r} (or give daily = \"HH:MM-HH:MM\")")
            return MaintenanceWindow(parse_when(entry["start"]), parse_when(entry["end"]), mode)
        except HostConfigError as exc:
            raise self.wrap(where, exc) from None

    def dates(self, raw: Any, where: str) -> set[date]:
        if not isinstance(raw, list):
            raise self.fail(where, f"must be an array of dates, got {type(raw).__name__}")
        out: set[date] = set()
        for number, value in enumerate(raw):
            if isinstance(value, datetime):
                out.add(value.date())
            elif isinstance(value, date):
                out.add(value)
            else:
                try:
                    out.add(date.fromisoformat(str(value)))
                except ValueError:
                    raise self.fail(f"{where}[{number}]", f"{value!r} is not a date like 2026-10-01") from None
        return out


def parse_daily(text: str) -> tuple[int, int]:
    """'23:50-00:10' -> (1430, 10): minutes after local midnight."""
    match = _DAILY.match(text)
    if not match:
        raise HostConfigError(f"daily {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise HostConfigError(f"daily {text!r} is not a valid time range")
    return h1 * 60 + m1, h2 * 60 + m2


def parse_when(value: Any) -> float:
    """A point in time: epoch seconds, a TOML datetime, or ISO 8601 text (local time when naive)."""
    if isinstance(value, bool):
        raise HostConfigError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time()).timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise HostConfigError(f"{value!r} is not a time (epoch seconds, or ISO 8601 like 2026-11-22T01:00:00+08:00)")
