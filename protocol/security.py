"""Keys, MACs and PIN blocks of the cup-pos dialect (sans-I/O, `cryptography` for DES).

Exactly as cup-pos.md "Keys and MAC" says: working keys travel in 0810 field 62 encrypted under the
terminal master key with 4-byte check values; the POS ECB MAC covers the message from the MTI to
the end of field 63; PIN blocks are ISO 9564 format 0 under the PIN key.

Keys, clear PIN blocks and PINs never appear in a repr, a log line or an exception message: errors
name the key by role (PIN / MAC / track) and give lengths, never contents. This module logs nothing.
"""

from __future__ import annotations

import functools
import hmac
import operator
import os
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .errors import KeyCheckError, SecurityError
from .message import Message

with warnings.catch_warnings():
    # The primitives-package TripleDES warns that it moved; the decrepit one is the same cipher.
    warnings.simplefilter("ignore")
    try:  # cryptography >= 43 keeps 3DES in the "decrepit" package
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

__all__ = [
    "KEY_MODE_LENGTHS",
    "WorkingKeys",
    "decrypt_pin",
    "encrypt_pin_block",
    "generate_working_keys",
    "key_check_value",
    "mac_input",
    "mac_pos_ecb",
    "mac_x919",
    "macs_equal",
    "pin_block_format0",
    "sign",
    "tdes_decrypt",
    "tdes_encrypt",
    "unwrap_working_keys",
    "verify",
    "wrap_working_keys",
]

#: Field 62 length per key mode (60.3 of the sign-in): 004 PIN+MAC+track, 003 PIN+MAC, 001 single-length.
KEY_MODE_LENGTHS = {"004": 60, "003": 40, "001": 24}
#: Working key length per key mode.
_KEY_SIZE = {"004": 16, "003": 16, "001": 8}
_KEY_NAMES = ("PIN", "MAC", "track")

# -------------------------------------------------------------------------------------------------
# 3DES
# -------------------------------------------------------------------------------------------------


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise SecurityError(f"{what} must be bytes, got {type(value).__name__}")


def _key24(key: object) -> bytes:
    """Any DES key length as the 24-byte K1||K2||K3 form (cryptography deprecates the shorter forms)."""
    key = _as_bytes(key, "a DES key")
    if len(key) == 8:
        return key * 3  # single-length key K used as K||K: single DES
    if len(key) == 16:
        return key + key[:8]  # double-length key K1||K2 is K1||K2||K1
    if len(key) == 24:
        return key
    raise SecurityError(f"a DES key must be 8, 16 or 24 bytes, got {len(key)}")


def _blocks(data: object) -> bytes:
    data = _as_bytes(data, "3DES data")
    if len(data) % 8:
        raise SecurityError(f"3DES data must be a multiple of 8 bytes, got {len(data)}")
    return data


#: ECB contexts kept per thread (a context is not safe to share between threads; the host and a
#: terminal in one process use the same MAC key from different threads in the pytest plugin).
_CONTEXTS_PER_THREAD = 128
_contexts = threading.local()


def _ecb(key: bytes, decrypt: bool) -> Any:
    """A reusable ECB context for `key`: creating one costs more than the MAC it computes.

    ECB carries no state between blocks, so one context serves any number of `update` calls; the
    cache is a bounded LRU so a host serving 10,000 terminals does not keep 10,000 contexts.
    """
    cache: OrderedDict[tuple[bytes, bool], Any] | None = getattr(_contexts, "cache", None)
    if cache is None:
        cache = _contexts.cache = OrderedDict()
    slot = (key, decrypt)
    context = cache.get(slot)
    if context is None:
        cipher = Cipher(TripleDES(_key24(key)), modes.ECB())
        context = cipher.decryptor() if decrypt else cipher.encryptor()
        cache[slot] = context
        if len(cache) > _CONTEXTS_PER_THREAD:
            cache.popitem(last=False)
    else:
        cache.move_to_end(slot)
    return context


def tdes_encrypt(key: bytes, block: bytes) -> bytes:
    """3DES-ECB encryption (EDE); an 8-byte key K acts as K||K, i.e. single DES."""
    data = _blocks(block)
    return _ecb(_as_bytes(key, "a DES key"), False).update(data)  # type: ignore[no-any-return]


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB decryption, the inverse of `tdes_encrypt`."""
    data = _blocks(data)
    return _ecb(_as_bytes(key, "a DES key"), True).update(data)  # type: ignore[no-any-return]


def key_check_value(key: bytes) -> bytes:
    """First 4 bytes of the clear key's 3DES-ECB encryption of eight 0x00 bytes."""
    return tdes_encrypt(key, bytes(8))[:4]


