"""Images: deterministic, signed with the test vendor key, and refused with a named check when tampered."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_sim.image import (
    FirmwareError,
    Image,
    build_image,
    load_private_key,
    load_public_key,
    public_key_hex,
    verify,
)
from firmware_sim.image import test_vendor_key as vendor_key


def test_images_are_deterministic_and_verify():
    a, b = build_image("3.0.8", size=1500), build_image("3.0.8", size=1500)
    assert a == b and a.signed and len(a.payload) == 1500
    assert a.sha256 == hashlib.sha256(a.payload).hexdigest()
    assert a.build_date == "2023-05-20"
    verify(a)
    assert build_image("3.0.2", size=1500).payload != a.payload
    assert build_image("3.0.8", size=1500, seed="other").payload != a.payload


def test_container_round_trip():
    image = build_image("2.1.5", size=777)
    data = image.to_bytes()
    assert data.startswith(b"{") and data.endswith(image.payload)
    assert Image.from_bytes(data) == image
    verify(Image.from_bytes(data))


@pytest.mark.parametrize("data", [b"no header line", b"[1, 2]\npayload", b"{\"version\": \"3.0.8\"}\nx",
                                  b"{\"format\": \"other/9\", \"version\": \"3.0.8\"}\nx"])
def test_malformed_containers_are_named(data):
    with pytest.raises(FirmwareError) as info:
        Image.from_bytes(data)
    assert info.value.check == "format"


def _check(image: Image, **kw) -> str:
    with pytest.raises(FirmwareError) as info:
        verify(image, **kw)
    return info.value.check


def test_tampering_is_refused_naming_what_failed():
    image = build_image("3.0.8", size=2048)
    assert _check(replace(image, payload=image.payload[:-1])) == "size"
    assert _check(replace(image, payload=b"\xff" + image.payload[1:])) == "hash"
    assert _check(replace(image, sha256="0" * 64)) == "hash"
    assert _check(build_image("3.0.8", size=2048, signed=False)) == "unsigned"
    assert _check(replace(image, signature="00" * 64)) == "signature"
    assert _check(replace(image, signature="zz")) == "signature"
    assert _check(replace(image, version="3.0.9")) == "signature"  # the signature covers the header
    assert _check(replace(image, build_date="2030-01-01")) == "signature"


def test_an_image_signed_by_another_vendor_is_refused_with_the_test_key_and_accepted_with_its_own():
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    image = build_image("3.0.8", size=600, signing_key=other)
    assert _check(image) == "signature"
    verify(image, other.public_key())
    verify(image, public_key_hex(other))


def test_keys_load_from_raw_hex_and_pem_files(tmp_path):
    key = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"\x07" * 32)
    hexed = tmp_path / "hex.key"
    hexed.write_text("07" * 32 + "\n")
    pem = tmp_path / "pem.key"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    for path in (raw, hexed, pem):
        assert public_key_hex(load_private_key(path)) == public_key_hex(key)
    assert public_key_hex(load_public_key(pub)) == public_key_hex(key)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(FirmwareError, match="32-byte"):
        load_private_key(junk)


def test_the_test_vendor_key_is_fixed():
    assert public_key_hex(vendor_key()) == public_key_hex(vendor_key())
    assert build_image("3.0.8").signature == build_image("3.0.8").signature  # Ed25519 is deterministic


@pytest.mark.parametrize("size", [0, -1, 16 * 1024 * 1024 + 1])
def test_build_refuses_silly_sizes(size):
    with pytest.raises(ValueError, match="size"):
        build_image("3.0.8", size=size)
