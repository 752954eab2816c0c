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

import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .chaos import MessageFault

TOXICS = ("latency", "timeout", "reset_peer", "down", "slicer", "limit_data", "bandwidth")
HOST_ACTIONS = ("maintenance", "merchant_changed", "min_firmware", "hold_funds")


class FaultPlanError(ValueError):
    """A fault plan entry that names an unknown point, action or option."""


@dataclass
class DeviceFault:
    point: str  # "printer.out_of_paper"
    count: int | None = None
    probability: float | None = None
    always: bool = False
    param: int | None = None


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


@dataclass
class FaultPlan:
    seed: int = 0
    device: list[DeviceFault] = field(default_factory=list)
    message: list[MessageFault] = field(default_factory=list)
    link: list[LinkToxic] = field(default_factory=list)
    host: list[HostAction] = field(default_factory=list)

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<plan>") -> FaultPlan:
        try:
            return cls(
                seed=int(data.get("seed", 0)),
                device=[_build(DeviceFault, entry, f"{source}: device") for entry in data.get("device", [])],
                message=[_build(MessageFault, entry, f"{source}: message") for entry in data.get("message", [])],
                link=[_build(LinkToxic, entry, f"{source}: link") for entry in data.get("link", [])],
                host=[_build(HostAction, entry, f"{source}: host") for entry in data.get("host", [])],
            )
        except ValueError as exc:
            raise FaultPlanError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> FaultPlan:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise FaultPlanError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise FaultPlanError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data.get("faults", data), source=str(path))

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


def _build(cls: type, entry: Any, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise FaultPlanError(f"{where}: expected a table, got {entry!r}")
    known = {f.name for f in fields(cls) if f.init}
    unknown = set(entry) - known
    if unknown:
        raise FaultPlanError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    try:
        return cls(**entry)
    except TypeError as exc:
        raise FaultPlanError(f"{where}: {exc}") from None
    except ValueError as exc:
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
