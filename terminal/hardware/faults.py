"""Named fault points: the switches a fault plan flips on a terminal's hardware.

Every device owns a `FaultPoints` collection of named `FaultPoint`s ("reader.read_error",
"printer.jam" ...). A device asks `faults.fires("read_error")` at the moment the fault could strike;
a fault plan arms a point by count ("the next 3 reads fail"), by probability (drawn from the device's
seeded `random.Random`, so a run is reproducible) or always (until disarmed). Nothing else decides
whether a fault happens: a fault changes what the device does, and the rest of the terminal follows.

Points are created lazily on first access, so an idle fleet of terminals with no faults armed holds
no `FaultPoint` objects at all; `fires()` on a never-touched point is a dict miss.

`catalogue()` lists every fault point a terminal has, with what it does, for fault plans and docs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

#: device prefix -> {point name -> what it does}, filled by each device module at import.
_CATALOGUE: dict[str, dict[str, str]] = {}


def declare(device: str, points: dict[str, str]) -> tuple[str, ...]:
    """Register a device's fault points (name -> description); returns the point names.

    Called once per device class at import. Declaring the same device twice must give the same points.
    """
    if not device.isidentifier():
        raise ValueError(f"device prefix must be an identifier, got {device!r}")
    for name in points:
        if not name.isidentifier():
            raise ValueError(f"fault point name must be an identifier, got {name!r}")
    known = _CATALOGUE.get(device)
    if known is not None and known != points:
        raise ValueError(f"fault points of device {device!r} declared twice with different points")
    _CATALOGUE[device] = dict(points)
    return tuple(points)


def catalogue() -> dict[str, str]:
    """Every fault point of a terminal's hardware: {"reader.read_error": "what it does", ...}."""
    import terminal.hardware  # noqa: F401  (importing the package declares every device's points)

    return {f"{device}.{name}": text for device in sorted(_CATALOGUE) for name, text in _CATALOGUE[device].items()}


def fault_point_names() -> tuple[str, ...]:
    """The full names of every fault point of a terminal, sorted."""
    return tuple(sorted(catalogue()))


class FaultPoint:
    """One named fault: disarmed, or armed by count, probability or always.

    Arming modes (a new `arm` replaces the previous one):

    - ``always=True``: fires on every check until `disarm()`.
    - ``count=N``: fires on the next N checks, then disarms itself.
    - ``probability=p``: each check fires with probability p, drawn from the device's rng.
    - ``count=N, probability=p``: fires with probability p, at most N times, then disarms.

    ``param`` carries a number some points need (the line at which "printer.fail_after_lines" strikes).
    `fired` counts how many times the point fired since it was created (arming does not reset it).
    """

    __slots__ = ("_always", "_count", "_probability", "_rng", "fired", "name", "param")

    def __init__(self, name: str, rng: random.Random | None = None) -> None:
        self.name = name
        self._rng = rng
        self._count: int | None = None
        self._probability: float | None = None
        self._always = False
        self.param: int | None = None
        self.fired = 0

    def arm(
        self,
        *,
        count: int | None = None,
        probability: float | None = None,
        always: bool = False,
        param: int | None = None,
    ) -> FaultPoint:
        if always and (count is not None or probability is not None):
            raise ValueError(f"{self.name}: 'always' cannot be combined with count or probability")
        if not always and count is None and probability is None:
            raise ValueError(f"{self.name}: arm needs count=N, probability=p or always=True")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"{self.name}: count must be an integer >= 0, got {count!r}")
        if probability is not None:
            if isinstance(probability, bool) or not isinstance(probability, int | float):
                raise ValueError(f"{self.name}: probability must be a number, got {probability!r}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{self.name}: probability must be within 0..1, got {probability!r}")
            if probability not in (0.0, 1.0) and self._rng is None:
                raise ValueError(f"{self.name}: a probability needs the device's rng")
        if param is not None and (isinstance(param, bool) or not isinstance(param, int) or param < 0):
            raise ValueError(f"{self.name}: param must be an integer >= 0, got {param!r}")
        self._always = always
        self._count = count
        self._probability = None if probability is None else float(probability)
        self.param = param
        if count == 0:
            self.disarm()
        return self

    def disarm(self) -> None:
        self._always = False
        self._count = None
        self._probability = None
        self.param = None

    @property
    def armed(self) -> bool:
        return self._always or self._count is not None or self._probability is not None

    @property
    def remaining(self) -> int | None:
        """How many more times a count-armed point may fire (None: not limited by count)."""
        return self._count

    @property
    def probability(self) -> float | None:
        return self._probability

    def fires(self) -> bool:
        """Check the point once: True when the fault strikes now (consumes a count, draws once)."""
        if self._always:
            self.fired += 1
            return True
        if self._count is None and self._probability is None:
            return False
        p = self._probability
        if p is not None:
            if p <= 0.0:
                hit = False
            elif p >= 1.0:
                hit = True
            else:
                assert self._rng is not None
                hit = self._rng.random() < p
            if not hit:
                return False
        if self._count is not None:
            self._count -= 1
            if self._count <= 0:
                self.disarm()
        self.fired += 1
        return True

    def describe(self) -> dict[str, object]:
        if self._always:
            mode = "always"
        elif self._count is not None and self._probability is not None:
            mode = "count+probability"
        elif self._count is not None:
            mode = "count"
        elif self._probability is not None:
            mode = "probability"
        else:
            mode = "off"
        out: dict[str, object] = {"armed": self.armed, "mode": mode, "fired": self.fired}
        if self._count is not None:
            out["remaining"] = self._count
        if self._probability is not None:
            out["probability"] = self._probability
        if self.param is not None:
            out["param"] = self.param
        return out

    def __repr__(self) -> str:
        d = self.describe()
        return f"FaultPoint({self.name!r}, mode={d['mode']}, fired={self.fired})"


