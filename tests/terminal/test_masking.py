"""Card numbers are masked on the way into the journal's events and slips (first 6, last 4 kept)."""

from __future__ import annotations

from terminal.journal.vault import mask_text, mask_value

PAN = "6222020000000015"  # passes Luhn
MASKED = "622202******0015"


def test_event_details_are_masked_whatever_their_shape():
    detail = {"pan": PAN, "card": "62220200000", "note": f"card {PAN} declined", 7: PAN, "nested": {"x": [PAN]},
              "blob": b"\x01\x02", "amount": 1000, "ok": True, "none": None, "stan": "000123"}
    assert mask_value(detail) == {
        "pan": MASKED, "card": "622202*0000",  # under a PAN key more than 10 digits are masked, Luhn or not
        "note": f"card {MASKED} declined", "7": MASKED, "nested": {"x": [MASKED]},  # keys become text
        "blob": "<2 bytes>", "amount": 1000, "ok": True, "none": None, "stan": "000123",
    }


def test_only_card_like_digit_runs_are_masked_and_kept_numbers_are_not():
    mid = "898100000000001"
    assert mask_text(f"MID {mid} CARD {PAN}", keep=frozenset({mid})) == f"MID {mid} CARD {MASKED}"
    assert mask_text("6222020000000016") == "6222020000000016"  # fails Luhn: not a card number
    assert mask_text("62220200000000150000") == "62220200000000150000"  # 20 digits: longer than any PAN
    assert mask_value({"account": "0123456789"}) == {"account": "0123456789"}  # 10 digits: no PAN
