"""Firmware behaviour profiles: what each version can do and which known defects it carries.

From the source documents: 2.1.5 left 87,000 CNY pending until the terminal was updated to 3.0.8 (its
settlement message lacks data the acquirer needs to release funds); 2.3.6 failed to sign off against a
host whose minimum was newer; 3.0.2 and 3.0.8 are good. Defects act on the wire (see terminal.firmware),
never as a flag the host reads.
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_version(text: str) -> tuple[int, int, int]:
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"firmware version {text!r} must look like 3.0.8")
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class Profile:
    version: str
    released: str
    defects: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ("swipe", "chip", "contactless", "e-signature")
    notes: str = ""
    known: bool = True

    @property
    def key(self) -> tuple[int, int, int]:
        return parse_version(self.version)


PROFILES: dict[str, Profile] = {p.version: p for p in (
    Profile("2.1.5", "2019-03-01", ("settlement-funds-pending",), ("swipe", "chip"),
            "settlement request omits the currency (field 49): funds stay pending until re-settled on fixed "
            "firmware (source case 1: 87,000 CNY)"),
    Profile("2.3.6", "2020-06-15", ("below-minimum",), ("swipe", "chip", "contactless"),
            "older than the acquirer's minimum: sign-in refused with a download-firmware request"),
    Profile("3.0.2", "2022-01-10", (), notes="current at the time of the source documents"),
    Profile("3.0.8", "2023-05-20", (), notes="the update that released the stuck funds in source case 1"),
)}

LATEST = "3.0.8"


def get_profile(version: str) -> Profile:
    profile = PROFILES.get(version)
    if profile is None:
        parse_version(version)
        return Profile(version, "unknown", notes="no profile: treated as good", known=False)
    return profile
