"""Fleet configuration (TOML): the daemon's settings, an optional in-process host, the terminals.

    [daemon]
    control = "127.0.0.1:8750"      # the local HTTP control API (loopback by default)
    token = "change-me"             # required by every API call (or env POSSIM_TOKEN)
    idle_threshold = "2h"           # idle auto sign-off, per terminal overridable
    day_start = "08:00"             # scheduled sign-in (optional; without it: sign in at start)
    day_end = "23:30"               # scheduled settlement + sign-off (optional)
    reminders = ["10:00", "17:00"]  # reconciliation reminders
    backoff_base = "5s"             # retries through outages: base * 2^n, capped, with jitter
    backoff_max = "10m"
    backoff_jitter = 0.5            # delay drawn from [1 - jitter, 1] x the exponential value
    seed = 0                        # the jitter's RNG
    shutdown_grace = "15s"          # SIGTERM: how long in-flight work may take before it is cut (journaled)
    log_file = "daemon.log"         # JSON lines (also on stderr)
    [host]                          # optional: run the reference host in-process
    listen = "tcp://127.0.0.1:0"
    db = "host.sqlite"
    [[terminals]]
    tid = "10000001"
    mid = "898100012340001"
    tmk = "0123456789ABCDEFFEDCBA9876543210"
    # connect = "tcp://acquirer:5800"   (default: the [host] above)

Durations are numbers of seconds or "250ms", "3s", "90m", "2h". Paths are relative to the fleet file.
Every error names the key it is about.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from datetime import time as dtime
from pathlib import Path
from typing import Any

from ..config import ConfigError, TerminalConfig

EMBEDDED = "embedded"  # a terminal's connect value meaning "the [host] of this fleet file"

_TOP_KEYS = frozenset({"daemon", "host", "terminals"})
_DAEMON_KEYS = frozenset({"control", "token", "idle_threshold", "day_start", "day_end", "reminders", "backoff_base",
                          "backoff_max", "backoff_jitter", "seed", "shutdown_grace", "log_file"})
_TERMINAL_KEYS = frozenset(f.name for f in fields(TerminalConfig)) | {"idle_threshold"}
_TERMINAL_DURATIONS = ("reply_timeout", "connect_timeout", "signature_timeout")


class FleetConfigError(ValueError):
    """A fleet configuration key that is missing or malformed (the message names the key)."""


def parse_duration(value: Any, *, key: str = "duration") -> float:
    """'250ms', '3s', '90m', '2h', '1d' or a number of seconds; must be positive."""
    if isinstance(value, bool):
        raise FleetConfigError(f"{key}: {value!r} is not a duration like 3s, 90m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(value))
        if not match:
            raise FleetConfigError(f"{key}: {value!r} is not a duration like 3s, 90m or 2h")
        unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[match.group(2) or "s"]
        seconds = float(match.group(1)) * unit
    if seconds <= 0:
        raise FleetConfigError(f"{key}: {value!r} must be more than zero")
    return seconds


def parse_clock(value: Any, *, key: str) -> dtime:
    """'HH:MM' (24 h)."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", str(value))
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise FleetConfigError(f"{key}: {value!r} is not a time like 17:00")
    return dtime(int(match.group(1)), int(match.group(2)))


def _relative(path: str, base: Path | None) -> str:
    """Paths in a fleet file are relative to the file, so a fleet runs the same from any directory."""
    if base is None or path == ":memory:" or Path(path).is_absolute():
        return path
    return str(base / path)


