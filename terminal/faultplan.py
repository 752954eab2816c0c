"""The fault plan: device, message, link and host faults in one vocabulary, seeded, from Python or TOML.

    plan = FaultPlan.from_toml("faults.toml")           # or FaultPlan(seed=7, device=[...], ...)
    with plan.active(terminal, host_admin=host.admin):   # armed for the block, cleared after
        await terminal.sale(1234)

Layers (DESIGN principle 6 - a fault changes what a device or a link does, never an outcome):
- device: a hardware fault point (`printer.out_of_paper`, `reader.read_error`, `battery.power_loss` ...),
  by count, probability or always;
- message: `terminal.chaos.MessageFault` rules matched on MTI / processing code / STAN / n-th / probability:
  drop, delay, duplicate, corrupt_mac, override_rc, garbage;
- link: toxics in toxiproxy's vocabulary, applied to the terminal's link: latency, timeout, reset_peer,
  down (at frame level here; the chaos proxy applies slicer, limit_data and bandwidth at byte level);
- host: acquirer-side conditions through the admin API: maintenance, merchant_changed, min_firmware,
  hold_funds.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .chaos import MessageFault, check_number, check_text

TOXICS = ("latency", "timeout", "reset_peer", "down", "slicer", "limit_data", "bandwidth")
HOST_ACTIONS = ("maintenance", "merchant_changed", "min_firmware", "hold_funds")
TABLES = ("device", "message", "link", "host")  # each an array of tables: [[device]], [[message]] ...
TOP_KEYS = ("seed", *TABLES)


class FaultPlanError(ValueError):
    """A fault plan that cannot be armed as written: names the file, the table/entry and the problem."""


@dataclass
class DeviceFault:
    point: str  # "printer.out_of_paper"
    count: int | None = None  # 0 disarms the point (as FaultPoint.arm), which the control API uses
    probability: float | None = None
    always: bool = False
    param: int | None = None

    def __post_init__(self) -> None:
        """Check what `FaultPoint.arm` would, now: a plan is loaded long before it is armed (a proxy's or a
        load run's start), and an error then would name neither the file nor the entry."""
        from .hardware.faults import fault_point_names

        check_text("point", self.point)
        points = fault_point_names()
        if self.point not in points:
            close = difflib.get_close_matches(self.point, points, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FaultPlanError(f"unknown device fault point {self.point!r}{hint}; points: {', '.join(points)}")
        if self.count is not None:
            check_number("count", self.count, integer=True)
        if self.probability is not None:
            check_number("probability", self.probability, high=1)
        if not isinstance(self.always, bool):
            raise FaultPlanError(f"always must be true or false, got {self.always!r}")
        if self.param is not None:
            check_number("param", self.param, integer=True)
        if self.always and (self.count is not None or self.probability is not None):
            raise FaultPlanError("always cannot be combined with count or probability")
        if not self.always and self.count is None and self.probability is None:
            raise FaultPlanError(f"{self.point} needs count = N, probability = p or always = true")


@dataclass
class LinkToxic:
    toxic: str
    direction: str = "both"  # upstream (terminal -> host), downstream (host -> terminal), both
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bytes: int = 0  # slicer: chunk size; limit_data: bytes before the link is closed
    rate_kbps: float = 0.0  # bandwidth
    probability: float | None = None  # toxiproxy's "toxicity"

    def __post_init__(self) -> None:
        if self.toxic not in TOXICS:
            raise FaultPlanError(f"unknown link toxic {self.toxic!r}; toxics: {', '.join(TOXICS)}")
        if self.direction not in ("upstream", "downstream", "both"):
            raise FaultPlanError(f"link toxic direction must be upstream, downstream or both, not {self.direction!r}")
        for name in ("latency_ms", "jitter_ms", "rate_kbps"):  # a negative duration or rate means nothing
            check_number(name, getattr(self, name))
        check_number("bytes", self.bytes, integer=True)
        if self.probability is not None:
            check_number("probability", self.probability, high=1)
        # the parameter each toxic acts on (see FaultyLink._toxic); its default 0 would make the toxic a no-op
        if self.toxic == "latency" and not self.latency_ms > 0:
            raise FaultPlanError("toxic 'latency' needs latency_ms > 0")
        if self.toxic == "bandwidth" and not self.rate_kbps > 0:
            raise FaultPlanError("toxic 'bandwidth' needs rate_kbps > 0")
        if self.toxic in ("slicer", "limit_data") and not self.bytes > 0:
            raise FaultPlanError(f"toxic {self.toxic!r} needs bytes > 0")


@dataclass
class HostAction:
    action: str
    seconds: float = 3600.0  # maintenance length
    mode: str = "96"
    tid: str = ""
    mid: str = ""
    name: str = ""
    version: str = ""
    stan: str = ""
    reason: str = "held by fault plan"

    def __post_init__(self) -> None:
        if self.action not in HOST_ACTIONS:
            raise FaultPlanError(f"unknown host action {self.action!r}; actions: {', '.join(HOST_ACTIONS)}")
        check_number("seconds", self.seconds, exclusive=True)
        for name in ("mode", "tid", "mid", "name", "version", "stan", "reason"):
            check_text(name, getattr(self, name))
        # what each action hands the admin API (see _apply_host): refused here, not when the host applies it
        if self.action == "merchant_changed" and not (self.tid and (self.mid or self.name)):
            raise FaultPlanError("action 'merchant_changed' needs tid and a new mid or name")
        if self.action == "min_firmware":
            check_text("version", self.version, pattern=r"\d{1,2}\.\d{1,2}\.\d{1,2}", example="3.0.8")
        if self.action == "hold_funds" and not self.mid:
            raise FaultPlanError("action 'hold_funds' needs mid (and stan for one transaction)")


@dataclass
class FaultPlan:
    seed: int = 0
    device: list[DeviceFault] = field(default_factory=list)
    message: list[MessageFault] = field(default_factory=list)
    link: list[LinkToxic] = field(default_factory=list)
    host: list[HostAction] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FaultPlanError(f"seed must be an integer, got {self.seed!r}")

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<plan>") -> FaultPlan:
        """A plan from parsed TOML/JSON. Anything not understood is an error, never skipped: a misspelled
        `[[mesage]]` ignored would run a chaos test with no chaos and let it pass."""
        if not isinstance(data, Mapping):
            raise FaultPlanError(f"{source}: a fault plan is a table, got {data!r}")
        unknown = [key for key in data if key not in TOP_KEYS]
        if unknown:
            known = ", ".join(_table_name(key, []) for key in TOP_KEYS)
            names = ", ".join(_table_name(key, data[key]) + _did_you_mean(key, TOP_KEYS) for key in unknown)
            noun = "table" if all(_table_name(key, data[key]).startswith("[") for key in unknown) else "key"
            raise FaultPlanError(f"{source}: unknown {noun}{'s' if len(unknown) > 1 else ''} {names}; "
                                 f"known: {known}")
        entries: dict[str, list[Any]] = {}
        for table, kind in zip(TABLES, (DeviceFault, MessageFault, LinkToxic, HostAction), strict=True):
            value = data.get(table, [])
            if not isinstance(value, list):
                raise FaultPlanError(f"{source}: {table} must be an array of tables ([[{table}]] entries), "
                                     f"got {value!r}")
            entries[table] = [_build(kind, entry, f"{source}: [[{table}]] #{number}")
                              for number, entry in enumerate(value, start=1)]
        try:
            return cls(seed=data.get("seed", 0), **entries)
        except ValueError as exc:
            raise FaultPlanError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> FaultPlan:
        """A plan file: the plan's keys at the top level, or all of them under one `[faults]` table."""
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise FaultPlanError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise FaultPlanError(f"{path}: not valid TOML: {exc}") from None
        if "faults" in data:
            outside = [key for key in data if key != "faults"]
            if outside:  # they would be ignored: the plan is read from [faults] alone
                names = ", ".join(_table_name(key, data[key]) for key in outside)
                raise FaultPlanError(f"{path}: {names} outside [faults]; put the whole plan under [faults] "
                                     f"or none of it")
            data = data["faults"]
        return cls.from_mapping(data, source=str(path))

    # -- applying ---------------------------------------------------------------------------
    def apply(self, terminal: Any = None, *, host_admin: Any = None) -> None:
        """Arm everything on `terminal` (devices, message rules, link) and on the host via its admin."""
        if terminal is not None:
            points = terminal.hw.all_fault_points()
            for fault in self.device:
                if fault.point not in points:
                    known = ", ".join(sorted(points))
                    raise FaultPlanError(f"unknown device fault point {fault.point!r}; points: {known}")
                points[fault.point].arm(count=fault.count, probability=fault.probability, always=fault.always,
                                        param=fault.param)
            if self.message or self.link:
                from .chaos import FaultSet

                if terminal.channel.faults is None:
                    terminal.channel.faults = FaultSet(seed=self.seed)
                for rule in self.message:
                    terminal.channel.faults.add(rule)
                for toxic in self.link:
                    if toxic.toxic == "down":  # the whole network: the channel's switch, not a per-frame toxic
                        terminal.channel.link_down = True
                    else:
                        terminal.channel.faults.add_toxic(toxic)
        if host_admin is not None:
            for action in self.host:
                _apply_host(action, host_admin)

    def clear(self, terminal: Any = None, *, host_admin: Any = None) -> None:
        if terminal is not None:
            terminal.hw.disarm_all()
            if terminal.channel.faults is not None:
                terminal.channel.faults.clear()
            terminal.channel.link_down = False
        if host_admin is not None and any(a.action == "maintenance" for a in self.host):
            host_admin.clear_maintenance()

    @contextmanager
    def active(self, terminal: Any = None, *, host_admin: Any = None) -> Iterator[FaultPlan]:
        self.apply(terminal, host_admin=host_admin)
        try:
            yield self
        finally:
            self.clear(terminal, host_admin=host_admin)


def _table_name(key: str, value: Any) -> str:
    """How the user wrote `key` in TOML: `[[key]]` for an array of tables, `[key]` for a table."""
    if key in TABLES or (isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)):
        return f"[[{key}]]"
    return f"[{key}]" if isinstance(value, Mapping) else key


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build(cls: type, entry: Any, where: str) -> Any:
    """One entry, every key known and every required one present, checked by the class itself; any
    error is a FaultPlanError prefixed with `where` (file, table and entry number)."""
    if not isinstance(entry, Mapping):
        raise FaultPlanError(f"{where}: expected a table, got {entry!r}")
    init = [f for f in fields(cls) if f.init]
    known = [f.name for f in init]
    unknown = [key for key in entry if key not in known]
    if unknown:
        names = ", ".join(repr(key) + _did_you_mean(key, known) for key in unknown)
        raise FaultPlanError(f"{where}: unknown keys {names}; known: {', '.join(known)}")
    missing = [f.name for f in init
               if f.default is MISSING and f.default_factory is MISSING and f.name not in entry]
    if missing:
        raise FaultPlanError(f"{where}: missing {', '.join(missing)}")
    try:
        return cls(**entry)
    except (TypeError, ValueError) as exc:
        raise FaultPlanError(f"{where}: {exc}") from None


def _apply_host(action: HostAction, admin: Any) -> None:
    now = admin.ledger.clock()
    if action.action == "maintenance":
        admin.set_maintenance(now, now + action.seconds, action.mode)
    elif action.action == "merchant_changed":
        admin.change_merchant(action.tid, new_mid=action.mid or None, new_name=action.name or None)
    elif action.action == "min_firmware":
        admin.set_min_firmware(action.version)
    elif action.action == "hold_funds":
        admin.hold(action.mid, stan=action.stan, reason=action.reason)