# -------------------------------------------------------------------------------------------------
# Working keys
# -------------------------------------------------------------------------------------------------


def _odd_parity(key: bytes) -> bytes:
    """Each byte's low bit set so that the byte has an odd number of 1 bits (DES key parity)."""
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in key)


#: DES weak and semi-weak keys (FIPS 74 section 3.6 / NIST SP 800-67 section 3.3.2), odd parity form.
_WEAK_DES_KEYS = frozenset(bytes.fromhex(k) for k in (
    "0101010101010101", "FEFEFEFEFEFEFEFE", "E0E0E0E0F1F1F1F1", "1F1F1F1F0E0E0E0E",
    "011F011F010E010E", "1F011F010E010E01", "01E001E001F101F1", "E001E001F101F101",
    "01FE01FE01FE01FE", "FE01FE01FE01FE01", "1FE01FE00EF10EF1", "E01FE01FF10EF10E",
    "1FFE1FFE0EFE0EFE", "FE1FFE1FFE0EFE0E", "E0FEE0FEF1FEF1FE", "FEE0FEE0FEF1FEF1",
))


def _weak(key: bytes) -> bool:
    """A key that is, or degenerates into, a DES weak/semi-weak key, or a 'double' key with K1 = K2."""
    halves = [key[i:i + 8] for i in range(0, len(key), 8)]
    return any(h in _WEAK_DES_KEYS for h in halves) or (len(halves) >= 2 and halves[0] == halves[1])


@dataclass(frozen=True, slots=True)
class WorkingKeys:
    """The session keys a sign-in delivers. Never printed: repr shows only the public check values.

    Slotted: a fleet holds two of these per signed-in terminal (the terminal's and the host's).
    """

    pin_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    track_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, value in (("PIN", self.pin_key), ("MAC", self.mac_key), ("track", self.track_key)):
            if value is None and name == "track":
                continue
            key = _as_bytes(value, f"the {name} key")
            if len(key) not in (8, 16, 24):
                raise SecurityError(f"the {name} key must be 8, 16 or 24 bytes, got {len(key)}")
            object.__setattr__(self, f"{name.lower()}_key", key)

    def __repr__(self) -> str:
        keys = (self.pin_key, self.mac_key, self.track_key)
        kcvs = "/".join(key_check_value(k).hex().upper() for k in keys if k is not None)
        return f"WorkingKeys(kcv={kcvs})"


def _check_mode(mode: object) -> str:
    if not isinstance(mode, str) or mode not in KEY_MODE_LENGTHS:
        raise SecurityError(f"unknown key mode {mode!r}; expected 001, 003 or 004")
    return mode


def generate_working_keys(mode: str = "004", rng: Callable[[int], bytes] = os.urandom) -> WorkingKeys:
    """Fresh working keys with odd DES parity: 16-byte keys for 004 / 003 (track key only in 004),
    8-byte keys for 001. Weak or semi-weak DES halves and double keys with equal halves are drawn again."""
    mode = _check_mode(mode)
    size = _KEY_SIZE[mode]

    def draw(name: str) -> bytes:
        for _ in range(16):
            raw = rng(size)
            if not isinstance(raw, bytes | bytearray) or len(raw) != size:
                raise SecurityError(f"the random source gave no {size} bytes for the {name} key")
            key = _odd_parity(bytes(raw))
            if not _weak(key):
                return key
        raise SecurityError(f"the random source keeps giving weak DES keys (for the {name} key)")

    pin, mac = draw("PIN"), draw("MAC")
    track = draw("track") if mode == "004" else None
    return WorkingKeys(pin, mac, track)


def wrap_working_keys(tmk: bytes, keys: WorkingKeys, mode: str = "004") -> bytes:
    """Field 62 of an 0810: each key 3DES-ECB encrypted under the TMK, followed by the 4-byte check value
    of the clear key (PIN, MAC, then track for 004): 60 / 40 / 24 bytes for 004 / 003 / 001."""
    mode = _check_mode(mode)
    size = _KEY_SIZE[mode]
    if mode == "004" and keys.track_key is None:
        raise SecurityError("key mode 004 needs a track key")
    order = (keys.pin_key, keys.mac_key, keys.track_key)[: 3 if mode == "004" else 2]
    out = bytearray()
    for name, key in zip(_KEY_NAMES, order, strict=False):
        assert key is not None
        if len(key) != size:
            raise SecurityError(f"key mode {mode} needs {size}-byte keys; the {name} key has {len(key)}")
        out += tdes_encrypt(tmk, key) + key_check_value(key)
    return bytes(out)