def _control(value: Any, source: str) -> tuple[str, int]:
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise FleetConfigError(f"{source}: daemon.control: expected host:port like 127.0.0.1:8750, got {text!r}")
    return host.strip("[]"), int(port)


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
    backoff_jitter: float = 0.5
    seed: int = 0
    shutdown_grace: float = 15.0
    log_file: str | None = None
    host_listen: str | None = None
    host_db: str = ":memory:"
    host_config: dict[str, Any] = field(default_factory=dict)
    source: str = "<fleet>"

    @property
    def control_host(self) -> str:
        return _control(self.control, self.source)[0]

    @property
    def control_port(self) -> int:
        return _control(self.control, self.source)[1]

    @property
    def control_url(self) -> str:
        host = self.control_host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.control_port}"

    def terminal(self, tid: str) -> TerminalConfig | None:
        return next((t for t in self.terminals if t.tid == tid), None)

    def with_idle_threshold(self, seconds: float) -> FleetConfig:
        """Every terminal's idle threshold replaced (the daemon's --idle-threshold)."""
        self.idle_threshold = seconds
        self.terminals = [t.with_overrides(idle_sign_off=seconds) for t in self.terminals]
        return self

    @classmethod
    def load(cls, path: str | Path) -> FleetConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise FleetConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise FleetConfigError(f"{path}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise FleetConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path), base=path.parent)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<fleet>", base: Path | None = None) -> FleetConfig:
        def fail(key: str, problem: str) -> FleetConfigError:
            return FleetConfigError(f"{source}: {key}: {problem}")

        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise fail(sorted(unknown)[0], f"unknown table; known: {', '.join(sorted(_TOP_KEYS))}")
        daemon = data.get("daemon", {})
        if not isinstance(daemon, dict):
            raise fail("daemon", "must be a table")
        unknown = set(daemon) - _DAEMON_KEYS
        if unknown:
            raise fail(f"daemon.{sorted(unknown)[0]}", f"unknown key; known: {', '.join(sorted(_DAEMON_KEYS))}")
        host = data.get("host")
        if host is not None and not isinstance(host, dict):
            raise fail("host", "must be a table")

        def duration(key: str, default: Any) -> float:
            try:
                return parse_duration(daemon.get(key, default), key=f"daemon.{key}")
            except FleetConfigError as exc:
                raise FleetConfigError(f"{source}: {exc}") from None

        def clock(key: str, value: Any) -> dtime:
            try:
                return parse_clock(value, key=key)
            except FleetConfigError as exc:
                raise FleetConfigError(f"{source}: {exc}") from None

        token = str(daemon.get("token") or os.environ.get("POSSIM_TOKEN", ""))
        if not token:
            raise fail("daemon.token", "required (or set POSSIM_TOKEN)")
        control = str(daemon.get("control", "127.0.0.1:8750"))
        _control(control, source)
        idle = duration("idle_threshold", 7200)
        reminders = daemon.get("reminders", ["10:00", "17:00"])
        if not isinstance(reminders, list):
            raise fail("daemon.reminders", f"expected a list of times like [\"10:00\", \"17:00\"], got {reminders!r}")
        jitter = daemon.get("backoff_jitter", 0.5)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
            raise fail("daemon.backoff_jitter", f"expected a number within 0..1, got {jitter!r}")
        seed = daemon.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise fail("daemon.seed", f"expected an integer, got {seed!r}")
        backoff_base, backoff_max = duration("backoff_base", 5), duration("backoff_max", 600)
        if backoff_max < backoff_base:
            raise fail("daemon.backoff_max", f"{backoff_max:g}s is below backoff_base ({backoff_base:g}s)")

        entries = data.get("terminals")
        if not isinstance(entries, list) or not entries:
            raise fail("terminals", "no [[terminals]]")
        terminals = [_terminal(entry, index, idle, base, fail) for index, entry in enumerate(entries)]
        tids = [t.tid for t in terminals]
        repeated = sorted({t for t in tids if tids.count(t) > 1})
        if repeated:
            raise fail(f"terminals[{tids.index(repeated[0], tids.index(repeated[0]) + 1)}].tid",
                       f"terminal {repeated[0]} is listed twice")
        if host is None and any(t.connect == EMBEDDED for t in terminals):
            first = next(i for i, t in enumerate(terminals) if t.connect == EMBEDDED)
            raise fail(f"terminals[{first}].connect", "missing, and there is no [host] table to connect to")
        host_config = dict(host) if host is not None else {}
        if host is not None:
            from acquirer.config import HostConfig, HostConfigError

            try:  # checked now, so a bad [host] is refused at load (and at reload) with its key named
                HostConfig.from_mapping(host_config, source=f"{source}: [host]")
            except HostConfigError as exc:
                raise FleetConfigError(str(exc)) from None
        return cls(
            terminals=terminals, control=control, token=token, idle_threshold=idle,
            day_start=clock("daemon.day_start", daemon["day_start"]) if "day_start" in daemon else None,
            day_end=clock("daemon.day_end", daemon["day_end"]) if "day_end" in daemon else None,
            reminders=[clock(f"daemon.reminders[{i}]", r) for i, r in enumerate(reminders)],
            backoff_base=backoff_base, backoff_max=backoff_max, backoff_jitter=float(jitter), seed=seed,
            shutdown_grace=duration("shutdown_grace", 15),
            log_file=_relative(str(daemon["log_file"]), base) if daemon.get("log_file") else None,
            host_listen=str(host.get("listen", "tcp://127.0.0.1:0")) if host is not None else None,
            host_db=_relative(str(host.get("db", ":memory:")), base) if host is not None else ":memory:",
            host_config=host_config, source=source)


def _terminal(entry: Any, index: int, idle: float, base: Path | None, fail: Any) -> TerminalConfig:
    where = f"terminals[{index}]"
    if not isinstance(entry, dict):
        raise fail(where, "must be a table")
    settings = dict(entry)
    if "tid" in settings:
        where = f"terminals[{index}] ({settings['tid']})"
    unknown = set(settings) - _TERMINAL_KEYS
    if unknown:
        raise fail(f"{where}.{sorted(unknown)[0]}", "unknown key")
    for key in ("tid", "mid", "tmk"):
        if key not in settings:
            raise fail(f"{where}.{key}", "required")
    try:
        settings["idle_sign_off"] = (parse_duration(settings.pop("idle_threshold"), key=f"{where}.idle_threshold")
                                     if "idle_threshold" in settings else idle)
        for key in _TERMINAL_DURATIONS:
            if key in settings:
                settings[key] = parse_duration(settings[key], key=f"{where}.{key}")
    except FleetConfigError as exc:
        raise fail(str(exc).split(":", 1)[0], str(exc).split(":", 1)[1].strip()) from None
    if "hardware" in settings and not isinstance(settings["hardware"], dict):
        raise fail(f"{where}.hardware", "must be a table")
    journal = settings.get("journal") or f"journal-{settings['tid']}.sqlite"
    settings["journal"] = _relative(str(journal), base)
    settings.setdefault("connect", EMBEDDED)
    try:
        return TerminalConfig(**settings)
    except ConfigError as exc:
        raise fail(where, str(exc)) from None
    except TypeError as exc:  # a value of the wrong type the dataclass could not take
        raise fail(where, str(exc)) from None
