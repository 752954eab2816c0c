"""Keys, MACs and PIN blocks of the cup-pos dialect (sans-I/O, `cryptography` for DES).

Exactly as cup-pos.md "Keys and MAC" says: working keys travel in 0810 field 62 encrypted under the
terminal master key with 4-byte check values; the POS ECB MAC covers the message from the MTI to
the end of field 63; PIN blocks are ISO 9564 format 0 under the PIN key. Keys and PIN blocks never
appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import hmac
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .errors import KeyCheckError, SecurityError
from .message import Message

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:  # cryptography >= 43 keeps 3DES in the "decrepit" package
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

#: Field 62 length per key mode (60.3 of the sign-in).
KEY_MODE_LENGTHS = {"004": 60, "003": 40, "001": 24}


def _key(key: bytes) -> bytes:
    """Any DES key length as the 24-byte K1||K2||K3 form (cryptography deprecates the shorter forms)."""
    if len(key) == 8:
        return key * 3  # single-length key used as K||K: single DES
    if len(key) == 16:
        return key + key[:8]  # double-length key K1||K2 is K1||K2||K1
    if len(key) == 24:
        return key
    raise SecurityError(f"a DES key must be 8, 16 or 24 bytes, got {len(key)}")


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    """3DES-ECB encryption; 8-byte keys act as single DES."""
    if len(data) % 8:
        raise SecurityError("3DES data must be a multiple of 8 bytes")
    encryptor = Cipher(TripleDES(_key(key)), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) % 8:
        raise SecurityError("3DES data must be a multiple of 8 bytes")
    decryptor = Cipher(TripleDES(_key(key)), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def key_check_value(key: bytes) -> bytes:
    """First 4 bytes of the clear key's encryption of eight 0x00 bytes."""
    return tdes_encrypt(key, bytes(8))[:4]


def _odd_parity(key: bytes) -> bytes:
    return bytes(b & 0xFE | (bin(b & 0xFE).count("1") + 1) % 2 for b in key)


@dataclass(frozen=True)
class WorkingKeys:
    """The session keys a sign-in delivers. Never printed: repr shows only the check values."""

    pin_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    track_key: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kcvs = [key_check_value(k).hex().upper() for k in (self.pin_key, self.mac_key, self.track_key) if k]
        return f"WorkingKeys(kcv={'/'.join(kcvs)})"


def generate_working_keys(mode: str = "004", rng: Callable[[int], bytes] = os.urandom) -> WorkingKeys:
    """Fresh working keys with odd DES parity: 16-byte keys for 004 / 003, 8-byte for 001."""
    if mode not in KEY_MODE_LENGTHS:
        raise SecurityError(f"unknown key mode {mode!r}; expected 001, 003 or 004")
    size = 8 if mode == "001" else 16
    pin, mac = _odd_parity(rng(size)), _odd_parity(rng(size))
    track = _odd_parity(rng(16)) if mode == "004" else None
    return WorkingKeys(pin, mac, track)


def wrap_working_keys(tmk: bytes, keys: WorkingKeys, mode: str = "004") -> bytes:
    """Field 62 of an 0810: each key encrypted under the TMK followed by its clear key's check value."""
    order = [keys.pin_key, keys.mac_key] + ([keys.track_key] if mode == "004" else [])
    if mode == "004" and keys.track_key is None:
        raise SecurityError("key mode 004 needs a track key")
    expected = 8 if mode == "001" else 16
    out = b""
    for key in order:
        assert key is not None
        if len(key) != expected:
            raise SecurityError(f"key mode {mode} needs {expected}-byte keys")
        out += tdes_encrypt(tmk, key) + key_check_value(key)
    return out


