"""The terminal's seam to firmware behaviour: what a given version does differently on the wire.

A defect is modelled in the messages the terminal sends, never as a flag the host reads: firmware
2.1.5 (source case: 87,000 CNY stuck until the update to 3.0.8) builds its settlement request without
the currency field, and the host, unable to settle the funds from it, leaves them pending.
`firmware_sim` supplies full profiles (images, update); this module only applies their wire effects.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.message import Message

SETTLEMENT_DEFECT_VERSIONS = frozenset({"2.1.5"})


@dataclass(frozen=True)
class WireProfile:
    version: str
    settlement_defect: bool = False

    def settlement_request(self, message: Message) -> Message:
        """The 0500 as this firmware actually sends it."""
        if self.settlement_defect and 49 in message:
            del message[49]
        return message


def firmware_profile(version: str) -> WireProfile:
    try:
        from firmware_sim.profiles import get_profile  # the full profiles, when present
    except ImportError:
        return WireProfile(version, version in SETTLEMENT_DEFECT_VERSIONS)
    profile = get_profile(version)
    defects = set(getattr(profile, "defects", ()))
    return WireProfile(version, version in SETTLEMENT_DEFECT_VERSIONS or "settlement-funds-pending" in defects)
