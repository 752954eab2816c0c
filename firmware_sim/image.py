"""Firmware images: version, build date, size, SHA-256, an Ed25519 vendor signature, and the payload.

Container (`Image.to_bytes()`): one header line of JSON (sorted keys, `format` = "possim-fw/1"), a newline,
then the payload. The signature covers the identity `version|build_date|size|sha256`, so an image whose
payload or header was altered, or that is unsigned, is refused by `verify()` with a `FirmwareError`
whose `check` names what failed: "format", "size", "hash", "unsigned" or "signature".

The payload is deterministic pseudo-content (SHA-256 counter stream of seed + version), so the same
version builds the same image, hash and signature everywhere.

THE BUILT-IN VENDOR KEY IS A TEST KEY. It is derived from a public seed (`TEST_VENDOR_SEED`), so anyone
can sign with it: it exists so shipped test images verify out of the box, and must never sign anything
real. Use `load_private_key()` / `load_public_key()` (raw 32 bytes, 64 hex digits, or PEM) for a key of
your own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .profiles import get_profile, parse_version

#: The seed of the built-in *test* vendor key: public, so the key signs test images only.
TEST_VENDOR_SEED = hashlib.sha256(b"possim test vendor key - not a secret").digest()
FORMAT = "possim-fw/1"
DEFAULT_SIZE = 8192
#: The largest image a terminal accepts (a bigger announcement is refused before any download).
MAX_IMAGE_SIZE = 16 * 1024 * 1024


class FirmwareError(Exception):
    """An image that must not be installed, or an update step that failed. `check` names the failed check."""

    def __init__(self, message: str, check: str = "") -> None:
        super().__init__(message)
        self.check = check


def test_vendor_key() -> Ed25519PrivateKey:
    """The built-in TEST vendor key (from a public seed; never for real images)."""
    return Ed25519PrivateKey.from_private_bytes(TEST_VENDOR_SEED)


def test_vendor_public_key() -> Ed25519PublicKey:
    return test_vendor_key().public_key()


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _key_material(data: bytes, what: str) -> bytes | None:
    """Raw 32 bytes, or 64 hex digits (whitespace ignored); None when it looks like PEM."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return None
    if len(data) == 32:
        return data
    text = data.strip()
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise FirmwareError(f"{what}: expected a raw 32-byte Ed25519 key, 64 hex digits or PEM", "key")
    return raw


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file: raw 32 bytes, 64 hex digits, or PEM (PKCS#8, unencrypted)."""
    data = Path(path).read_bytes()
    raw = _key_material(data, str(path))
    if raw is not None:
        return Ed25519PrivateKey.from_private_bytes(raw)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise FirmwareError(f"{path}: not an Ed25519 private key", "key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a file: raw 32 bytes, 64 hex digits, or PEM (SubjectPublicKeyInfo)."""
    data = Path(path).read_bytes()
    raw = _key_material(data, str(path))
    if raw is not None:
        return Ed25519PublicKey.from_public_bytes(raw)
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise FirmwareError(f"{path}: not an Ed25519 public key", "key")
    return key


@dataclass(frozen=True)
class Image:
    version: str
    build_date: str
    size: int
    sha256: str
    signature: str  # hex; "" when unsigned
    payload: bytes

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    def signed_message(self) -> bytes:
        return f"{self.version}|{self.build_date}|{self.size}|{self.sha256}".encode()

    def header(self) -> dict[str, object]:
        return {"format": FORMAT, "version": self.version, "build_date": self.build_date, "size": self.size,
                "sha256": self.sha256, "signature": self.signature}

    def to_bytes(self) -> bytes:
        return json.dumps(self.header(), sort_keys=True).encode() + b"\n" + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        head, sep, payload = bytes(data).partition(b"\n")
        if not sep:
            raise FirmwareError("not a firmware image: no header line", "format")
        try:
            h = json.loads(head)
            if not isinstance(h, dict):
                raise TypeError("header is not an object")
            if h.get("format", FORMAT) != FORMAT:
                raise ValueError(f"format {h['format']!r}, expected {FORMAT!r}")
            return cls(str(h["version"]), str(h["build_date"]), int(h["size"]), str(h["sha256"]).lower(),
                       str(h.get("signature") or ""), payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise FirmwareError(f"firmware image header is malformed: {exc}", "format") from None

    @classmethod
    def load(cls, path: str | Path) -> Image:
        return cls.from_bytes(Path(path).read_bytes())

    def describe(self) -> dict[str, object]:
        """The header without the payload, for JSON output."""
        return {"version": self.version, "build_date": self.build_date, "size": self.size, "sha256": self.sha256,
                "signed": self.signed, "signature": self.signature}


def payload_for(version: str, size: int, seed: str = "possim") -> bytes:
    """Deterministic pseudo-content, so the same version (and seed) builds the same image everywhere."""
    if size < 0:
        raise ValueError(f"image size {size} is negative")
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{version}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def build_image(version: str, *, size: int = DEFAULT_SIZE, signing_key: Ed25519PrivateKey | None = None,
                signed: bool = True, seed: str = "possim", build_date: str | None = None) -> Image:
    """A test image of `version`: `size` bytes of deterministic payload, signed with `signing_key` (default:
    the built-in test vendor key) unless `signed` is False. ValueError for a bad version or size."""
    parse_version(version)
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image size {size} outside 1..{MAX_IMAGE_SIZE}")
    payload = payload_for(version, size, seed)
    date = build_date or get_profile(version).released
    image = Image(version, date, size, hashlib.sha256(payload).hexdigest(), "", payload)
    if signed:
        key = signing_key or test_vendor_key()
        image = Image(image.version, date, size, image.sha256, key.sign(image.signed_message()).hex(), payload)
    return image


def _public(key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | None) -> Ed25519PublicKey:
    if key is None:
        return test_vendor_public_key()
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, str):
        key = bytes.fromhex(key)
    if isinstance(key, bytes):
        return Ed25519PublicKey.from_public_bytes(key)
    return key


def verify(image: Image, public_key: Ed25519PublicKey | bytes | str | None = None) -> None:
    """Size, hash, then signature (default key: the test vendor key). The first that fails is raised as
    a FirmwareError with `check` = "size" | "hash" | "unsigned" | "signature"."""
    if not 0 < image.size <= MAX_IMAGE_SIZE:
        raise FirmwareError(f"image {image.version}: size {image.size} outside 1..{MAX_IMAGE_SIZE}", "size")
    if len(image.payload) != image.size:
        raise FirmwareError(f"image {image.version}: size {len(image.payload)} bytes, header says {image.size}",
                            "size")
    digest = hashlib.sha256(image.payload).hexdigest()
    if digest != image.sha256.lower():
        raise FirmwareError(f"image {image.version}: SHA-256 {digest[:16]}... does not match "
                            f"{image.sha256[:16]}... (hash)", "hash")
    if not image.signature:
        raise FirmwareError(f"image {image.version} is unsigned: refused", "unsigned")
    try:
        _public(public_key).verify(bytes.fromhex(image.signature), image.signed_message())
    except (InvalidSignature, ValueError):
        raise FirmwareError(f"image {image.version}: bad vendor signature: refused", "signature") from None
