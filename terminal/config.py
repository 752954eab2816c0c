"""Terminal configuration: identity, link, timers, hardware profile - from TOML, flags, or code.

Errors name the file, the key and what is wrong, so a developer wiring a real device sees
"terminal.tmk: expected 32 hex characters" rather than a traceback.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_TMK = "0123456789ABCDEFFEDCBA9876543210"


class ConfigError(ValueError):
    """A terminal configuration value that is missing or malformed."""


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    """Everything a simulated terminal needs to know about itself.

    Slotted: a fleet holds one per terminal, and nothing adds attributes to a frozen config (about
    300 bytes less than an instance dict of 23 fields).
    """

    tid: str = "10000001"
    mid: str = "898100012340001"
    tmk: str = DEFAULT_TMK  # 32 hex: terminal master key
    tpdu: str = "6000060000"  # 10 hex: id 60, destination, source
    firmware: str = "3.0.8"
    serial_number: str = ""
    merchant_name: str = "POSSIM TEST MERCHANT"
    operator: str = "001"
    key_mode: str = "004"  # 60.3 of sign-in: 004 PIN+MAC+track keys, 003, 001
    connect: str = "tcp://127.0.0.1:5800"
    journal: str = "terminal.sqlite"
    dialect: str = "cup-pos"
    reply_timeout: float = 60.0  # seconds to wait for a host reply
    connect_timeout: float = 10.0
    idle_sign_off: float = 7200.0  # idle seconds before the daemon signs the terminal off (2 hours)
    sign_off_after_settlement: bool = True
    signature_timeout: float = 60.0
    require_signature: bool = True
    reversal_attempts: int = 3  # attempts per online operation before giving up until the next one
    # Records the batch (the transaction log a settlement counts) holds before sales, voids and refunds are
    # refused with BATCH FULL / PLS SETTLE. 500: what a UnionPay terminal application ships with (the
    # "max transactions" parameter of CaoEnXin/LiaoYang_POS defaults to 500, below its log's hard 1,000).
    batch_capacity: int = 500
    seed: int = 0
    hardware: dict[str, Any] = field(default_factory=dict)  # HardwareProfile overrides

    def __post_init__(self) -> None:
        check(len(self.tid) == 8 and self.tid.isascii(), "tid", f"expected 8 characters, got {self.tid!r}")
        check(len(self.mid) == 15 and self.mid.isascii(), "mid", f"expected 15 characters, got {self.mid!r}")
        check(_is_hex(self.tmk, 32), "tmk", "expected 32 hex characters")
        check(_is_hex(self.tpdu, 10) and self.tpdu[:2] == "60", "tpdu",
              f"expected 10 hex characters starting 60, got {self.tpdu!r}")
        parts = self.firmware.split(".")
        check(len(parts) == 3 and all(p.isdigit() and int(p) < 100 for p in parts), "firmware",
              f"expected a version like 3.0.8, got {self.firmware!r}")
        check(self.key_mode in ("001", "003", "004"), "key_mode", "expected 001, 003 or 004")
        check(len(self.operator) == 3, "operator", "expected 3 characters")
        check(self.reply_timeout > 0, "reply_timeout", "must be positive")
        check(self.idle_sign_off > 0, "idle_sign_off", "must be positive")
        check(type(self.batch_capacity) is int and self.batch_capacity > 0, "batch_capacity",
              f"expected a positive whole number of records, got {self.batch_capacity!r}")

    @property
    def tmk_bytes(self) -> bytes:
        return bytes.fromhex(self.tmk)

    @property
    def serial(self) -> str:
        return self.serial_number or f"SN{self.tid}"

    def with_overrides(self, **overrides: Any) -> TerminalConfig:
        """A copy with the given non-None values replaced (CLI flags over the file)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown terminal settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"terminal.{key}: {message}")


def _is_hex(value: str, length: int) -> bool:
    try:
        return len(value) == length and bytes.fromhex(value) is not None
    except ValueError:
        return False


