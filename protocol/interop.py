"""Equivalent pyiso8583 specifications for possim dialects.

pyiso8583 is a well-known independent ISO 8583 codec. Describing a possim dialect in its terms lets
the test suite decode possim's bytes with it (and vice versa) and lets the codec benchmark compare
like with like. possim does not depend on pyiso8583; this module only builds a dictionary.
"""

from __future__ import annotations

from typing import Any

from .dialect import Dialect
from .fields import FieldSpec
from .message import Message

_LEN_TYPE = {  # (length encoding, prefix digits) -> pyiso8583 len_type
    ("bcd", 2): 1, ("bcd", 3): 2, ("ascii", 2): 2, ("ascii", 3): 3, ("binary", 2): 1, ("binary", 3): 2,
}
_LEN_ENC = {"bcd": "bcd", "ascii": "ascii", "binary": "b"}


def expressible(spec: FieldSpec) -> bool:
    """Whether pyiso8583 can describe this field exactly.

    A variable-length binary field carried as hex text (ASCII dialects) has a prefix counting the
    binary bytes while 2 characters per byte travel; pyiso8583 counts either the bytes on the wire or
    nibbles, so it cannot express that field.
    """
    return not (spec.kind == "b" and spec.data_encoding == "ascii" and spec.prefix)


def _field(spec: FieldSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "len_enc": _LEN_ENC[spec.length_encoding],
        "len_type": _LEN_TYPE[(spec.length_encoding, spec.prefix)] if spec.prefix else 0,
        "max_len": spec.length,
        "desc": spec.name,
    }
    if spec.kind in ("n", "z") and spec.data_encoding == "bcd":
        entry.update(data_enc="b", len_count="nibbles")
        entry["left_pad" if spec.align == "right" else "right_pad"] = "0"
    elif spec.kind == "b" and spec.data_encoding == "binary":
        entry["data_enc"] = "b"
    elif spec.kind == "b":  # fixed binary as hex text: 2 characters per byte on the wire
        entry.update(data_enc="ascii", max_len=2 * spec.length)
    else:
        entry["data_enc"] = "ascii" if spec.kind in ("n", "z") else spec.charset
    return entry


def pyiso8583_spec(dialect: Dialect) -> dict[str, dict[str, Any]]:
    """A pyiso8583 spec dict describing `dialect` (MTI, bitmaps and every field it can express).

    Fields pyiso8583 cannot describe exactly (see `expressible`) are left out, so a message using
    them fails loudly in pyiso8583 instead of being decoded differently; `pyiso8583_gaps` lists them.
    """
    binary = dialect.bitmap_encoding == "binary"
    bitmap = {"data_enc": "b" if binary else "ascii", "len_enc": "ascii", "len_type": 0,
              "max_len": 8 if binary else 16, "desc": "bitmap"}
    mti = ({"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2, "desc": "MTI"}
           if dialect.mti_encoding == "bcd"
           else {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4, "desc": "MTI"})
    spec: dict[str, dict[str, Any]] = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "header"},
        "t": mti,
        "p": bitmap,
        "1": dict(bitmap, desc="secondary bitmap"),
    }
    for number, field_spec in dialect.specs.items():
        if expressible(field_spec):
            spec[str(number)] = _field(field_spec)
    return spec


def pyiso8583_gaps(dialect: Dialect) -> list[int]:
    """Field numbers of `dialect` that `pyiso8583_spec` leaves out."""
    return sorted(n for n, s in dialect.specs.items() if not expressible(s))


def to_pyiso8583(number: int, value: str | bytes, spec: FieldSpec) -> str:
    """A possim field value as pyiso8583 represents it (hex text for BCD and binary data)."""
    if isinstance(value, bytes):
        return value.hex().upper()
    if spec.kind == "z" and spec.data_encoding == "ascii":
        return value.replace("D", "=")  # ASCII track data keeps the ISO '=' on the wire
    return value


def from_pyiso8583(value: str, spec: FieldSpec) -> str | bytes:
    """A pyiso8583 field value as possim's message model holds it."""
    if spec.kind == "b":
        return bytes.fromhex(value)
    if spec.kind == "z":
        # BCD: hex text, upper-case 'D'; ASCII: the wire's '=' (possim's model always says 'D')
        return value.upper() if spec.data_encoding == "bcd" else value.replace("=", "D")
    return value


def message_to_pyiso8583(message: Message, dialect: Dialect) -> dict[str, str]:
    """A possim Message as a pyiso8583 document (`iso8583.encode` input)."""
    doc = {"t": message.mti}
    for number, value in message.fields.items():
        doc[str(number)] = to_pyiso8583(number, value, dialect.specs[number])
    return doc


def message_from_pyiso8583(doc: dict[str, str], dialect: Dialect) -> Message:
    """A pyiso8583 decoded document (`iso8583.decode` output) as a possim Message."""
    fields = {int(key): from_pyiso8583(value, dialect.specs[int(key)])
              for key, value in doc.items() if key.isdigit() and key not in ("1", "65")}
    return Message(doc["t"], fields)
