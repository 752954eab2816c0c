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


def test_full_width_card_numbers_are_masked_too():
    full_width = PAN.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    masked = mask_text(f"卡号 {full_width}")
    assert masked == f"卡号 {full_width[:6]}{'*' * 6}{full_width[-4:]}"
    assert mask_text(f"{PAN}{full_width}") == f"{PAN}{full_width}"  # one 32-digit run: no card number


def test_a_slip_keeps_its_merchant_number_and_loses_its_card_number():
    slip = f"商户编号 898100000000001\nCARD NO. 卡号:\n  {PAN}\n日期 2026/12/02 01:09:26\n参考号 000000000123\n"
    assert mask_text(slip, keep=frozenset({"898100000000001"})) == slip.replace(PAN, MASKED)
