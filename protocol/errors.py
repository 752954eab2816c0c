"""The one error family of the wire layer.

Every decoder in `protocol/` raises only these, so a host can answer 30 and keep serving, and a
user reading a trace sees which field, at which byte, and why - never an unrelated IndexError.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the wire layer raises on bad input."""


class CodecError(ProtocolError):
    """A message could not be decoded or encoded.

    `field` is the ISO 8583 field number (0 for the MTI, 1 for the bitmap, None when the error is
    not tied to one field) and `offset` the byte offset into the input where the problem was found.
    """

    def __init__(self, reason: str, *, field: int | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.field = field
        self.offset = offset
        where = []
        if field is not None:
            where.append("MTI" if field == 0 else "bitmap" if field == 1 else f"field {field}")
        if offset is not None:
            where.append(f"byte {offset}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{reason}")


class DecodeError(CodecError):
    """Bytes that are not a valid message of the dialect."""


class EncodeError(CodecError):
    """A message that cannot be put on the wire in this dialect (bad value, length, format)."""


class FramingError(ProtocolError):
    """A byte stream that does not hold a valid frame (bad length, oversize, bad TPDU or header)."""

    def __init__(self, reason: str, *, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"byte {offset}: {reason}")


class SecurityError(ProtocolError):
    """A key, MAC or PIN block that failed verification or was malformed."""


class KeyCheckError(SecurityError):
    """A working key whose check value does not match: the terminal must refuse the keys."""


class MacError(SecurityError):
    """A message whose MAC does not verify."""


class DialectError(ProtocolError):
    """A dialect spec file that is not valid (names the entry and what is wrong)."""