def unwrap_working_keys(tmk: bytes, field62: bytes, mode: str | None = None) -> WorkingKeys:
    """Decrypt and check the working keys of an 0810 (mode inferred from the length when None).

    A wrong check value raises KeyCheckError naming the key (PIN, MAC or track): the terminal must refuse
    all the keys. A length that fits no key mode (or not the given one) raises SecurityError.
    """
    field62 = _as_bytes(field62, "field 62")
    if mode is None:
        mode = next((m for m, n in KEY_MODE_LENGTHS.items() if n == len(field62)), None)
        if mode is None:
            raise SecurityError(f"field 62 of {len(field62)} bytes matches no key mode (60, 40 or 24 bytes)")
    mode = _check_mode(mode)
    if len(field62) != KEY_MODE_LENGTHS[mode]:
        raise SecurityError(f"field 62 has {len(field62)} bytes; key mode {mode} needs {KEY_MODE_LENGTHS[mode]}")
    size = _KEY_SIZE[mode]
    keys: list[bytes] = []
    for index, name in enumerate(_KEY_NAMES[: 3 if mode == "004" else 2]):
        chunk = field62[index * (size + 4):(index + 1) * (size + 4)]
        clear = tdes_decrypt(tmk, chunk[:size])
        if not hmac.compare_digest(key_check_value(clear), chunk[size:]):
            raise KeyCheckError(f"{name} key check value does not match: keys refused")
        keys.append(clear)
    return WorkingKeys(keys[0], keys[1], keys[2] if len(keys) == 3 else None)


# -------------------------------------------------------------------------------------------------
# MAC
# -------------------------------------------------------------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("XOR of blocks of different lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def mac_pos_ecb(mac_key: bytes, data: bytes) -> bytes:
    """The "POS ECB" MAC of cup-pos.md, 8 ASCII bytes (upper-case hex digits).

    Pad with 0x00 to a multiple of 8, XOR all blocks into R; take R as 16 upper-case hex characters;
    3DES-encrypt the first 8 under the MAC key, XOR with the last 8, encrypt again; the MAC is the first
    8 characters of the result in upper-case hex. An 8-byte MAC key K is used as K||K.
    """
    data = _as_bytes(data, "MAC data")
    padded = data + bytes(-len(data) % 8)
    # XOR of all 8-byte blocks, in C: as native 64-bit words the XOR is the same byte for byte
    acc = functools.reduce(operator.xor, memoryview(padded).cast("Q"), 0)
    r_hex = acc.to_bytes(8, sys.byteorder).hex().upper().encode("ascii")
    first = tdes_encrypt(mac_key, r_hex[:8])
    second = tdes_encrypt(mac_key, _xor(first, r_hex[8:]))
    return second.hex().upper().encode("ascii")[:8]


def mac_x919(mac_key: bytes, data: bytes) -> bytes:
    """ANSI X9.19 retail MAC (ISO/IEC 9797-1 MAC algorithm 3, padding method 1), 8 bytes.

    Single-DES CBC under the left key half over all blocks (zero IV, data zero-padded; empty data is one
    zero block), then decrypt the last block with the right half and encrypt it with the left half.
    Keys are 16 bytes (K||K'); an 8-byte key K is used as K||K (which is plain CBC-MAC, algorithm 1).
    """
    key = _as_bytes(mac_key, "a MAC key")
    if len(key) not in (8, 16):
        raise SecurityError(f"an X9.19 MAC key must be 8 or 16 bytes, got {len(key)}")
    left, right = key[:8], key[-8:]
    data = _as_bytes(data, "MAC data")
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    chain = bytes(8)
    for i in range(0, len(padded), 8):
        chain = tdes_encrypt(left, _xor(chain, padded[i:i + 8]))
    return tdes_encrypt(left, tdes_decrypt(right, chain))


