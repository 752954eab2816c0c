"""Differential tests: possim's codec against pyiso8583 (an independent implementation).

For random messages valid in a dialect, possim's bytes must decode in pyiso8583 (with the spec from
`protocol.interop.pyiso8583_spec`) to the same values, and pyiso8583's encoding of the same message
must be byte-identical to possim's and decode in possim to the same message.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Dialect, Message, get_dialect
from protocol.dialect import dialect_from_mapping
from protocol.fields import FieldSpec
from protocol.interop import (
    from_pyiso8583,
    message_from_pyiso8583,
    message_to_pyiso8583,
    pyiso8583_gaps,
    pyiso8583_spec,
    to_pyiso8583,
)

iso8583 = pytest.importorskip("iso8583", reason="pyiso8583 is a test extra: pip install -e '.[test]'")

SHARED = Path(os.environ.get("POSSIM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
VECTOR_HEX = SHARED / "protocol" / "vectors" / "cup_0200_sale.hex"

# A dialect exercising what the built-in ones do not: binary and ASCII length prefixes next to BCD,
# right-aligned variable digits, gbk text, and fields 65-128 behind a binary secondary bitmap.
MIXED = dialect_from_mapping({
    "name": "mixed",
    "fields": {
        "2": {"format": "n..19", "align": "right"},
        "3": {"format": "n6"},
        "22": {"format": "n3", "align": "right"},
        "32": {"format": "n..11", "length_encoding": "binary"},
        "35": {"format": "z..37", "length_encoding": "ascii"},
        "36": {"format": "z...104", "length_encoding": "binary"},
        "41": {"format": "ans8"},
        "43": {"format": "ans..40", "charset": "gbk", "length_encoding": "ascii"},
        "48": {"format": "ans...999", "length_encoding": "binary"},
        "52": {"format": "b64"},
        "55": {"format": "b...255", "length_encoding": "ascii"},
        "60": {"format": "n...17", "data_encoding": "ascii", "length_encoding": "ascii"},
        "70": {"format": "n3"},
        "90": {"format": "n42"},
        "102": {"format": "ans..28"},
        "128": {"format": "b64"},
    },
}, source="mixed")


def fresh(name: str) -> Dialect:
    text = (resources.files("protocol.dialects") / f"{name}.toml").read_text("utf-8")
    return dialect_from_mapping(tomllib.loads(text), source=f"{name}.toml")


def values(spec: FieldSpec) -> st.SearchStrategy[str | bytes]:
    """Valid values for one field: right length, right alphabet."""
    sizes = st.integers(0, spec.length) if spec.prefix else st.just(spec.length)
    if spec.kind == "n":
        return sizes.flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
    if spec.kind == "z":
        return sizes.flatmap(lambda n: st.text("0123456789D", min_size=n, max_size=n))
    if spec.kind == "b":
        return sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))
    if spec.charset == "gbk":  # variable only: a length counts bytes, 2 per Chinese character
        assert spec.prefix
        return st.text(st.sampled_from("结算消费撤销退货ABC 123"), max_size=spec.length // 2)
    return sizes.flatmap(lambda n: st.text(st.characters(max_codepoint=127), min_size=n, max_size=n))


# Message shapes real traffic repeats, drawn half the time next to random field subsets.
CUP_SHAPES = [
    (2, 3, 4, 11, 14, 22, 23, 25, 26, 35, 41, 42, 48, 49, 52, 53, 55, 59, 60, 64),  # the vector's shape
    (11, 41, 42, 60, 63),  # sign-in
    (2, 3, 4, 11, 14, 22, 23, 25, 41, 42, 49, 60, 61, 39),  # reversal
]


@st.composite
def messages(draw: st.DrawFn, dialect: Dialect, shapes: list[tuple[int, ...]] = ()) -> Message:
    usable = sorted(n for n in dialect.specs if n not in pyiso8583_gaps(dialect))
    if shapes and draw(st.booleans()):
        numbers = [n for n in draw(st.sampled_from(shapes)) if n in usable]
    else:
        numbers = draw(st.lists(st.sampled_from(usable), unique=True, max_size=len(usable)))
    mti = draw(st.text("0123456789", min_size=4, max_size=4))
    return Message(mti, {n: draw(values(dialect.specs[n])) for n in sorted(numbers)})


def check_both_ways(dialect: Dialect, msg: Message) -> None:
    spec = pyiso8583_spec(dialect)
    ours = dialect.encode(msg)

    # possim -> pyiso8583
    doc, _ = iso8583.decode(ours, spec)
    assert message_from_pyiso8583(doc, dialect) == msg
    assert doc["t"] == msg.mti
    assert (doc["p"] + doc.get("1", "")) == Dialect.bitmap_for(msg.fields).hex().upper()

    # pyiso8583 -> possim
    theirs, _ = iso8583.encode(message_to_pyiso8583(msg, dialect), spec)
    assert bytes(theirs) == ours
    assert dialect.decode(bytes(theirs)) == msg

    # again on possim's compiled path (a shape is compiled the second time it is seen)
    for _ in range(2):
        assert dialect.encode(msg) == ours
        assert dialect.decode(bytes(theirs)) == msg
    assert tuple(sorted(msg.fields)) in dialect._compiled


# POSSIM_DIFF_EXAMPLES=5000 for a longer hunt than the default run
DIFF_SETTINGS = settings(max_examples=int(os.environ.get("POSSIM_DIFF_EXAMPLES", "300")), deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])
CUP = fresh("cup-pos")
ISO87 = fresh("iso87-ascii")


@DIFF_SETTINGS
@given(messages(CUP, CUP_SHAPES))
def test_cup_pos_matches_pyiso8583(msg: Message) -> None:
    check_both_ways(CUP, msg)


@DIFF_SETTINGS
@given(messages(ISO87, [(2, 3, 4, 7, 11, 12, 13, 22, 35, 41, 42, 49, 52), (7, 11, 70), (2, 3, 4, 11, 90, 128)]))
def test_iso87_ascii_matches_pyiso8583(msg: Message) -> None:
    check_both_ways(ISO87, msg)


@DIFF_SETTINGS
@given(messages(MIXED, [(2, 3, 32, 35, 36, 41, 43, 48, 52, 55, 60), (3, 70, 90, 102, 128)]))
def test_mixed_length_encodings_match_pyiso8583(msg: Message) -> None:
    check_both_ways(MIXED, msg)


def test_vector_decodes_identically_in_pyiso8583() -> None:
    body = bytes.fromhex(VECTOR_HEX.read_text())[13:]
    dialect = get_dialect("cup-pos")
    doc, _ = iso8583.decode(body, pyiso8583_spec(dialect))
    assert message_from_pyiso8583(doc, dialect) == dialect.decode(body)
    assert doc["35"] == "6224242900000113D28062013949031013"
    assert doc["55"].startswith("9F2608")


def test_value_helpers() -> None:
    cup, iso = get_dialect("cup-pos"), get_dialect("iso87-ascii")
    assert to_pyiso8583(35, "1234D56", cup.specs[35]) == "1234D56"
    assert to_pyiso8583(35, "1234D56", iso.specs[35]) == "1234=56"
    assert from_pyiso8583("1234=56", iso.specs[35]) == "1234D56"
    assert from_pyiso8583("1234d56", cup.specs[35]) == "1234D56"
    assert to_pyiso8583(52, b"\x01\xab", cup.specs[52]) == "01AB"
    assert from_pyiso8583("01ab", iso.specs[52]) == b"\x01\xab"


def test_gaps_are_reported_not_mis_described() -> None:
    assert pyiso8583_gaps(get_dialect("cup-pos")) == []
    iso = get_dialect("iso87-ascii")
    assert pyiso8583_gaps(iso) == [55]  # LLL prefix counts bytes, 2 hex characters travel per byte
    assert "55" not in pyiso8583_spec(iso)
    assert pyiso8583_spec(iso)["52"]["max_len"] == 16
