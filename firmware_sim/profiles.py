"""Firmware behaviour profiles: what each version can do and which known defects it carries.

From the source documents: 2.1.5 left 87,000 CNY pending until the terminal was updated to 3.0.8 (its
settlement message lacks data the acquirer needs to release funds); 2.3.6 failed against a host whose
minimum was newer (latest then: 3.0.2); 3.0.2 and 3.0.8 are good.

Defects act on the wire, never as a flag the host reads: a profile's `settlement_request(msg)` is the
0500 as that firmware really builds it. For "settlement-funds-pending" it drops field 49 (currency):
the host cannot tell which currency the totals are in, so it accepts the totals (39 = 00) but leaves
the batch's funds pending with the reason recorded, and asks for a firmware download (processing
requirement 6). Re-settling the same batch from fixed firmware (49 = 156) releases them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.message import Message

VersionKey = tuple[int, int, int]

#: Every defect a profile may carry, with what it does on the wire.
DEFECTS: dict[str, str] = {
    "settlement-funds-pending": "the settlement request (0500) omits field 49 (currency); the host accepts the "
                                "totals but leaves the batch's funds pending until it is re-settled on fixed "
                                "firmware",
    "below-minimum": "older than the acquirer's minimum firmware version: sign-in is refused (39 = 58, header "
                     "processing requirement 6 = download firmware)",
}

FULL_CAPABILITIES: tuple[str, ...] = ("swipe", "chip", "contactless", "e-signature", "firmware-update")


def parse_version(text: str) -> VersionKey:
    """`"3.0.8"` -> `(3, 0, 8)`; anything else is a ValueError naming the text."""
    parts = str(text).split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise ValueError(f"firmware version {text!r} must look like 3.0.8")
    return int(parts[0]), int(parts[1]), int(parts[2])


def compare_versions(a: str, b: str) -> int:
    """-1 when a is older than b, 0 when equal, 1 when newer."""
    ka, kb = parse_version(a), parse_version(b)
    return (ka > kb) - (ka < kb)


def is_older(a: str, b: str) -> bool:
    return parse_version(a) < parse_version(b)


@dataclass(frozen=True)
class Profile:
    """One firmware version's behaviour. `defects` and `capabilities` are tuples (the profile is immutable);
    `list(profile.defects)` for JSON. `boots` False models an image whose first boot fails (a test profile)."""

    version: str
    released: str
    defects: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = FULL_CAPABILITIES
    notes: str = ""
    known: bool = True
    boots: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        parse_version(self.version)
        unknown = [d for d in self.defects if d not in DEFECTS]
        if unknown:
            raise ValueError(f"firmware {self.version}: unknown defect(s) {unknown}; known: {sorted(DEFECTS)}")

    @property
    def key(self) -> VersionKey:
        return parse_version(self.version)

    @property
    def good(self) -> bool:
        return not self.defects

    def has(self, defect: str) -> bool:
        return defect in self.defects

    def settlement_request(self, message: Message) -> Message:
        """The 0500 as this firmware sends it (a copy; the argument is left alone)."""
        out = message.copy()
        if self.has("settlement-funds-pending") and 49 in out:
            del out[49]
        return out


PROFILES: dict[str, Profile] = {p.version: p for p in (
    Profile("2.1.5", "2019-03-01", ("settlement-funds-pending",), ("swipe", "chip"),
            "settlement request omits the currency (field 49): funds stay pending until re-settled on fixed "
            "firmware (source case 1: 87,000 CNY arrived only after the update to 3.0.8)"),
    Profile("2.3.6", "2020-06-15", ("below-minimum",), ("swipe", "chip", "contactless", "firmware-update"),
            "older than the acquirer's minimum (3.0.2 in the source documents): sign-in refused with a "
            "download-firmware request"),
    Profile("3.0.2", "2022-01-10", (), notes="the latest at the time of the source documents"),
    Profile("3.0.8", "2023-05-20", (), notes="the update that released the stuck funds in source case 1"),
)}

#: The newest shipped version (what a host's firmware repository offers by default).
LATEST = "3.0.8"


def shipped_versions() -> list[str]:
    """The shipped profiles, oldest first."""
    return sorted(PROFILES, key=parse_version)


def get_profile(version: str) -> Profile:
    """The shipped profile, or for an unknown (but well-formed) version a good profile with `known=False`."""
    profile = PROFILES.get(version)
    if profile is None:
        parse_version(version)
        return Profile(version, "unknown", notes="no profile: treated as good", known=False)
    return profile