class FaultPoints:
    """The fault points of one device, by short name: ``reader.faults["read_error"]``.

    Only the names the device declared exist; a typo raises KeyError listing the real ones.
    """

    __slots__ = ("_names", "_points", "_rng", "device")

    def __init__(self, device: str, names: tuple[str, ...], rng: random.Random | None = None) -> None:
        self.device = device
        self._names = names
        self._rng = rng
        self._points: dict[str, FaultPoint] | None = None

    def __getitem__(self, name: str) -> FaultPoint:
        points = self._points
        if points is not None:
            point = points.get(name)
            if point is not None:
                return point
        if name not in self._names:
            raise KeyError(f"device {self.device!r} has no fault point {name!r}; it has: {', '.join(self._names)}")
        if points is None:
            points = self._points = {}
        point = points[name] = FaultPoint(f"{self.device}.{name}", self._rng)
        return point

    def fires(self, name: str) -> bool:
        """`self[name].fires()`, without creating the point when it was never armed."""
        points = self._points
        if points is None:
            return False
        point = points.get(name)
        return point is not None and point.fires()

    def get(self, name: str) -> FaultPoint | None:
        """The point if it was ever touched (armed or inspected), else None. Never creates one."""
        return None if self._points is None else self._points.get(name)

    def names(self) -> tuple[str, ...]:
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[FaultPoint]:
        for name in self._names:
            yield self[name]

    def __len__(self) -> int:
        return len(self._names)

    def items(self) -> Iterator[tuple[str, FaultPoint]]:
        """(full name, point) pairs: ("reader.read_error", FaultPoint)."""
        for point in self:
            yield point.name, point

    def disarm_all(self) -> None:
        if self._points is not None:
            for point in self._points.values():
                point.disarm()

    def armed(self) -> list[FaultPoint]:
        return [] if self._points is None else [p for p in self._points.values() if p.armed]

    def describe(self) -> dict[str, dict[str, object]]:
        """{"reader.read_error": {"armed": False, "mode": "off", "fired": 0}, ...}."""
        out: dict[str, dict[str, object]] = {}
        for name in self._names:
            point = self.get(name)
            out[f"{self.device}.{name}"] = (
                point.describe() if point is not None else {"armed": False, "mode": "off", "fired": 0}
            )
        return out

    def __repr__(self) -> str:
        return f"FaultPoints({self.device!r}, {list(self._names)})"
