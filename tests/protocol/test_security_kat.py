"""Known-answer and behaviour tests of protocol.security (keys, MAC, PIN block)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import security
from protocol.errors import KeyCheckError, SecurityError
from protocol.message import Message

TEST_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_key_check_value_of_the_classic_test_key():
    # The double-length test key 0123456789ABCDEF FEDCBA9876543210 has the well-known KCV 08D7B4.
    assert security.key_check_value(TEST_KEY).hex().upper().startswith("08D7B4")


def test_x919_known_answer():
    # ISO 9797-1 MAC algorithm 3 (ANSI X9.19) example: "Now is the time for all " -> A1C72E74EA3FA9B6.
    assert security.mac_x919(TEST_KEY, b"Now is the time for all ").hex().upper() == "A1C72E74EA3FA9B6"


def test_single_des_known_answer():
    # FIPS 81 / classic DES example: key 0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815.
    key = bytes.fromhex("0123456789ABCDEF")
    assert security.tdes_encrypt(key, b"Now is t").hex().upper() == "3FA40E8A984D4815"


def test_pin_block_format0_known_answer():
    # PIN 1234, PAN 4111111111111111: 041234FFFFFFFFFF xor 0000111111111111.
    assert security.pin_block_format0("1234", "4111111111111111").hex().upper() == "041225EEEEEEEEEE"


def test_pos_ecb_mac_follows_the_dialect_steps():
    data = bytes(range(20))
    padded = data + bytes(4)
    r = bytes(a ^ b ^ c for a, b, c in zip(padded[:8], padded[8:16], padded[16:24], strict=True))
    r_hex = r.hex().upper().encode()
    first = security.tdes_encrypt(TEST_KEY, r_hex[:8])
    second = security.tdes_encrypt(TEST_KEY, bytes(a ^ b for a, b in zip(first, r_hex[8:], strict=True)))
    assert security.mac_pos_ecb(TEST_KEY, data) == second.hex().upper().encode()[:8]


@pytest.mark.parametrize("mode", ["004", "003", "001"])
def test_working_keys_round_trip(mode):
    keys = security.generate_working_keys(mode)
    field62 = security.wrap_working_keys(TEST_KEY, keys, mode)
    assert len(field62) == security.KEY_MODE_LENGTHS[mode]
    assert security.unwrap_working_keys(TEST_KEY, field62) == keys


@pytest.mark.parametrize(("index", "name"), [(0, "PIN"), (1, "MAC"), (2, "track")])
def test_tampered_check_value_is_refused_naming_the_key(index, name):
    field62 = bytearray(security.wrap_working_keys(TEST_KEY, security.generate_working_keys("004")))
    field62[index * 20 + 19] ^= 0x01
    with pytest.raises(KeyCheckError, match=name):
        security.unwrap_working_keys(TEST_KEY, bytes(field62))


def test_wrong_length_field62_is_a_security_error():
    with pytest.raises(SecurityError, match="61 bytes"):
        security.unwrap_working_keys(TEST_KEY, bytes(61))


def test_repr_of_keys_hides_the_keys():
    keys = security.generate_working_keys("004")
    text = repr(keys)
    for key in (keys.pin_key, keys.mac_key, keys.track_key):
        assert key is not None
        assert key.hex() not in text.lower()


@given(pin=st.from_regex(r"\A[0-9]{4,12}\Z"), pan=st.from_regex(r"\A[0-9]{13,19}\Z"))
def test_pin_block_round_trip(pin, pan):
    keys = security.WorkingKeys(TEST_KEY, TEST_KEY)
    block = security.encrypt_pin_block(keys.pin_key, pin, pan)
    assert security.decrypt_pin(keys.pin_key, block, pan) == pin


def test_pin_block_with_wrong_key_is_detected_or_differs():
    block = security.encrypt_pin_block(TEST_KEY, "1234", "6222020000000015")
    other = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
    with contextlib.suppress(SecurityError):
        assert security.decrypt_pin(other, block, "6222020000000015") != "1234"


class _Dialect:
    """Deterministic stand-in encoder: the MAC helpers only need encode()."""

    def encode(self, message: Message) -> bytes:
        parts = [n.to_bytes(1, "big") + (v if isinstance(v, bytes) else v.encode())
                 for n, v in sorted(message.fields.items())]
        return message.mti.encode() + b"".join(parts)


def test_sign_and_verify_and_any_change_breaks_the_mac():
    msg = Message("0200", {3: "000000", 4: "000000001234", 11: "000001"})
    security.sign(_Dialect(), msg, TEST_KEY)
    assert security.verify(_Dialect(), msg, TEST_KEY)
    msg[4] = "000000001235"
    assert not security.verify(_Dialect(), msg, TEST_KEY)
    assert not security.verify(_Dialect(), Message("0200", {11: "000001"}), TEST_KEY)
