"""Fuzzing the decoders: random bytes and mutated valid messages raise nothing but DecodeError.

Each input goes through a warm dialect (compiled field sets for the real message shapes) and an
always-interpreted one; both must agree on the outcome, and anything that decodes must re-encode to
bytes that decode to the same message.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import DecodeError, Dialect, Message
from protocol import catalogue as cat
from protocol.composite import BatchRecord, Field61, SettlementTotals, Totals
from protocol.dialect import dialect_from_mapping

SHARED = Path(os.environ.get("POSSIM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
VECTOR_HEX = SHARED / "protocol" / "vectors" / "cup_0200_sale.hex"
EXAMPLES = int(os.environ.get("POSSIM_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load(name: str, *, interpreted: bool = False) -> Dialect:
    text = (resources.files("protocol.dialects") / f"{name}.toml").read_text("utf-8")
    dialect = dialect_from_mapping(tomllib.loads(text), source=f"{name}.toml")
    if interpreted:  # never compile: every decode takes the cold path
        dialect._fieldset_for = lambda numbers: None  # type: ignore[method-assign]
    return dialect


CUP, CUP_COLD = load("cup-pos"), load("cup-pos", interpreted=True)
ISO, ISO_COLD = load("iso87-ascii"), load("iso87-ascii", interpreted=True)


def seeds() -> list[bytes]:
    """Valid cup-pos messages: the captured vector and one of each catalogue shape."""
    common = {"tid": "10000019", "mid": "850100082410002", "batch": "000024"}
    card = cat.CardData(pan="6224242900000113", expiry="2806", track2="6224242900000113D28062013949031013",
                        entry_mode="051", card_seq="001", icc=bytes.fromhex("9F2608A1B2C3D4E5F60718"))
    pin = bytes(8)
    sale = cat.sale(stan="000007", card=card, amount_fen=12345, pin_block=pin, **common)
    msgs = [
        sale,
        cat.reversal(sale, "98"),
        cat.sign_in(stan="000001", **common),
        cat.void(stan="000008", card=card, amount_fen=1, original_rrn="190830093435",
                 original=Field61("000024", "000007"), **common),
        cat.settlement(stan="000010", totals=SettlementTotals(Totals(12345, 1, 100, 1)), **common),
        cat.batch_upload(stan="000011", records=[BatchRecord("000007", card.pan, 12345)] * 3, **common),
    ]
    out = [CUP.encode(m) for m in msgs]
    if VECTOR_HEX.is_file():
        out.append(bytes.fromhex(VECTOR_HEX.read_text())[13:])
    return out


SEEDS = seeds()
ISO_SEEDS = [ISO.encode(Message("0200", {2: "6224242900000113", 3: "000000", 4: "000000000100", 11: "000001",
                                         35: "6224242900000113D2806", 41: "10000019", 52: bytes(8),
                                         55: b"\x9f\x26\x01\x00", 70: "301", 128: bytes(8)})),
             ISO.encode(Message("0800", {7: "0830093435", 11: "000001", 70: "001"}))]
for _raw in SEEDS:  # warm the compiled path: every seed shape is compiled from here on
    for _ in range(2):
        CUP.decode(_raw)
for _raw in ISO_SEEDS:
    for _ in range(2):
        ISO.decode(_raw)


def outcome(dialect: Dialect, data: bytes) -> Message | tuple[int | None, int | None, str]:
    try:
        return dialect.decode(data)
    except DecodeError as err:  # anything else propagates and fails the test
        return (err.field, err.offset, err.reason)


def check(data: bytes, warm: Dialect, cold: Dialect) -> None:
    result = outcome(warm, data)
    assert outcome(cold, data) == result, "compiled and interpreted paths disagree"
    if isinstance(result, Message):  # accepted: it must survive a round trip
        assert warm.decode(warm.encode(result)) == result


def toggle_field(data: bytearray, dialect: Dialect, number: int) -> None:
    """Flip field `number`'s bit in the primary bitmap (binary or hex text) if the data reaches it."""
    if dialect.bitmap_encoding == "binary":
        at = 2 + (number - 1) // 8
        if at < len(data):
            data[at] ^= 0x80 >> ((number - 1) % 8)
    else:
        at = 4 + (number - 1) // 4
        if at < len(data) and chr(data[at]) in "0123456789ABCDEF":
            nibble = int(chr(data[at]), 16) ^ (8 >> ((number - 1) % 4))
            data[at] = ord(f"{nibble:X}")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], dialect: Dialect) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "length", "bitmap"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "length":
            # BCD-looking bytes where LL/LLL prefixes sit: bump, zero, maximise, or set wild values
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x09, 0x10, 0x19, 0x37, 0x99, 0xFF,
                                             (data[at] + 1) & 0xFF, (data[at] - 1) & 0xFF]))
        else:  # a field the dialect knows appears or vanishes: the data no longer lines up
            toggle_field(data, dialect, draw(st.sampled_from([n for n in dialect.specs if n <= 64])))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    check(data, CUP, CUP_COLD)
    check(data, ISO, ISO_COLD)


@FUZZ
@given(st.sampled_from(SEEDS).map(lambda raw: raw[:10]), st.binary(max_size=400))
def test_valid_header_random_body(head: bytes, tail: bytes) -> None:
    """A real MTI and bitmap followed by garbage reaches every field parser."""
    check(head + tail, CUP, CUP_COLD)


@FUZZ
@given(mutated(SEEDS, CUP))
def test_mutated_cup_pos_messages_raise_only_decode_error(data: bytes) -> None:
    check(data, CUP, CUP_COLD)


@FUZZ
@given(mutated(ISO_SEEDS, ISO))
def test_mutated_iso87_ascii_messages_raise_only_decode_error(data: bytes) -> None:
    check(data, ISO, ISO_COLD)


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 2000))
def test_every_truncation_and_extension(raw: bytes, cut: int) -> None:
    cut %= len(raw) + 1
    check(raw[:cut], CUP, CUP_COLD)
    check(raw + raw[:cut], CUP, CUP_COLD)
