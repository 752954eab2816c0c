"""Card data at rest: AES-GCM under a key derived from the terminal's key, and masking for free text.

Each sealed value has its own random 96-bit nonce and is bound to its row by associated data
(terminal id, batch, STAN and a purpose), so a blob copied onto another row does not decrypt.
The key check value lets `Journal.open` tell a wrong key at once instead of at the first batch upload.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.message import mask_pan

_NONCE = 12


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


class Vault:
    def __init__(self, pan_key: bytes, tid: str) -> None:
        if not isinstance(pan_key, bytes | bytearray) or len(pan_key) < 16:
            raise ValueError("pan_key must be at least 16 bytes (the terminal master key)")
        self._aead = AESGCM(_derive(bytes(pan_key), b"possim journal PAN"))
        self.key_check = _derive(bytes(pan_key), b"possim journal key check")[:8]
        self.tid = tid

    def matches(self, stored_check: bytes) -> bool:
        return hmac.compare_digest(self.key_check, bytes(stored_check))

    def _aad(self, stan: str, batch: str, purpose: str) -> bytes:
        # Schema 1 sealed card data with tid|batch|stan; kept so its rows still open.
        base = f"{self.tid}|{batch}|{stan}"
        return (base if purpose == "card" else f"{base}|{purpose}").encode()

    def seal(self, clear: bytes, *, stan: str, batch: str, purpose: str = "card") -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, clear, self._aad(stan, batch, purpose))

    def open(self, blob: bytes, *, stan: str, batch: str, purpose: str = "card") -> bytes | None:
        """The clear bytes, or None when the blob was not sealed by this key for this row."""
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], self._aad(stan, batch, purpose))
        except (InvalidTag, ValueError):
            return None


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


#: A maximal run of 13 or more digits, ASCII or full-width (the digits a card number is written in
#: on a Chinese slip or in a log); runs over 19 are left alone by the callers. A leading class of its
#: own lets `re` skip ahead to the next digit at a few instructions a character; `\d{13,}` tested a
#: Unicode category at every character and again from each digit of every date, amount and
#: reference number: 147,000 instructions for a slip against 61,000 (callgrind), and scanning a
#: sale's two slips was the largest use of `re` in a sale. (A look-behind such as `(?<!\d)` also
#: defeats the skip.) Digits of other scripts (Arabic-Indic, Devanagari...) are not taken for card
#: numbers.
_DIGIT_RUN = re.compile("[0-9\uff10-\uff19][0-9\uff10-\uff19]{12,}")
_PAN_KEYS = {"pan", "card", "card_number", "account"}
#: Values `mask_value` returns as they are whatever their key (a str of up to 10 characters is also left
#: as it is: under a PAN key only more than 10 digits are masked, elsewhere only runs of 13 or more).
_UNMASKED = frozenset({int, float, bool, type(None)})


def mask_text(text: str, *, keep: frozenset[str] = frozenset()) -> str:
    """Every run of 13-19 digits that passes the Luhn check, masked (first 6, last 4); `keep` is exempt."""
    return _DIGIT_RUN.sub(lambda m: m[0] if len(m[0]) > 19 or m[0] in keep or not luhn_ok(m[0])
                          else mask_pan(m[0]), text)


def mask_value(value: Any, *, keep: frozenset[str] = frozenset(), key: str = "") -> Any:
    """A JSON-able value with card numbers masked, recursively; values under a `pan` key always."""
    if isinstance(value, str):
        if key.lower() in _PAN_KEYS and value.isdigit() and len(value) > 10:
            return mask_pan(value)
        return value if len(value) < 13 else mask_text(value, keep=keep)  # too short to hold a PAN
    if isinstance(value, dict):  # an event's detail: a few scalars, most of them too short to hold a PAN
        out = {}
        for k, v in value.items():
            k = k if type(k) is str else str(k)
            kind = type(v)
            out[k] = v if kind in _UNMASKED or (kind is str and len(v) <= 10) else mask_value(v, keep=keep, key=k)
        return out
    if isinstance(value, list | tuple):
        return [mask_value(v, keep=keep, key=key) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return value
