"""Fleet configuration (TOML): the daemon's settings, an optional in-process host, the terminals.

    [daemon]
    control = "127.0.0.1:8750"      # the local HTTP control API (loopback by default)
    token = "change-me"             # required by every API call (or env POSSIM_TOKEN)
    idle_threshold = "2h"           # idle auto sign-off, per terminal overridable
    day_end = "23:30"               # scheduled settlement + sign-off (optional)
    reminders = ["10:00", "17:00"]  # reconciliation reminders
    [host]                          # optional: run the reference host in-process
    listen = "tcp://127.0.0.1:0"
    [[terminals]]
    tid = "10000001"
    mid = "898100012340001"
    tmk = "0123456789ABCDEFFEDCBA9876543210"
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Any

from ..config import ConfigError, TerminalConfig


class FleetConfigError(ValueError):
    """A fleet configuration key that is missing or malformed (names the key)."""


def parse_duration(value: Any, *, key: str = "duration") -> float:
    """'3s', '90m', '2h', '250ms' or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        raise FleetConfigError(f"{key}: {value!r} is not a duration like 3s, 90m or 2h")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]


def _relative(path: str, base: Path | None) -> str:
    """Paths in a fleet file are relative to the file, so a fleet runs the same from any directory."""
    if base is None or path == ":memory:" or Path(path).is_absolute():
        return path
    return str(base / path)


def parse_clock(value: str, *, key: str) -> dtime:
    try:
        hours, minutes = (int(p) for p in str(value).split(":"))
        return dtime(hours, minutes)
    except ValueError:
        raise FleetConfigError(f"{key}: {value!r} is not a time like 17:00") from None


@dataclass
class FleetConfig:
    terminals: list[TerminalConfig]
    control: str = "127.0.0.1:8750"
    token: str = ""
    idle_threshold: float = 7200.0
    day_start: dtime | None = None
    day_end: dtime | None = None
    reminders: list[dtime] = field(default_factory=lambda: [dtime(10, 0), dtime(17, 0)])
    backoff_base: float = 5.0
    backoff_max: float = 600.0
    host_listen: str | None = None
    host_db: str = ":memory:"
    host_config: dict[str, Any] = field(default_factory=dict)
    source: str = "<fleet>"

    @property
    def control_host(self) -> str:
        return self.control.rsplit(":", 1)[0]

    @property
    def control_port(self) -> int:
        return int(self.control.rsplit(":", 1)[1])

    @classmethod
    def load(cls, path: str | Path) -> FleetConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise FleetConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise FleetConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path), base=path.parent)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<fleet>", base: Path | None = None) -> FleetConfig:
        daemon = dict(data.get("daemon", {}))
        host = data.get("host")
        token = str(daemon.get("token") or os.environ.get("POSSIM_TOKEN", ""))
        if not token:
            raise FleetConfigError(f"{source}: [daemon] token is required (or set POSSIM_TOKEN)")
        idle = parse_duration(daemon.get("idle_threshold", 7200), key="daemon.idle_threshold")
        control = str(daemon.get("control", "127.0.0.1:8750"))
        if ":" not in control:
            raise FleetConfigError(f"{source}: daemon.control must be host:port, got {control!r}")
        entries = data.get("terminals")
        if not isinstance(entries, list) or not entries:
            raise FleetConfigError(f"{source}: no [[terminals]]")
        terminals = []
        for index, entry in enumerate(entries):
            settings = dict(entry)
            if "idle_threshold" in settings:
                settings["idle_sign_off"] = parse_duration(settings.pop("idle_threshold"),
                                                           key=f"terminals[{index}].idle_threshold")
            else:
                settings["idle_sign_off"] = idle
            journal = settings.get("journal") or f"journal-{settings.get('tid', index)}.sqlite"
            settings["journal"] = _relative(journal, base)
            settings.setdefault("connect", "embedded")
            try:
                terminals.append(TerminalConfig(**settings))
            except (TypeError, ConfigError) as exc:
                raise FleetConfigError(f"{source}: terminals[{index}]: {exc}") from None
        tids = [t.tid for t in terminals]
        if len(set(tids)) != len(tids):
            raise FleetConfigError(f"{source}: terminal ids repeat: {sorted(t for t in tids if tids.count(t) > 1)}")
        if host is None and any(t.connect == "embedded" for t in terminals):
            raise FleetConfigError(f"{source}: terminals without 'connect' need a [host] table")
        return cls(
            terminals=terminals, control=control, token=token, idle_threshold=idle,
            day_start=parse_clock(daemon["day_start"], key="daemon.day_start") if "day_start" in daemon else None,
            day_end=parse_clock(daemon["day_end"], key="daemon.day_end") if "day_end" in daemon else None,
            reminders=[parse_clock(r, key="daemon.reminders") for r in daemon.get("reminders", ["10:00", "17:00"])],
            backoff_base=parse_duration(daemon.get("backoff_base", 5), key="daemon.backoff_base"),
            backoff_max=parse_duration(daemon.get("backoff_max", 600), key="daemon.backoff_max"),
            host_listen=str(host.get("listen", "tcp://127.0.0.1:0")) if host is not None else None,
            host_db=_relative(str(host.get("db", ":memory:")), base) if host is not None else ":memory:",
            host_config=dict(host) if host is not None else {}, source=source)
