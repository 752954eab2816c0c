"""Card reader, card catalogue and EMV field-55 data: what a merchant and the host would notice."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acquirer.testcards import TEST_CARDS
from terminal.hardware import FIELD_WEAR_CAP, FIELD_WEAR_RATE, Battery, Card, CardCatalogue, CardReader, CardReadError
from terminal.hardware.cards import named_card, tlv_decode, tlv_encode

APPROVED = named_card("approved")
WHEN = datetime(2025, 3, 1, 12, 34, 56)


def reader(seed: int = 1, **kwargs) -> CardReader:
    return CardReader(rng=random.Random(seed), **kwargs)


# Reading -------------------------------------------------------------------------------------


def test_swipe_yields_track2_and_swipe_entry_mode():
    read = reader().read(APPROVED, "swipe")
    assert read.pan == APPROVED.pan
    assert read.expiry == "3012"
    assert read.track2.startswith(APPROVED.pan + "D3012201")
    assert read.entry_mode == "021"
    assert read.card_seq == "000"
    assert read.icc is None


def test_chip_read_yields_field_55_with_plausible_emv_tags():
    read = reader().read(APPROVED, "chip", amount_fen=1234, when=WHEN)
    assert read.entry_mode == "051"
    assert read.card_seq == "001"
    tags = dict(tlv_decode(read.icc))
    for tag in [
        "9F26",
        "9F27",
        "9F10",
        "9F37",
        "9F36",
        "95",
        "9A",
        "9C",
        "9F02",
        "5F2A",
        "82",
        "9F1A",
        "9F03",
        "9F33",
        "9F34",
        "9F35",
        "9F1E",
        "84",
        "9F09",
        "9F41",
    ]:
        assert tag in tags, tag
    assert tags["9F02"] == bytes.fromhex("000000001234")
    assert tags["5F2A"] == tags["9F1A"] == bytes.fromhex("0156")
    assert tags["9A"] == bytes.fromhex("250301")
    assert tags["9C"] == b"\x00"
    assert len(tags["9F26"]) == 8 and len(tags["9F37"]) == 4
    assert len(read.icc) <= 255  # field 55 is b...255
    assert APPROVED.pan.encode() not in read.icc and bytes.fromhex(APPROVED.pan) not in read.icc


def test_contactless_read_and_terminal_without_pin_pad():
    read = reader(pin_capable=False).read(APPROVED, "contactless", amount_fen=100, when=WHEN)
    assert read.entry_mode == "072"
    assert read.icc is not None
    assert reader(pin_capable=False).read(APPROVED, "swipe").entry_mode == "022"


def test_atc_counts_per_card_and_cryptograms_are_seeded():
    r = reader(seed=9)
    first = dict(tlv_decode(r.read(APPROVED, "chip", when=WHEN).icc))
    second = dict(tlv_decode(r.read(APPROVED, "chip", when=WHEN).icc))
    assert int.from_bytes(first["9F36"], "big") + 1 == int.from_bytes(second["9F36"], "big")
    assert first["9F26"] != second["9F26"]
    again = dict(tlv_decode(reader(seed=9).read(APPROVED, "chip", when=WHEN).icc))
    assert again["9F26"] == first["9F26"]  # same seed, same cryptogram
    other = dict(tlv_decode(reader(seed=10).read(APPROVED, "chip", when=WHEN).icc))
    assert other["9F26"] != first["9F26"]


def test_unknown_method_is_a_usage_error():
    with pytest.raises(ValueError, match="swipe, chip, contactless"):
        reader().read(APPROVED, "manual")


def test_chip_insert_of_a_magstripe_only_card_asks_for_a_swipe():
    magstripe = Card(pan="6222021234567890", expiry="3012", service_code="101", name="mag")
    assert not magstripe.chip and not magstripe.contactless
    r = reader()
    with pytest.raises(CardReadError) as err:
        r.read(magstripe, "chip")
    assert err.value.kind == "not_supported" and "swipe" in err.value.reason
    assert r.errors == 0
    assert r.read(magstripe, "swipe").entry_mode == "021"


# Faults and wear (FM-01) ---------------------------------------------------------------------


def test_read_error_fault_shows_merchant_text_counts_and_retry_succeeds():
    r = reader()
    r.faults["read_error"].arm(count=1)
    with pytest.raises(CardReadError) as err:
        r.read(APPROVED, "swipe")
    assert str(err.value) == err.value.reason == "read error, swipe again"
    assert err.value.kind == "read_error" and err.value.cause == "fault"
    assert (r.reads, r.errors, r.errors_since_clean) == (1, 1, 1)
    assert r.last_error == "read error, swipe again"
    assert r.read(APPROVED, "swipe").pan == APPROVED.pan  # the retry works
    assert (r.reads, r.errors) == (2, 1)


def test_read_error_text_per_method():
    r = reader()
    r.faults["read_error"].arm(always=True)
    reasons = []
    for method in ("swipe", "chip", "contactless"):
        with pytest.raises(CardReadError) as err:
            r.read(APPROVED, method, when=WHEN)
        reasons.append(err.value.reason)
    assert reasons == ["read error, swipe again", "chip read error, insert again", "read error, tap again"]
    assert r.errors == 3


def test_read_error_by_probability_is_reproducible():
    def errors(seed: int) -> list[int]:
        r = reader(seed)
        r.faults["read_error"].arm(probability=0.2)
        out = []
        for i in range(300):
            try:
                r.read(APPROVED, "swipe")
            except CardReadError:
                out.append(i)
        return out

    assert errors(5) == errors(5)
    assert 30 < len(errors(5)) < 90


def test_no_card_fault():
    r = reader()
    r.faults["no_card"].arm(count=1)
    with pytest.raises(CardReadError) as err:
        r.read(APPROVED, "swipe")
    assert err.value.kind == "no_card"
    assert "present card" in err.value.reason
    assert (r.no_card, r.reads, r.errors) == (1, 0, 0)


def _errors_in(r: CardReader, reads: int) -> int:
    failed = 0
    for _ in range(reads):
        try:
            r.read(APPROVED, "swipe")
        except CardReadError as exc:
            assert exc.cause == "worn_contacts"
            failed += 1
    return failed


def test_worn_contacts_fail_more_over_time_and_cleaning_cuts_failures_by_about_90_percent():
    r = reader(seed=2024, wear_rate=5e-6, wear_cap=0.1)
    fresh = _errors_in(r, 2000)
    _errors_in(r, 18000)  # contacts oxidise: the failure probability reaches its cap
    assert r.failure_probability() == pytest.approx(0.1)
    worn = _errors_in(r, 4000)
    assert worn > 5 * fresh
    assert r.errors_since_clean > 0

    r.clean()
    assert r.errors_since_clean == 0 and r.reads_since_clean == 0 and r.cleanings == 1
    assert r.failure_probability() == 0.0
    after_clean = _errors_in(r, 4000)
    cut = 1 - after_clean / worn
    assert 0.8 <= cut <= 0.97, (worn, after_clean)
    assert r.errors >= fresh + worn + after_clean  # the lifetime counter is not reset by clean()
    assert r.diagnostics()["cleanings"] == 1


def test_contactless_reads_do_not_wear_contacts():
    r = reader(wear_rate=0.01, wear_cap=1.0)
    for _ in range(50):
        r.read(APPROVED, "contactless", when=WHEN)
    assert r.reads_since_clean == 0 and r.errors == 0


def test_field_wear_figures_match_the_source_case():
    """~1500 contact reads a month: worn contacts ~2 failures/month; cleaning cuts failures by ~90%."""
    r = reader(wear_rate=FIELD_WEAR_RATE, wear_cap=FIELD_WEAR_CAP)
    month = 1500
    r.reads_since_clean = 100_000
    worn_per_month = month * r.failure_probability()
    after_clean = 0.0
    r.clean()
    for _ in range(month):
        r.reads_since_clean += 1
        after_clean += r.failure_probability()
    assert 1.5 <= worn_per_month <= 2.5
    assert 0.85 <= 1 - after_clean / worn_per_month <= 0.95


def test_pristine_reader_draws_no_randomness_on_swipes():
    rng = random.Random(3)
    r = CardReader(rng=rng)
    state = rng.getstate()
    for _ in range(20):
        r.read(APPROVED, "swipe")
    assert rng.getstate() == state


def test_reads_drain_the_battery():
    battery = Battery(clock=lambda: 0.0, idle_drain_per_hour=0)
    r = reader(battery=battery)
    r.read(APPROVED, "swipe")
    r.read(APPROVED, "chip", when=WHEN)
    assert battery.level == pytest.approx(100 - battery.op_cost("swipe") - battery.op_cost("chip"))


# Card data protection --------------------------------------------------------------------------


def test_reprs_mask_the_pan_and_never_show_the_pin():
    read = reader().read(APPROVED, "swipe")
    for text in (repr(APPROVED), repr(read)):
        assert APPROVED.pan not in text
        assert "622202******0015" in text
        assert APPROVED.pin not in text


def test_card_validation_never_echoes_the_pin():
    with pytest.raises(ValueError) as err:
        Card(pan="6222020000000015", expiry="3012", pin="12x456", name="bad")
    assert "12x456" not in str(err.value)
    with pytest.raises(ValueError, match="expiry"):
        Card(pan="6222020000000015", expiry="3013")
    with pytest.raises(ValueError, match="PAN"):
        Card(pan="62220200", expiry="3012")


# Catalogue ---------------------------------------------------------------------------------------


def test_catalogue_holds_the_acquirer_test_cards_and_user_cards():
    cat = CardCatalogue([Card(pan="6217001234567893", expiry="2912", pin="000000", name="mine")])
    assert len(cat) == len(TEST_CARDS) + 1
    assert cat.by_name("insufficient").pan == "6222020000000023"
    assert cat["mine"].chip
    assert cat.by_pan("6217001234567893").name == "mine"
    assert cat.by_pan("0000000000000000") is None
    with pytest.raises(KeyError, match="known cards"):
        cat.by_name("nope")
    with pytest.raises(ValueError, match="already"):
        cat.add(Card(pan="6222020000000015", expiry="3012", name="copy"))
    for test_card in TEST_CARDS:  # reader and host agree on the track data
        assert cat[test_card.name].track2 == test_card.track2


def test_catalogue_from_config():
    cat = CardCatalogue.from_config(
        [{"name": "cfg", "pan": "6222029999999999", "expiry": "2806", "pin": "654321", "contactless": False}],
        include_test_cards=False,
    )
    assert cat.names() == ["cfg"]
    assert cat["cfg"].chip and not cat["cfg"].contactless
    with pytest.raises(ValueError, match="unknown card settings"):
        CardCatalogue.from_config([{"name": "x", "pan": "6222029999999999", "expiry": "2806", "colour": "red"}])


def test_expiry_check():
    assert named_card("expired").expired("2503")
    assert not APPROVED.expired("2503")


# TLV -------------------------------------------------------------------------------------------


def test_tlv_long_lengths_and_errors():
    data = tlv_encode([("9F10", b"\x01" * 200), ("70", b"\x02" * 300), ("95", b"")])
    assert data[:4] == bytes.fromhex("9F1081C8")
    assert tlv_decode(data) == [("9F10", b"\x01" * 200), ("70", b"\x02" * 300), ("95", b"")]
    with pytest.raises(ValueError, match="runs past the end"):
        tlv_decode(bytes.fromhex("9F2608AABB"))
    with pytest.raises(ValueError, match="well-formed"):
        tlv_encode([("9F", b"")])


tags = st.one_of(
    st.integers(0x01, 0x1E).map(lambda b: bytes([b | 0x40]).hex()),
    st.integers(0x01, 0x7F).map(lambda b: bytes([0x9F, b]).hex()),
)


@given(st.lists(st.tuples(tags, st.binary(max_size=300)), max_size=8))
def test_tlv_round_trip(items):
    assert tlv_decode(tlv_encode(items)) == [(tag.upper(), value) for tag, value in items]