def unwrap_working_keys(tmk: bytes, field62: bytes, mode: str | None = None) -> WorkingKeys:
    """Decrypt and check the working keys of an 0810; a wrong check value raises KeyCheckError."""
    if mode is None:
        mode = next((m for m, n in KEY_MODE_LENGTHS.items() if n == len(field62)), None)
        if mode is None:
            raise SecurityError(f"field 62 of {len(field62)} bytes matches no key mode (60, 40 or 24 bytes)")
    if len(field62) != KEY_MODE_LENGTHS.get(mode, -1):
        raise SecurityError(f"field 62 has {len(field62)} bytes; key mode {mode} needs {KEY_MODE_LENGTHS.get(mode)}")
    size = 8 if mode == "001" else 16
    names = ["PIN", "MAC", "track"][: 3 if mode == "004" else 2]
    keys: list[bytes] = []
    for index, name in enumerate(names):
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
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def mac_pos_ecb(mac_key: bytes, data: bytes) -> bytes:
    """The "POS ECB" MAC of cup-pos.md: XOR of blocks, hex-expanded, two encryptions; 8 ASCII bytes."""
    padded = data + bytes(-len(data) % 8)
    acc = 0
    for i in range(0, len(padded), 8):
        acc ^= int.from_bytes(padded[i:i + 8], "big")
    r_hex = acc.to_bytes(8, "big").hex().upper().encode()
    first = tdes_encrypt(mac_key, r_hex[:8])
    second = tdes_encrypt(mac_key, _xor(first, r_hex[8:]))
    return second.hex().upper().encode()[:8]


def _des(key8: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    return (tdes_decrypt if decrypt else tdes_encrypt)(key8, block)


def mac_x919(mac_key: bytes, data: bytes) -> bytes:
    """ANSI X9.19 retail MAC: single-DES CBC under the left half, then decrypt right / encrypt left."""
    key = _key(mac_key)
    left, right = key[:8], key[8:16]
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    chain = bytes(8)
    for i in range(0, len(padded), 8):
        chain = _des(left, _xor(chain, padded[i:i + 8]))
    return _des(left, _des(right, chain, decrypt=True))


def macs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class _Encoder(Protocol):
    def encode(self, message: Message) -> bytes: ...


def mac_input(dialect: _Encoder, message: Message) -> bytes:
    """The MAC'd bytes: the message from the MTI to the end of field 63, bitmap with bit 64 set."""
    copy = message.copy()
    copy[64] = bytes(8)
    return dialect.encode(copy)[:-8]


def sign(dialect: _Encoder, message: Message, mac_key: bytes) -> None:
    """Set field 64 to the message's POS ECB MAC."""
    message[64] = mac_pos_ecb(mac_key, mac_input(dialect, message))


def verify(dialect: _Encoder, message: Message, mac_key: bytes) -> bool:
    """Whether field 64 is present and is the message's MAC under `mac_key`."""
    mac = message.get(64)
    if not isinstance(mac, bytes):
        return False
    return macs_equal(mac, mac_pos_ecb(mac_key, mac_input(dialect, message)))


# -------------------------------------------------------------------------------------------------
# PIN block (ISO 9564 format 0)
# -------------------------------------------------------------------------------------------------


def pin_block_format0(pin: str, pan: str) -> bytes:
    """Clear format-0 block: 0 | len | PIN | F padding, XOR 0000 | 12 rightmost PAN digits but the check digit."""
    if not (pin.isdigit() and pin.isascii() and 4 <= len(pin) <= 12):
        raise SecurityError("PIN must be 4 to 12 digits")
    if not (pan.isdigit() and pan.isascii() and len(pan) >= 13):
        raise SecurityError("PAN must be at least 13 digits for a format-0 PIN block")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return _xor(pin_field, pan_field)


def encrypt_pin_block(pin_key: bytes, pin: str, pan: str) -> bytes:
    return tdes_encrypt(pin_key, pin_block_format0(pin, pan))


def decrypt_pin(pin_key: bytes, block: bytes, pan: str) -> str:
    """The PIN inside an encrypted format-0 block (host side); SecurityError if malformed."""
    if len(block) != 8:
        raise SecurityError("PIN block must be 8 bytes")
    if not (pan.isdigit() and len(pan) >= 13):
        raise SecurityError("PAN must be at least 13 digits for a format-0 PIN block")
    clear = _xor(tdes_decrypt(pin_key, block), bytes.fromhex("0000" + pan[-13:-1])).hex().upper()
    if clear[0] != "0":
        raise SecurityError("PIN block is not format 0")
    length = int(clear[1], 16)
    pin, pad = clear[2:2 + length], clear[2 + length:]
    if not 4 <= length <= 12 or not pin.isdigit() or pad.strip("F"):
        raise SecurityError("PIN block is malformed (wrong key or PAN?)")
    return pin