def macs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two MACs (False when the lengths differ)."""
    return hmac.compare_digest(a, b)


class _Encoder(Protocol):
    def encode(self, message: Message) -> bytes: ...


def mac_input(dialect: _Encoder, msg: Message) -> bytes:
    """The MAC'd bytes: the message from the MTI to the end of field 63, bitmap with bit 64 set.

    Field 64 is set to eight zero bytes in a copy, the copy encoded, and field 64's encoding cut off the
    end (8 bytes in cup-pos; its encoded size in the dialect, measured by encoding once without it, so a
    dialect that writes binary fields as hex text is cut right too). `msg` itself is not changed.
    """
    if any(n > 64 for n in msg.fields):
        raise SecurityError("a field-64 MAC covers messages with fields up to 64 only (fields above 64 present)")
    with_mac = msg.copy()
    with_mac[64] = bytes(8)
    without_mac = msg.copy()
    without_mac.fields.pop(64, None)
    encoded = dialect.encode(with_mac)
    cut = len(encoded) - len(dialect.encode(without_mac))
    if cut <= 0:
        raise SecurityError("the dialect encodes field 64 as nothing: no MAC input can be cut")
    return encoded[:-cut]


def _mac_cut(dialect: object) -> int | None:
    """How many bytes field 64 takes at the end of an encoded message, or None if the dialect cannot say."""
    field_bytes = getattr(dialect, "field_bytes", None)
    if field_bytes is None:
        return None
    return len(field_bytes(64, bytes(8))) or None


def sign(dialect: _Encoder, msg: Message, mac_key: bytes) -> bytes:
    """Set field 64 of `msg` to its POS ECB MAC under `mac_key`; return the signed message's encoding.

    One encoding serves both the MAC input and the wire: the message is encoded with a zero MAC, the
    MAC computed over all but field 64's bytes, and those bytes replaced - callers that send the
    message use the returned bytes instead of encoding it again.
    """
    if any(n > 64 for n in msg.fields):
        raise SecurityError("a field-64 MAC covers messages with fields up to 64 only (fields above 64 present)")
    cut = _mac_cut(dialect)
    if cut is None:
        msg[64] = mac_pos_ecb(mac_key, mac_input(dialect, msg))
        return dialect.encode(msg)
    msg[64] = bytes(8)
    encoded = dialect.encode(msg)
    body = encoded[:-cut]
    mac = mac_pos_ecb(mac_key, body)
    msg[64] = mac
    return body + dialect.field_bytes(64, mac)  # type: ignore[attr-defined, no-any-return]


def verify(dialect: _Encoder, msg: Message, mac_key: bytes, *, encoded: bytes | None = None) -> bool:
    """Whether field 64 is present and is the message's POS ECB MAC under `mac_key` (constant-time).

    With `encoded` (the bytes `msg` was decoded from), the MAC is checked over those bytes as they
    came - what the sender MAC'd - without encoding the message again.
    """
    mac = msg.get(64)
    if not isinstance(mac, bytes):
        return False
    cut = _mac_cut(dialect) if encoded is not None and max(msg.fields) == 64 else None
    if cut is not None and encoded is not None and len(encoded) > cut:
        return macs_equal(mac, mac_pos_ecb(mac_key, encoded[:-cut]))
    return macs_equal(mac, mac_pos_ecb(mac_key, mac_input(dialect, msg)))


# -------------------------------------------------------------------------------------------------
# PIN block (ISO 9564-1 format 0)
# -------------------------------------------------------------------------------------------------


def _check_pin(pin: object) -> str:
    if not (isinstance(pin, str) and pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise SecurityError("a PIN must be 4 to 12 digits")
    return pin


def _pan_field(pan: object) -> bytes:
    """0000 then the 12 rightmost PAN digits excluding the check digit, left-padded with zeros."""
    if not (isinstance(pan, str) and pan.isascii() and pan.isdigit() and 8 <= len(pan) <= 19):
        raise SecurityError("a PAN must be 8 to 19 digits for a format-0 PIN block")
    return bytes.fromhex(pan[:-1][-12:].rjust(16, "0"))


def pin_block_format0(pin: str, pan: str) -> bytes:
    """Clear ISO 9564 format-0 block: 0 | length | PIN | F fill, XOR 0000 | 12 PAN digits (no check digit)."""
    pin = _check_pin(pin)
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return _xor(pin_field, _pan_field(pan))


def encrypt_pin_block(pin_key: bytes, pin: str, pan: str) -> bytes:
    """The format-0 PIN block 3DES-encrypted under the PIN key (field 52)."""
    return tdes_encrypt(pin_key, pin_block_format0(pin, pan))


def decrypt_pin(pin_key: bytes, block: bytes, pan: str) -> str:
    """The PIN inside an encrypted format-0 block (host side); SecurityError if the block is malformed.

    A wrong PIN key or PAN almost always yields a malformed block; the error never shows the block.
    """
    block = _as_bytes(block, "a PIN block")
    if len(block) != 8:
        raise SecurityError(f"a PIN block must be 8 bytes, got {len(block)}")
    clear = _xor(tdes_decrypt(pin_key, block), _pan_field(pan)).hex().upper()
    if clear[0] != "0":
        raise SecurityError("PIN block is not format 0 (wrong key or PAN?)")
    length = int(clear[1], 16)
    pin, fill = clear[2:2 + length], clear[2 + length:]
    if not 4 <= length <= 12 or not pin.isdigit() or fill.strip("F"):
        raise SecurityError("PIN block is malformed (wrong key or PAN?)")
    return pin