#: The defaults, to tell what type each setting takes.
_DEFAULTS = TerminalConfig()
#: What a setting whose default has this type takes: (accepted types, how an error describes them).
#: bool before int (a bool is an int) and float takes an int too: TOML's `reply_timeout = 5` means 5.0.
_KINDS: tuple[tuple[type, tuple[type, ...], str], ...] = (
    (bool, (bool,), "true or false"),
    (int, (int,), "a whole number"),
    (float, (int, float), "a number"),
    (str, (str,), "a string"),
    (dict, (dict,), "a table"),
)
#: Sharper descriptions for the identity settings, whose type error is the first a new user meets.
_EXPECTED = {
    "tid": "a string of 8 characters",
    "mid": "a string of 15 characters",
    "tmk": "a string of 32 hex characters",
    "tpdu": "a string of 10 hex characters",
    "firmware": 'a version string like "3.0.8"',
    "key_mode": 'a string: "001", "003" or "004"',
}


def _type_problem(key: str, value: Any, default: Any) -> str | None:
    """'expected a number, got 'abc'' when `value` is not of the kind `default` is; None when it is.

    A TOML file can hold any type anywhere; checked here, a wrong one is named with its key instead of
    surfacing as "'>' not supported between instances of 'str' and 'int'" from deep in the terminal.
    """
    for default_type, accepted, description in _KINDS:
        if isinstance(default, default_type):
            if isinstance(value, accepted) and (default_type is bool or not isinstance(value, bool)):
                return None
            return f"expected {_EXPECTED.get(key, description)}, got {value!r}"
    return None


def _check_tables(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The `[terminal]` settings of a parsed file, or ConfigError naming an unknown table or key.

    A file is either one `[terminal]` table or the same keys at the top level; anything else is a
    mistake (a misspelt `[termnal]`), reported as the table it is rather than as a key of [terminal].
    """
    if "terminal" in raw:
        data = raw["terminal"]
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [terminal] must be a table, got {data!r}")
        others = sorted(set(raw) - {"terminal"})
        if others:
            raise ConfigError(f"{source}: unknown top-level {'table' if len(others) == 1 else 'tables'} "
                              f"{', '.join(f'[{k}]' for k in others)}; the file holds one [terminal] table")
    else:
        data = raw
    known = {f.name for f in fields(TerminalConfig)}
    unknown = sorted(set(data) - known)
    tables = [k for k in unknown if isinstance(data[k], dict)]
    if tables:
        prefix = "terminal." if "terminal" in raw else ""
        raise ConfigError(f"{source}: unknown {'table' if len(tables) == 1 else 'tables'} "
                          f"{', '.join(f'[{prefix}{k}]' for k in tables)}; the file holds one [terminal] table")
    if unknown:
        raise ConfigError(f"{source}: unknown keys in [terminal]: {', '.join(unknown)}")
    for key, value in data.items():
        problem = _type_problem(key, value, getattr(_DEFAULTS, key))
        if problem:
            raise ConfigError(f"{source}: terminal.{key}: {problem}")
    if "hardware" in data:
        _check_hardware(data["hardware"], source)
    return dict(data)


def _check_hardware(table: dict[str, Any], source: str) -> None:
    """ConfigError for an unknown `[terminal.hardware]` key or a value of the wrong type.

    Without this the terminal would take the table as it is and fail when it builds its hardware, or
    later still, when the battery first does arithmetic on `battery_level = "x"`.
    """
    from .hardware import DEFAULT_PROFILE, HardwareProfile

    try:
        HardwareProfile.from_dict(table)  # unknown keys, naming the known ones
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: terminal.hardware: {exc}") from None
    for key, value in table.items():
        problem = _type_problem(key, value, getattr(DEFAULT_PROFILE, key))
        if problem:
            raise ConfigError(f"{source}: terminal.hardware.{key}: {problem}")


def load_config(path: str | Path | None = None, **overrides: Any) -> TerminalConfig:
    """Read `[terminal]` (and `[terminal.hardware]`) from a TOML file, then apply overrides.

    Errors from the file start "config PATH:", so they are not mistaken for errors in the flags.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        source = f"config {path}"
        try:
            raw = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        data = _check_tables(raw, source)
        try:
            config = TerminalConfig(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    else:
        config = TerminalConfig()
    return config.with_overrides(**overrides)
