"""The ISO 8583 codec: the captured vector, every field format, errors, spec files, composites, catalogue."""

from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import DecodeError, Dialect, DialectError, EncodeError, Message, get_dialect, load_dialect
from protocol import catalogue as cat
from protocol.composite import (
    RECORDS_PER_UPLOAD,
    BatchRecord,
    Field60,
    Field61,
    SettlementTotals,
    Totals,
    encode_balance,
    encode_batch_records,
    encode_device_info,
    parse_balance,
    parse_batch_records,
    parse_device_info,
)
from protocol.dialect import builtin_dialects, dialect_from_mapping
from protocol.fields import FieldCodec, FieldSpec, parse_format

SHARED = Path(os.environ.get("POSSIM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
VECTOR_HEX = SHARED / "protocol" / "vectors" / "cup_0200_sale.hex"
VECTOR_JSON = SHARED / "protocol" / "vectors" / "cup_0200_sale.json"


def fresh(name: str) -> Dialect:
    """A new, never-used instance of a built-in dialect (get_dialect's is shared and already warm)."""
    text = (resources.files("protocol.dialects") / f"{name}.toml").read_text("utf-8")
    return dialect_from_mapping(tomllib.loads(text), source=f"{name}.toml")


@pytest.fixture(scope="module")
def vector() -> tuple[bytes, dict]:
    assert VECTOR_HEX.is_file(), f"the shared vector is missing: {VECTOR_HEX} (set POSSIM_SHARED)"
    frame = bytes.fromhex(VECTOR_HEX.read_text())
    expected = json.loads(VECTOR_JSON.read_text())
    return frame, expected


@pytest.fixture(scope="module")
def body(vector: tuple[bytes, dict]) -> bytes:
    return vector[0][2 + 5 + 6:]


def field_offsets(dialect: Dialect, message: Message) -> dict[int, int]:
    """Byte offset of each field of `message` in its encoding (MTI + bitmap first)."""
    offset = len(dialect.encode(Message(message.mti)))  # MTI + primary bitmap
    if any(n > 64 for n in message.fields):
        offset += 8 if dialect.bitmap_encoding == "binary" else 16
    out = {}
    for n in sorted(message.fields):
        out[n] = offset
        offset += len(dialect.codecs[n].build_value(message[n]))
    return out


def raw_fields(message: Message) -> dict[str, str]:
    """Every field as text in clear (binary as upper-case hex), PIN block included: the vector's form."""
    return {str(n): message.text(n) for n in message}


# ---------------------------------------------------------------------------------------------
# The captured vector
# ---------------------------------------------------------------------------------------------


def test_vector_frame_layout(vector: tuple[bytes, dict]) -> None:
    frame, expected = vector
    assert int.from_bytes(frame[:2], "big") == len(frame) - 2 == expected["length_prefix"]
    assert frame[2:7].hex().upper() == expected["tpdu"]
    assert frame[7:13].hex().upper() == expected["header"]


def test_vector_cold_path_decodes_and_reencodes_byte_for_byte(vector: tuple[bytes, dict], body: bytes) -> None:
    _, expected = vector
    dialect = fresh("cup-pos")
    msg = dialect.decode(body)
    assert not dialect._compiled, "the first sighting of a bitmap must use the interpreted path"
    assert msg.mti == expected["mti"]
    assert raw_fields(msg) == expected["fields"]

    encoder = fresh("cup-pos")
    assert encoder.encode(msg) == body
    assert not encoder._compiled


def test_vector_compiled_path_decodes_and_reencodes_byte_for_byte(vector: tuple[bytes, dict],
                                                                   body: bytes) -> None:
    _, expected = vector
    dialect = fresh("cup-pos")
    numbers = tuple(int(n) for n in expected["fields"])
    first = dialect.decode(body)
    for _ in range(2):  # the 2nd and 3rd decode run the compiled FieldSet
        again = dialect.decode(body)
        assert numbers in dialect._compiled
        assert again == first
        assert raw_fields(again) == expected["fields"]
    assert dialect.encode(first) == body
    assert "fp_" in dialect.compiled_source(numbers)


@pytest.mark.parametrize("name", ["cup-pos", "iso87-ascii"])
def test_message_without_fields_on_both_paths(name: str) -> None:
    dialect = fresh(name)
    msg = Message("0800")
    for _ in range(3):  # the 2nd sighting compiles an empty field set
        raw = dialect.encode(msg)
        assert dialect.decode(raw) == msg
    assert raw in (bytes.fromhex("0800") + bytes(8), b"0800" + b"0" * 16)


def test_vector_field_types(body: bytes) -> None:
    msg = get_dialect("cup-pos").decode(body)
    assert isinstance(msg[2], str) and isinstance(msg[35], str)
    assert isinstance(msg[52], bytes) and isinstance(msg[55], bytes) and isinstance(msg[64], bytes)
    assert msg[35] == "6224242900000113D28062013949031013"


def test_unmasked_json_fields_show_pan_and_track_but_never_pin_block_or_keys(body: bytes) -> None:
    fields = get_dialect("cup-pos").decode(body).as_json_fields(unmask=True)
    assert fields["2"] == "6224242900000113" and fields["35"] == "6224242900000113D28062013949031013"
    assert fields["52"] == "<8 bytes hidden>"
    sign_in_reply = Message("0810", {39: "00", 62: bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")})
    keys = sign_in_reply.as_json_fields(unmask=True)
    assert keys["62"] == "<16 bytes hidden>"


def test_layout_spans_every_field_of_the_vector(body: bytes) -> None:
    dialect = get_dialect("cup-pos")
    msg = dialect.decode(body)
    spans = dialect.layout(body)
    assert [n for n, _, _ in spans] == [0, 1, *sorted(msg.fields)]
    assert {n: start for n, start, _ in spans if n > 1} == field_offsets(dialect, msg)
    assert spans[-1][2] == len(body)
    for n, start, end in spans[2:]:
        assert body[start:end] == dialect.field_bytes(n, msg[n])


def test_layout_of_an_undecodable_message_stops_before_the_bad_field(body: bytes) -> None:
    broken = bytearray(body)
    broken[3] ^= 0x02  # bitmap bit 15 on: field 15 now reads the bytes of 22, 23, ... and 48 breaks
    spans = get_dialect("cup-pos").layout(bytes(broken))
    assert [n for n, _, _ in spans][:2] == [0, 1] and spans[1][1:] == (2, 10)
    assert 48 not in [n for n, _, _ in spans]


def test_masked_json_fields_hide_pan_track_and_pin(body: bytes) -> None:
    fields = get_dialect("cup-pos").decode(body).as_json_fields()
    assert fields["2"] == "622424******0113"
    assert "6224242900000113" not in json.dumps(fields)
    assert "D1EEF419D0AE2609" not in json.dumps(fields)


# ---------------------------------------------------------------------------------------------
# Field formats
# ---------------------------------------------------------------------------------------------


def spec(fmt: str, number: int = 2, **kw: str) -> FieldSpec:
    kind, length, prefix = parse_format(fmt)
    data_default = "bcd" if kind in ("n", "z") else "binary" if kind == "b" else "ascii"
    kw.setdefault("data_encoding", data_default)
    return FieldSpec(number=number, name="test", kind=kind, length=length, prefix=prefix, **kw)


# (format, settings, value, wire bytes as hex)
KNOWN_ANSWERS = [
    ("n6", {}, "123456", "123456"),
    ("n12", {}, "000000000001", "000000000001"),
    ("n3", {"align": "left"}, "071", "0710"),
    ("n3", {"align": "right"}, "001", "0001"),
    ("n6", {"data_encoding": "ascii"}, "123456", "313233343536"),
    ("n..19", {}, "6224242900000113", "166224242900000113"),
    ("n..19", {}, "6224242900000113999", "196224242900000113999" + "0"),
    ("n..19", {"align": "right"}, "622424290000011399", "18622424290000011399"),
    ("n..19", {"align": "right"}, "1234567", "0701234567"),
    ("n..11", {"length_encoding": "ascii"}, "12345", "3035" + "123450"),
    ("n..11", {"length_encoding": "binary"}, "12345", "05" + "123450"),
    ("n...322", {}, "0", "0001" + "00"),
    ("n...17", {}, "22000024000600", "0014" + "22000024000600"),
    ("n...17", {"length_encoding": "ascii"}, "123", "303033" + "1230"),
    ("n...17", {"length_encoding": "binary"}, "123", "0003" + "1230"),
    ("n..19", {"length_encoding": "ascii", "data_encoding": "ascii"}, "1234", "3034" + "31323334"),
    ("z..37", {}, "6224242900000113D28062013949031013", "34" + "6224242900000113D28062013949031013"),
    ("z..37", {}, "1234D5", "06" + "1234D5"),
    ("z..37", {}, "1234D", "05" + "1234D0"),
    ("z...104", {}, "99D1", "0004" + "99D1"),
    ("z..37", {"data_encoding": "ascii", "length_encoding": "ascii"}, "12D34", "3035" + "31323D3334"),
    ("an2", {}, "00", "3030"),
    ("an12", {}, "190830093435", "313930383330303933343335"),
    ("ans8", {}, "1000 01/", "313030302030312F"),
    ("an..25", {}, "OK", "02" + "4F4B"),
    ("an..25", {"length_encoding": "ascii"}, "OK", "3032" + "4F4B"),
    ("an..25", {"length_encoding": "binary"}, "OK", "02" + "4F4B"),
    ("ans...999", {}, "x" * 3, "0003" + "787878"),
    ("ans...999", {"length_encoding": "ascii"}, "xy", "303032" + "7879"),
    ("ans...999", {"length_encoding": "binary"}, "xy", "0002" + "7879"),
    ("b64", {}, bytes.fromhex("D1EEF419D0AE2609"), "D1EEF419D0AE2609"),
    ("b16", {}, b"\x00\xff", "00FF"),
    ("b...255", {}, b"\x9f\x26", "0002" + "9F26"),
    ("b...255", {"length_encoding": "ascii"}, b"\x9f\x26", "303032" + "9F26"),
    ("b...255", {"length_encoding": "binary"}, b"\x9f\x26", "0002" + "9F26"),
    ("b..99", {}, b"\x01", "01" + "01"),
    ("b..99", {"length_encoding": "binary"}, b"\x01" * 17, "11" + "01" * 17),
    ("b64", {"data_encoding": "ascii"}, b"\x12\xab" * 4, "3132414231324142" * 2),
    ("b...255", {"data_encoding": "ascii", "length_encoding": "ascii"}, b"\x12\xab", "303032" + "31324142"),
]


@pytest.mark.parametrize(("fmt", "kw", "value", "wire"), KNOWN_ANSWERS,
                         ids=[f"{a}-{'-'.join(f'{k}={v}' for k, v in b.items())}-{i}"
                              for i, (a, b, _, _) in enumerate(KNOWN_ANSWERS)])
def test_field_format_known_answer_and_round_trip(fmt: str, kw: dict, value: str | bytes, wire: str) -> None:
    codec = FieldCodec(spec(fmt, **kw))
    assert codec.build_value(value).hex().upper() == wire.upper()
    assert codec.parse_bytes(bytes.fromhex(wire)) == value


def test_format_notation_round_trips() -> None:
    for fmt in ("n6", "n..19", "z...104", "an12", "ans...999", "b64", "b...255"):
        assert spec(fmt).format == fmt
    assert parse_format("b64") == ("b", 8, 0)
    for bad in ("n.6", "x6", "b63", "n", "an..", "n....5"):
        with pytest.raises(ValueError):
            parse_format(bad)


@st.composite
def spec_and_value(draw: st.DrawFn) -> tuple[FieldSpec, str | bytes]:
    kind = draw(st.sampled_from(["n", "z", "an", "ans", "b"]))
    prefix = draw(st.sampled_from([0, 2, 3]))
    length = draw(st.integers(1, 99 if prefix == 2 else 200 if prefix == 3 else 40))
    kw = {
        "length_encoding": draw(st.sampled_from(["bcd", "ascii", "binary"])),
        "align": draw(st.sampled_from(["left", "right"])),
        "data_encoding": (draw(st.sampled_from(["bcd", "ascii"])) if kind in ("n", "z")
                          else draw(st.sampled_from(["binary", "ascii"])) if kind == "b" else "ascii"),
    }
    field_spec = FieldSpec(number=2, name="x", kind=kind, length=length, prefix=prefix, **kw)
    size = draw(st.integers(0, length)) if prefix else length
    if kind == "n":
        value = draw(st.text("0123456789", min_size=size, max_size=size))
    elif kind == "z":
        value = draw(st.text("0123456789D", min_size=size, max_size=size))
    elif kind in ("an", "ans"):
        value = draw(st.text(st.characters(max_codepoint=127), min_size=size, max_size=size))
    else:
        value = draw(st.binary(min_size=size, max_size=size))
    return field_spec, value


@settings(max_examples=400, deadline=None)
@given(spec_and_value())
def test_every_field_format_round_trips(case: tuple[FieldSpec, str | bytes]) -> None:
    field_spec, value = case
    codec = FieldCodec(field_spec)
    raw = codec.build_value(value)
    assert codec.parse_bytes(raw) == value


@pytest.mark.parametrize(("fmt", "kw", "wire", "value", "canonical"), [
    ("n3", {"align": "left"}, "071F", "071", "0710"),
    ("n3", {"align": "right"}, "F001", "001", "0001"),
    ("n..19", {}, "19" + "6224242900000113999F", "6224242900000113999", "19" + "62242429000001139990"),
    ("z..37", {}, "05" + "1234DF", "1234D", "05" + "1234D0"),
    ("z..37", {}, "37" + "6224242900000113D28062013949031013121F", "6224242900000113D28062013949031013121",
     "37" + "6224242900000113D28062013949031013121" + "0"),
])
def test_f_pad_nibble_accepted_on_decode(fmt: str, kw: dict, wire: str, value: str, canonical: str) -> None:
    codec = FieldCodec(spec(fmt, **kw))
    assert codec.parse_bytes(bytes.fromhex(wire)) == value
    assert codec.build_value(value).hex().upper() == canonical  # senders write 0


@pytest.mark.parametrize(("fmt", "kw", "wire"), [
    ("n3", {"align": "left"}, "0715"),
    ("n3", {"align": "right"}, "5001"),
    ("n3", {"align": "left"}, "071A"),
    ("n..19", {}, "03" + "1239"),
])
def test_pad_nibble_other_than_0_or_f_rejected(fmt: str, kw: dict, wire: str) -> None:
    with pytest.raises(DecodeError) as err:
        FieldCodec(spec(fmt, **kw)).parse_bytes(bytes.fromhex(wire))
    assert err.value.field == 2
    assert "pad nibble" in err.value.reason


def test_secondary_bitmap_round_trips_in_iso87_ascii() -> None:
    for dialect in (get_dialect("iso87-ascii"), fresh("iso87-ascii")):
        msg = Message("0800", {7: "0830093435", 11: "000001", 70: "301", 128: b"\x01\x02\x03\x04\x05\x06\x07\x08"})
        raw = dialect.encode(msg)
        assert raw[:4] == b"0800"
        bitmap = bytes.fromhex(raw[4:36].decode())
        assert bitmap[0] & 0x80, "bit 1 flags the secondary bitmap"
        assert Dialect.fields_in_bitmap(bitmap) == (7, 11, 70, 128)
        for _ in range(3):  # cold, then compiled
            assert dialect.decode(raw) == msg
            assert dialect.encode(msg) == raw
        only_secondary = Message("0800", {70: "001"})
        raw = dialect.encode(only_secondary)
        assert raw[4:20] == b"8000000000000000"
        assert dialect.decode(raw) == only_secondary


def test_secondary_bitmap_binary_user_dialect() -> None:
    dialect = dialect_from_mapping({"name": "bin128", "fields": {
        "3": {"format": "n6"}, "70": {"format": "n3", "align": "right"}, "102": {"format": "ans..28"},
        "128": {"format": "b64"}}})
    msg = Message("0200", {3: "000000", 70: "001", 102: "ACCOUNT-1", 128: b"\xaa" * 8})
    raw = dialect.encode(msg)
    assert len(raw) == 2 + 16 + 3 + 2 + 1 + 9 + 8
    assert raw[2] & 0x80
    for _ in range(3):
        assert dialect.decode(raw) == msg


def test_field_over_64_not_in_dialect() -> None:
    cup = get_dialect("cup-pos")
    with pytest.raises(EncodeError) as err:
        cup.encode(Message("0800", {70: "301"}))
    assert err.value.field == 70
    raw = get_dialect("cup-pos").encode(Message("0800", {11: "000001"}))
    with_secondary = raw[:2] + bytes([raw[2] | 0x80]) + raw[3:10] + bytes.fromhex("0400000000000000") + raw[10:]
    with pytest.raises(DecodeError) as derr:
        cup.decode(with_secondary)
    assert (derr.value.field, derr.value.offset) == (1, 2)


# ---------------------------------------------------------------------------------------------
# Error paths: DecodeError / EncodeError with field and offset
# ---------------------------------------------------------------------------------------------


def decode_error(dialect: Dialect, data: bytes) -> DecodeError:
    """The error decoding `data`, checked to be the same on the cold and the compiled path."""
    errors = []
    for _ in range(3):
        with pytest.raises(DecodeError) as err:
            dialect.decode(data)
        errors.append((err.value.field, err.value.offset, err.value.reason))
    assert errors[0] == errors[1] == errors[2]
    return err.value


@pytest.fixture
def sale_layout(body: bytes) -> tuple[Dialect, Message, dict[int, int]]:
    dialect = fresh("cup-pos")
    msg = dialect.decode(body)
    return dialect, msg, field_offsets(dialect, msg)


def test_truncated_in_every_field(body: bytes, sale_layout: tuple[Dialect, Message, dict[int, int]]) -> None:
    dialect, msg, offsets = sale_layout
    for n, start in offsets.items():
        prefix = dialect.specs[n].prefix
        prefix_bytes = (prefix + 1) // 2 if prefix else 0  # BCD lengths in cup-pos
        err = decode_error(dialect, body[:start + prefix_bytes + 1])
        if len(dialect.codecs[n].build_value(msg[n])) > prefix_bytes + 1:
            assert (err.field, err.offset) == (n, start + prefix_bytes), err
        if prefix_bytes == 2:  # cut inside an LLL prefix
            err = decode_error(dialect, body[:start + 1])
            assert (err.field, err.offset) == (n, start)
        err = decode_error(dialect, body[:start])  # the field is missing entirely
        assert err.field == n and err.offset == start


def test_non_bcd_digits(body: bytes, sale_layout: tuple[Dialect, Message, dict[int, int]]) -> None:
    dialect, _, offsets = sale_layout
    for n in (3, 4, 11, 14, 22, 23, 25):
        at = offsets[n]
        bad = body[:at] + b"\xab" + body[at + 1:]
        err = decode_error(dialect, bad)
        assert (err.field, err.offset) == (n, at)
        assert "BCD" in err.reason or "pad" in err.reason
    at = offsets[2] + 1  # inside the PAN
    err = decode_error(dialect, body[:at] + b"\xcc" + body[at + 1:])
    assert (err.field, err.offset) == (2, offsets[2] + 1)
    assert "242429" not in str(err), "a DecodeError must not carry the PAN"


def test_length_prefix_errors(body: bytes, sale_layout: tuple[Dialect, Message, dict[int, int]]) -> None:
    dialect, _, offsets = sale_layout
    at2, at55 = offsets[2], offsets[55]
    err = decode_error(dialect, body[:at2] + b"\x20" + body[at2 + 1:])  # 20 digits > n..19
    assert (err.field, err.offset) == (2, at2)
    assert "exceeds the maximum 19" in err.reason
    err = decode_error(dialect, body[:at2] + b"\x1a" + body[at2 + 1:])
    assert (err.field, err.offset) == (2, at2)
    assert "not BCD" in err.reason
    err = decode_error(dialect, body[:at55] + b"\x02\x56" + body[at55 + 2:])  # 256 > b...255
    assert (err.field, err.offset) == (55, at55)


def test_unknown_field_in_bitmap(body: bytes) -> None:
    dialect = fresh("cup-pos")
    bad = body[:2] + bytes([body[2] | 0x08]) + body[3:]  # field 5 is not in cup-pos
    err = decode_error(dialect, bad)
    assert (err.field, err.offset) == (1, 2)
    assert "field 5" in err.reason


def test_trailing_bytes(body: bytes) -> None:
    err = decode_error(fresh("cup-pos"), body + b"\x00")
    assert err.field is None and err.offset == len(body)
    assert "after the last field" in err.reason


def test_mti_and_bitmap_errors() -> None:
    cup, ascii87 = fresh("cup-pos"), fresh("iso87-ascii")
    for dialect, data, where in [
        (cup, b"\x02\x0a" + bytes(8), (0, 0)),
        (cup, b"\x02", (0, 0)),
        (cup, b"", (0, 0)),
        (cup, b"\x02\x00\x00\x00", (1, 2)),
        (ascii87, b"02A0" + b"0" * 16, (0, 0)),
        (ascii87, b"\xff\xff\xff\xff" + b"0" * 16, (0, 0)),
        (ascii87, b"0200" + b"G" * 16, (1, 4)),
        (ascii87, b"0200" + b"00 00 00 00 0000", (1, 4)),
        (ascii87, b"0200" + b"8" + b"0" * 15 + b"00", (1, 20)),
    ]:
        err = decode_error(dialect, data)
        assert (err.field, err.offset) == where, (data, err)
    assert "MTI" in str(decode_error(cup, b"\x02\x0a" + bytes(8)))


def test_ascii_dialect_data_errors() -> None:
    dialect = fresh("iso87-ascii")
    raw = dialect.encode(Message("0200", {3: "000000", 35: "1234D56", 52: b"\x01" * 8}))
    assert b"1234=56" in raw
    at3, at35, at52 = 20, 26, 35
    assert decode_error(dialect, raw[:at3] + b"00A000" + raw[at3 + 6:]).field == 3
    err = decode_error(dialect, raw[:at35] + b"0x" + raw[at35 + 2:])
    assert (err.field, err.offset) == (35, at35)
    err = decode_error(dialect, raw[:at52] + b"zz" + raw[at52 + 2:])
    assert (err.field, err.offset) == (52, at52)
    err = decode_error(dialect, raw[:at52] + b"01 1" + raw[at52 + 4:])
    assert (err.field, err.offset) == (52, at52)


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({2: "62242429000001139999"}, 2, "more than the maximum 19"),
    ({2: "62242429000001X3"}, 2, "not valid n"),
    ({3: "00000"}, 3, "the field is n6"),
    ({4: 1}, 4, "expected digits"),
    ({35: "1234=56A"}, 35, "not valid z"),
    ({41: "1000001"}, 41, "the field is ans8"),
    ({41: "1000001é"}, 41, "not ascii"),
    ({44: "x" * 26}, 44, "maximum 25"),
    ({52: "D1EEF419D0AE2609"}, 52, "expected bytes"),
    ({52: b"\x00" * 7}, 52, "the field is b64"),
    ({55: b"\x00" * 256}, 55, "maximum 255"),
    ({5: "000000000001"}, 5, "not defined"),
])
def test_encode_errors_name_the_field(fields: dict, field: int, words: str) -> None:
    for dialect in (fresh("cup-pos"), get_dialect("cup-pos")):
        with pytest.raises(EncodeError) as err:
            dialect.encode(Message("0200", fields))
        assert err.value.field == field
        assert words in str(err.value)
        assert "62242429000001" not in str(err.value)


def test_encode_error_on_compiled_path(body: bytes) -> None:
    dialect = fresh("cup-pos")
    msg = dialect.decode(body)
    dialect.encode(msg)
    assert dialect._compiled
    bad = msg.copy()
    bad[4] = "12"
    with pytest.raises(EncodeError) as err:
        dialect.encode(bad)
    assert err.value.field == 4


def test_encode_bad_mti_after_construction() -> None:
    msg = Message("0200", {3: "000000"})
    msg.mti = "02x0"
    with pytest.raises(EncodeError) as err:
        get_dialect("cup-pos").encode(msg)
    assert err.value.field == 0
    with pytest.raises(ValueError):
        Message("200", {})


# ---------------------------------------------------------------------------------------------
# Dialects from spec files
# ---------------------------------------------------------------------------------------------

USER_TOML = """
name = "acme"
description = "a user dialect"
mti_encoding = "ascii"
bitmap_encoding = "hex"

[framing]
length = "ASCII4"
tpdu = false
header = false

[defaults]
length_encoding = "ascii"
data_encoding = "ascii"

[defaults.b]
data_encoding = "binary"
length_encoding = "binary"

[fields]
2 = { name = "pan", format = "n..19" }
3 = { name = "processing code", format = "n6" }
23 = { name = "card sequence", format = "n3", align = "right", data_encoding = "bcd" }
35 = { name = "track 2", format = "z..37" }
41 = { name = "terminal", format = "ans8" }
55 = { name = "icc", format = "b...255" }
64 = { name = "mac", format = "b64" }
"""


def test_load_user_dialect_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(USER_TOML)
    dialect = load_dialect(path)
    assert dialect.name == "acme" and dialect.framing.length == "ASCII4" and not dialect.framing.tpdu
    assert dialect.specs[23].align == "right" and dialect.specs[23].data_encoding == "bcd"
    assert dialect.specs[55].length_encoding == "binary" and dialect.specs[55].data_encoding == "binary"
    assert dialect.specs[2].length_encoding == "ascii" and dialect.specs[2].data_encoding == "ascii"
    msg = Message("0200", {2: "6224242900000113", 3: "000000", 23: "001", 35: "6224D2806", 41: "TERM0001",
                           55: b"\x9f\x26\x01\x00", 64: b"\x00" * 8})
    raw = dialect.encode(msg)
    assert raw.startswith(b"0200") and b"166224242900000113" in raw and b"\x00\x01" in raw
    assert b"\x00\x04\x9f\x26\x01\x00" in raw
    for _ in range(3):
        assert dialect.decode(raw) == msg


def test_load_user_dialect_from_json(tmp_path: Path) -> None:
    path = tmp_path / "acme.json"
    path.write_text(json.dumps({
        "mti_encoding": "bcd",
        "defaults": {"length_encoding": "bcd"},
        "fields": [
            {"number": 2, "name": "pan", "format": "n..19"},
            {"number": 4, "name": "amount", "format": "n12"},
            {"number": 48, "name": "additional", "format": "ans...999", "length_encoding": "binary"},
            {"number": 64, "format": "b64"},
        ],
    }))
    dialect = load_dialect(path)
    assert dialect.name == "acme"  # from the file name
    assert dialect.specs[64].name == "field 64"
    msg = Message("0200", {2: "6224242900000113", 4: "000000000001", 48: "hello", 64: b"\x11" * 8})
    raw = dialect.encode(msg)
    assert b"\x00\x05hello" in raw
    assert dialect.decode(raw) == msg


def test_builtin_dialects_are_spec_files() -> None:
    assert {"cup-pos", "iso87-ascii"} <= set(builtin_dialects())
    assert get_dialect() is get_dialect("cup-pos")
    with pytest.raises(DialectError, match="unknown dialect 'nope'"):
        get_dialect("nope")
    path = resources.files("protocol.dialects") / "cup-pos.toml"
    assert load_dialect(Path(str(path))).specs == get_dialect("cup-pos").specs


BAD_SPECS = [
    ("bad.toml", '[fields]\n3 = { format = "n.6" }', "field 3: bad field format 'n.6'"),
    ("bad.toml", '[fields]\n3 = { name = "x" }', "field 3: missing 'format'"),
    ("bad.toml", '[fields]\n2 = { format = "n..19", length_encoding = "ebcdic" }', "field 2: unknown length encoding"),
    ("bad.toml", '[fields]\n2 = { format = "n..19", align = "centre" }', "field 2: align"),
    ("bad.toml", '[fields]\n2 = { format = "n..19", lenght_encoding = "ascii" }', "field 2: unknown key(s) 'lenght"),
    ("bad.toml", '[fields]\n2 = { format = "n..100" }', "field 2: max length 100 does not fit"),
    ("bad.toml", '[fields]\n52 = { format = "b63" }', "field 52: bad field format 'b63'"),
    ("bad.toml", '[fields]\n200 = { format = "n6" }', "bad field number 200"),
    ("bad.toml", '[fields]\nabc = { format = "n6" }', "field key 'abc' is not a number"),
    ("bad.toml", '[fields]\n3 = "n6"', "field 3: expected a table"),
    ("bad.toml", 'name = "x"', "no [fields] table"),
    ("bad.toml", '[fields\n3 = 1', "not valid TOML"),
    ("bad.toml", '[framing]\nlength = "BCD9"\n[fields]\n3 = { format = "n6" }', "framing length 'BCD9'"),
    ("bad.toml", 'bitmap_encoding = "octal"\n[fields]\n3 = { format = "n6" }', "bitmap encoding"),
    ("bad.toml", 'mti_encoding = "ebcdic"\n[fields]\n3 = { format = "n6" }', "mti encoding"),
    ("bad.toml", '[defaults]\nalign = "left"\nlength = 3\n[fields]\n3 = { format = "n6" }', "[defaults]: unknown key"),
    ("bad.toml", '[defaults.n]\nalgn = "right"\n[fields]\n3 = { format = "n6" }', "[defaults.n]: unknown key"),
    ("bad.json", '{"fields": [{"number": 2, "format": "n..19"}, {"number": 2, "format": "n6"}]}',
     "field 2 defined twice"),
    ("bad.json", '{"fields": [{"number": 2, "format": "n..19"}, 5]}', "fields entry #2: expected a table"),
    ("bad.json", '{"fields": [{"format": "n6"}]}', "field key None is not a number"),
    ("bad.json", '[1, 2]', "expected a table at the top level"),
    ("bad.json", '{"fields": {', "not valid JSON"),
    ("bad.json", '{"defaults": "bcd", "fields": {"3": {"format": "n6"}}}', "bad.json"),
]


@pytest.mark.parametrize(("filename", "content", "message"), BAD_SPECS, ids=[m for _, _, m in BAD_SPECS])
def test_bad_spec_files_give_dialect_error_naming_the_entry(tmp_path: Path, filename: str, content: str,
                                                           message: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    with pytest.raises(DialectError) as err:
        load_dialect(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(DialectError, match="cannot read dialect file"):
        load_dialect(tmp_path / "absent.toml")


# ---------------------------------------------------------------------------------------------
# Composite fields
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["00000001", "00000024004", "22000024000600", "2200002400060", "220000240006012"])
def test_field60_round_trips(value: str) -> None:
    assert Field60.parse(value).encode() == value


def test_field60_sub_fields() -> None:
    f = Field60.parse("22000024000600")
    assert (f.tx_type, f.batch, f.nmc, f.read_capability, f.ic_condition, f.extra) == (
        "22", "000024", "000", "6", "0", "0")
    assert Field60("00", "000001", "004").encode() == "00000001004"
    assert Field60("22", "000001", "000", "6", "0").encode() == "2200000100060"


@pytest.mark.parametrize("value", ["", "0000001", "0000000a000", "000000010", "0000000100", "000000010006",
                                   "²²000001000", 22000024000])
def test_field60_rejects_malformed(value: object) -> None:
    with pytest.raises(DecodeError) as err:
        Field60.parse(value)  # type: ignore[arg-type]
    assert err.value.field == 60


@pytest.mark.parametrize("bad", [
    Field60("2", "000001"), Field60("22", "00001"), Field60("22", "000001", "01"),
    Field60("22", "000001", "000", "66", "0"), Field60("22", "000001", "000", "6", "0", "x"),
])
def test_field60_encode_rejects_malformed(bad: Field60) -> None:
    with pytest.raises(EncodeError) as err:
        bad.encode()
    assert err.value.field == 60


@pytest.mark.parametrize("value", ["000024000403", "0000240004030830", "000024000403083012345"])
def test_field61_round_trips(value: str) -> None:
    f = Field61.parse(value)
    assert f.encode() == value
    assert (f.batch, f.stan) == ("000024", "000403")


@pytest.mark.parametrize("value", ["", "00002400040", "0000240004030", "000024000403083", "00002400040X"])
def test_field61_rejects_malformed(value: str) -> None:
    with pytest.raises(DecodeError) as err:
        Field61.parse(value)
    assert err.value.field == 61


def test_field61_encode_rejects_malformed() -> None:
    for bad in (Field61("24", "000403"), Field61("000024", "403"), Field61("000024", "000403", "830"),
                Field61("000024", "000403", "", "99")):
        with pytest.raises(EncodeError) as err:
            bad.encode()
        assert err.value.field == 61


totals = st.builds(Totals, st.integers(0, 10**12 - 1), st.integers(0, 999), st.integers(0, 10**12 - 1),
                   st.integers(0, 999), st.integers(0, 9))


@given(totals, totals)
def test_settlement_totals_round_trip(domestic: Totals, foreign: Totals) -> None:
    value = SettlementTotals(domestic, foreign).encode()
    assert len(value) == 62 and value.isdigit()
    assert SettlementTotals.parse(value) == SettlementTotals(domestic, foreign)
    assert get_dialect().specs[48].length >= len(value)


def test_settlement_totals_layout_and_reconciliation() -> None:
    t = SettlementTotals(Totals(12500, 3, 100, 1))
    assert t.encode() == "000000012500003000000000100001" + "0" + "0" * 31
    reply = SettlementTotals.parse(t.with_reconciliation(2).encode())
    assert reply.result == "unbalanced" and reply.domestic.same_amounts(t.domestic)
    assert SettlementTotals.parse(t.with_reconciliation(1).encode()).result == "balanced"


@pytest.mark.parametrize("value", ["0" * 61, "0" * 63, "0" * 30 + "x" + "0" * 31, "", None, "٣" * 62])
def test_settlement_totals_reject_malformed(value: object) -> None:
    with pytest.raises(DecodeError) as err:
        SettlementTotals.parse(value)  # type: ignore[arg-type]
    assert err.value.field == 48


def test_settlement_totals_encode_rejects_overflow() -> None:
    for bad in (Totals(debit_amount=10**12), Totals(debit_count=1000), Totals(credit_amount=-1),
                Totals(reconciliation=10)):
        with pytest.raises(EncodeError) as err:
            SettlementTotals(bad).encode()
        assert err.value.field == 48


records = st.builds(BatchRecord, stan=st.text("0123456789", min_size=6, max_size=6),
                    pan=st.from_regex(r"[1-9][0-9]{12,18}", fullmatch=True), amount=st.integers(0, 10**12 - 1),
                    organisation=st.sampled_from(["00", "01"]))


@given(st.lists(records, min_size=1, max_size=RECORDS_PER_UPLOAD))
def test_batch_records_round_trip(batch: list[BatchRecord]) -> None:
    value = encode_batch_records(batch)
    assert len(value) == 2 + 40 * len(batch)
    assert parse_batch_records(value) == batch
    assert len(value) <= get_dialect().specs[48].length


def test_batch_record_layout() -> None:
    value = encode_batch_records([BatchRecord("000403", "6224242900000113", 1)])
    assert value == "01" + "00" + "000403" + "00006224242900000113" + "000000000001"


@pytest.mark.parametrize("value", ["", "1", "0a", "00", "09" + "0" * 360, "01" + "0" * 39, "02" + "0" * 40,
                                   "01" + "0" * 41])
def test_batch_records_reject_malformed(value: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_batch_records(value)
    assert err.value.field == 48


def test_batch_records_encode_rejects_malformed() -> None:
    good = BatchRecord("000403", "6224242900000113", 1)
    for bad in ([], [good] * 9, [BatchRecord("403", "6224242900000113", 1)], [BatchRecord("000403", "1" * 21, 1)],
                [BatchRecord("000403", "62242429X0000113", 1)], [BatchRecord("000403", "6224", 10**12)]):
        with pytest.raises(EncodeError) as err:
            encode_batch_records(bad)
        assert err.value.field == 48


def test_device_info_round_trips() -> None:
    raw = encode_device_info(SN="P1000019", FW="3.0.8", BAT=87)
    assert raw == b"SN=P1000019;FW=3.0.8;BAT=87"
    assert parse_device_info(raw) == {"SN": "P1000019", "FW": "3.0.8", "BAT": "87"}
    assert parse_device_info(b"") == {}


@pytest.mark.parametrize("raw", [b"SN=1;FW", b"\xff\xfe", b"SN=1;;BAT"])
def test_device_info_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        parse_device_info(raw)
    assert err.value.field == 62


@given(st.integers(-(10**12) + 1, 10**12 - 1))
def test_balance_round_trips(amount: int) -> None:
    value = encode_balance(amount)
    assert len(value) == 20 and value.startswith("1002156")
    assert parse_balance(value) == amount


def test_balance_layout_and_errors() -> None:
    assert encode_balance(12345) == "1002156C000000012345"
    assert parse_balance("1002156D000000000100") == -100
    for bad in ("1002156X000000000100", "1002156C00000000010", "1002156C00000000010x", "XXXXXXXC000000000100", ""):
        with pytest.raises(DecodeError) as err:
            parse_balance(bad)
        assert err.value.field == 54
    with pytest.raises(EncodeError):
        encode_balance(10**12)
    with pytest.raises(EncodeError):
        encode_balance(1, currency="CNY")


# ---------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------

COMMON = {"tid": "10000019", "mid": "850100082410002", "batch": "000024"}
CARD = cat.CardData(pan="6224242900000113", expiry="2806", track2="6224242900000113D28062013949031013",
                    track3="996224242900000113D1561560000000000000003000000214000028060000000000000000000000000000",
                    entry_mode="051", card_seq="001", icc=bytes.fromhex("9F2608A1B2C3D4E5F60718"))
PIN = bytes.fromhex("D1EEF419D0AE2609")


def built_requests() -> dict[str, Message]:
    original = cat.Field61("000024", "000403", "0830")
    return {
        "sign_in": cat.sign_in(stan="000001", mode="004", device_info=encode_device_info(SN="P1", FW="3.0.8"),
                               **COMMON),
        "sign_in_003": cat.sign_in(stan="000001", mode="003", **COMMON),
        "sign_in_001": cat.sign_in(stan="000001", mode="001", **COMMON),
        "sign_off": cat.network("sign_off", stan="000002", **COMMON),
        "echo": cat.network("echo", stan="000003", **COMMON),
        "parameter_download": cat.network("parameter_download", stan="000004", **COMMON),
        "status_upload": cat.network("status_upload", stan="000005", device_info=b"BAT=87", **COMMON),
        "balance": cat.balance(stan="000006", card=CARD, pin_block=PIN, **COMMON),
        "sale": cat.sale(stan="000007", card=CARD, amount_fen=12345, pin_block=PIN, operator="001", **COMMON),
        "void": cat.void(stan="000008", card=CARD, amount_fen=12345, original_rrn="190830093435",
                         original=cat.Field61("000024", "000007"), **COMMON),
        "refund": cat.refund(stan="000009", card=CARD, amount_fen=100, original=original, **COMMON),
        "settlement": cat.settlement(stan="000010", totals=SettlementTotals(Totals(12345, 1, 100, 1)), **COMMON),
        "batch_upload": cat.batch_upload(stan="000011", records=[BatchRecord("000007", CARD.pan, 12345)],
                                         **COMMON),
        "batch_upload_end": cat.batch_upload_end(stan="000012", total_records=1, **COMMON),
        "signature_upload": cat.signature_upload(stan="000013", original=cat.Field61("000024", "000007"),
                                                 image=b"\x89PNG" + bytes(100), **COMMON),
        "firmware_query": cat.network("firmware_query", stan="000014", **COMMON),
        "firmware_chunk": cat.network("firmware_chunk", stan="000015", device_info=b"VER=3.0.8;OFF=0", **COMMON),
    }


def test_builders_cover_every_catalogue_row() -> None:
    assert set(built_requests()) | {"reversal"} == set(cat.CATALOGUE)


@pytest.mark.parametrize("name", sorted(built_requests()))
def test_builders_are_identified_as_their_row(name: str) -> None:
    msg = built_requests()[name]
    row = cat.identify(msg)
    assert row is not None and row.name == name
    assert msg.mti == row.request_mti
    assert cat.missing_fields(msg, row) == []
    f60 = Field60.parse(msg[60])
    assert (f60.tx_type, f60.nmc, f60.batch) == (row.tx_type, row.nmc, "000024")
    if row.processing_code:
        assert msg[3] == row.processing_code and msg[25] == row.condition_code
    for dialect in (get_dialect("cup-pos"), fresh("cup-pos")):  # every builder output is valid cup-pos
        for _ in range(3):
            assert dialect.decode(dialect.encode(msg)) == msg


def test_reversal_carries_exactly_the_originals_identifying_fields() -> None:
    sale = built_requests()["sale"]
    sale[64] = b"\x01" * 8
    assert {35, 36, 52, 53, 26, 55, 63} <= set(sale.fields)
    rev = cat.reversal(sale, "98")
    kept = {2, 3, 4, 11, 14, 22, 23, 25, 41, 42, 49, 60, 61}
    assert rev.mti == "0400"
    assert set(rev.fields) == (kept & set(sale.fields)) | {39}
    assert all(rev[n] == sale[n] for n in kept & set(sale.fields))
    assert rev[39] == "98"
    assert not {35, 36, 52} & set(rev.fields)
    assert cat.identify(rev).name == "reversal"
    assert cat.missing_fields(rev, cat.CATALOGUE["reversal"]) == []
    assert get_dialect().decode(get_dialect().encode(rev)) == rev

    void = built_requests()["void"]
    rev = cat.reversal(void, "A0")
    assert rev[61] == void[61] and 37 not in rev


def test_identify_rejects_unknown_shapes() -> None:
    assert cat.identify(Message("0200", {3: "000000"})) is None
    assert cat.identify(Message("0200", {3: "990000", 60: "22000024000"})) is None
    assert cat.identify(Message("0820", {60: "00000024999"})) is None
