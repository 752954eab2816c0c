"""Firmware images: version, build date, size, SHA-256, an Ed25519 vendor signature, and the payload.

An image is `header line (JSON) + newline + payload`. The signature covers the header's identity
(version, size, sha256, build date), so an image whose payload or header was altered, or that is
unsigned, is refused with a FirmwareError naming what failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .profiles import get_profile

#: The built-in *test* vendor key, derived from a public seed: it signs the shipped test images and
#: must never sign anything real.
TEST_VENDOR_SEED = hashlib.sha256(b"possim test vendor key - not a secret").digest()


class FirmwareError(Exception):
    """An image that must not be installed (size, hash, signature), or a broken update step."""


def test_vendor_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(TEST_VENDOR_SEED)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@dataclass(frozen=True)
class Image:
    version: str
    build_date: str
    size: int
    sha256: str
    signature: str  # hex; "" when unsigned
    payload: bytes

    def signed_message(self) -> bytes:
        return f"{self.version}|{self.build_date}|{self.size}|{self.sha256}".encode()

    def header(self) -> dict[str, object]:
        return {"version": self.version, "build_date": self.build_date, "size": self.size, "sha256": self.sha256,
                "signature": self.signature}

    def to_bytes(self) -> bytes:
        return json.dumps(self.header(), sort_keys=True).encode() + b"\n" + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        head, sep, payload = data.partition(b"\n")
        if not sep:
            raise FirmwareError("not a firmware image: no header line")
        try:
            h = json.loads(head)
            return cls(str(h["version"]), str(h["build_date"]), int(h["size"]), str(h["sha256"]),
                       str(h.get("signature", "")), payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise FirmwareError(f"firmware image header is malformed: {exc}") from None


def payload_for(version: str, size: int, seed: str = "possim") -> bytes:
    """Deterministic pseudo-content, so the same version builds the same image everywhere."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{version}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def build_image(version: str, *, size: int = 8192, signing_key: Ed25519PrivateKey | None = None,
                signed: bool = True) -> Image:
    payload = payload_for(version, size)
    profile = get_profile(version)
    image = Image(version, profile.released, size, hashlib.sha256(payload).hexdigest(), "", payload)
    if signed:
        key = signing_key or test_vendor_key()
        image = Image(image.version, image.build_date, size, image.sha256, key.sign(image.signed_message()).hex(),
                      payload)
    return image


def verify(image: Image, public_key: Ed25519PublicKey | None = None) -> None:
    """Size, hash, then signature: the first that fails is named."""
    if len(image.payload) != image.size:
        raise FirmwareError(f"image {image.version}: size {len(image.payload)} bytes, header says {image.size}")
    digest = hashlib.sha256(image.payload).hexdigest()
    if digest != image.sha256:
        raise FirmwareError(f"image {image.version}: SHA-256 {digest[:16]}... does not match {image.sha256[:16]}...")
    if not image.signature:
        raise FirmwareError(f"image {image.version} is unsigned: refused")
    key = public_key or test_vendor_key().public_key()
    try:
        key.verify(bytes.fromhex(image.signature), image.signed_message())
    except (InvalidSignature, ValueError):
        raise FirmwareError(f"image {image.version}: bad vendor signature: refused") from None
