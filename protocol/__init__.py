"""The wire layer of possim: ISO 8583 codecs, dialects, framing, MAC / keys / PIN block, catalogue.

Sans-I/O by design (DESIGN principle 1, after h11): nothing here touches a socket, a file descriptor
or a clock, so every byte can be tested in memory and every transport is a plug.

    >>> from protocol import Message, get_dialect
    >>> cup = get_dialect("cup-pos")
    >>> raw = cup.encode(Message("0820", {11: "000001", 41: "10000019", 42: "850100082410002",
    ...                                    60: "00000024301"}))
    >>> cup.decode(raw)[60]
    '00000024301'
"""

from .dialect import Dialect, builtin_dialects, get_dialect, load_dialect
from .errors import (
    CodecError,
    DecodeError,
    DialectError,
    EncodeError,
    FramingError,
    KeyCheckError,
    MacError,
    ProtocolError,
    SecurityError,
)
from .message import Message, display_value, mask_pan

__all__ = [
    "CodecError",
    "DecodeError",
    "Dialect",
    "DialectError",
    "EncodeError",
    "FramingError",
    "KeyCheckError",
    "MacError",
    "Message",
    "ProtocolError",
    "SecurityError",
    "builtin_dialects",
    "display_value",
    "get_dialect",
    "load_dialect",
    "mask_pan",
]
