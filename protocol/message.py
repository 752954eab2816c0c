"""The message model: an MTI and its data elements, with no knowledge of the wire.

Values are held as the dialect's natural Python type so that a message compares equal however it
was built: digit strings for `n` fields (leading zeros kept: "000000000001"), text for `z` (track
data with `D` as separator), `an` and `ans`, and `bytes` for `b` fields. The bitmap is never stored:
it is derived from which fields are present, so it can never disagree with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

FieldValue = str | bytes

#: Fields whose value is a primary account number, masked in every human-facing rendering.
PAN_FIELDS = frozenset({2})
#: Fields that carry track data (the PAN is embedded before the separator).
TRACK_FIELDS = frozenset({35, 36})
#: Fields that must never be shown (PIN block, keys).
SECRET_FIELDS = frozenset({52, 62})


class Message:
    """An ISO 8583 message: `mti` ("0200") plus fields 2..128 keyed by number."""

    __slots__ = ("fields", "mti")

    def __init__(self, mti: str, fields: Mapping[int, FieldValue] | None = None) -> None:
        if not (isinstance(mti, str) and len(mti) == 4 and mti.isdigit()):
            raise ValueError(f"MTI must be 4 digits, got {mti!r}")
        self.mti = mti
        self.fields: dict[int, FieldValue] = dict(fields) if fields else {}

    # Mapping-like access -------------------------------------------------------------------
    def __getitem__(self, number: int) -> FieldValue:
        return self.fields[number]

    def __setitem__(self, number: int, value: FieldValue) -> None:
        if not 2 <= number <= 128:
            raise KeyError(f"field number {number} out of range 2..128")
        self.fields[number] = value

    def __delitem__(self, number: int) -> None:
        del self.fields[number]

    def __contains__(self, number: object) -> bool:
        return number in self.fields

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.fields))

    def get(self, number: int, default: FieldValue | None = None) -> FieldValue | None:
        return self.fields.get(number, default)

    def text(self, number: int, default: str = "") -> str:
        """The field as text (bytes fields as upper-case hex), or `default` when absent."""
        value = self.fields.get(number)
        if value is None:
            return default
        return value.hex().upper() if isinstance(value, bytes) else value

    def copy(self) -> Message:
        return Message(self.mti, self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.mti == other.mti and self.fields == other.fields

    def __hash__(self) -> int:  # messages are mutable; hash by identity like a dict would refuse
        return id(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}: {display_value(n, self.fields[n], mti=self.mti)!r}" for n in sorted(self.fields))
        return f"Message({self.mti!r}, {{{shown}}})"

    # Derived properties ------------------------------------------------------------------
    @property
    def response_mti(self) -> str:
        """The MTI a host answers with (0200 -> 0210, 0820 -> 0830)."""
        return f"{self.mti[:2]}{int(self.mti[2]) + 1}{self.mti[3]}"

    @property
    def is_response(self) -> bool:
        return int(self.mti[2]) % 2 == 1

    @property
    def stan(self) -> str | None:
        value = self.fields.get(11)
        return value if isinstance(value, str) else None

    @property
    def response_code(self) -> str | None:
        value = self.fields.get(39)
        return value if isinstance(value, str) else None

    def as_json_fields(self, *, unmask: bool = False) -> dict[str, str]:
        """Fields keyed by number as text, the contract of `possim decode --json`.

        `unmask` shows the PAN and track data in clear - what someone matching a capture to a card
        needs - but never the PIN block or keys (`SECRET_FIELDS`): nothing a support engineer does
        with a decoded frame needs them, and JSON output is what gets pasted into tickets. The raw
        value of every field is `text(number)`.
        """
        out: dict[str, str] = {}
        for number in sorted(self.fields):
            value = self.fields[number]
            if unmask and number not in SECRET_FIELDS:
                out[str(number)] = value.hex().upper() if isinstance(value, bytes) else value
            else:
                out[str(number)] = display_value(number, value, mti=self.mti)
        return out


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits kept, the rest replaced by '*' (PCI DSS display rule)."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def mask_track(track: str) -> str:
    """Track data with its PAN masked and the discretionary data hidden."""
    for sep in ("D", "=", "d"):
        if sep in track:
            pan, _, rest = track.partition(sep)
            return mask_pan(pan) + sep + "*" * len(rest)
    return mask_pan(track)


def mask_batch_records(value: str) -> str:
    """Field 48 of a batch upload (0320): the PAN inside each 40-digit record masked."""
    if len(value) < 2 or not value[:2].isdigit():
        return value
    out = [value[:2]]
    for start in range(2, len(value), 40):
        record = value[start:start + 40]
        if len(record) == 40:
            pan = record[8:28].lstrip("0")
            record = record[:8] + mask_pan(pan).rjust(20, "0") + record[28:]
        out.append(record)
    return "".join(out)


def display_value(number: int, value: FieldValue, *, mti: str | None = None) -> str:
    """A field as it may appear in a log, trace or report: PAN masked, secrets hidden.

    Pass the MTI where known: field 48 of a batch upload carries PANs.
    """
    if number == 48 and mti in ("0320", "0330") and isinstance(value, str) and len(value) > 4:
        return mask_batch_records(value)
    if number in PAN_FIELDS and isinstance(value, str):
        return mask_pan(value)
    if number in TRACK_FIELDS and isinstance(value, str):
        return mask_track(value)
    if number in SECRET_FIELDS:
        length = len(value)
        return f"<{length} bytes hidden>" if isinstance(value, bytes) else f"<{length} chars hidden>"
    return value.hex().upper() if isinstance(value, bytes) else value
