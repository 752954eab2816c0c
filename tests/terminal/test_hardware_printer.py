"""Printer (paper, jams, failures) and receipts: what the merchant, the customer and QA see on paper."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.hardware import Battery, Printer, PrinterError, ReceiptData, SettlementData
from terminal.hardware.receipts import (
    WIDTH,
    as_reprint,
    declined_receipt,
    format_amount,
    settlement_voucher,
    signoff_voucher,
    text_width,
    transaction_receipt,
)

PAN = "6222029876543215"
SALE = ReceiptData(
    merchant_name="LI'S SUPERMARKET 李超市",
    merchant_id="898100012340001",
    terminal_id="10000001",
    txn_type="SALE",
    amount_fen=1234,
    when=datetime(2025, 3, 1, 12, 34, 56),
    pan=PAN,
    entry_mode="051",
    operator="001",
    batch="000007",
    stan="000123",
    rrn="250301123456",
    auth_code="654321",
)
SETTLEMENT = SettlementData(
    merchant_name="LI'S SUPERMARKET",
    merchant_id="898100012340001",
    terminal_id="10000001",
    batch="000007",
    when=datetime(2025, 3, 1, 22, 0, 0),
    debit_count=3,
    debit_fen=3702,
    credit_count=1,
    credit_fen=1234,
    settlement_type="T0",
    merchant_serial="202503010001",
)


def printer(**kwargs) -> Printer:
    return Printer(rng=random.Random(1), **kwargs)


def fits(receipt) -> bool:
    return all(text_width(line) <= WIDTH for line in receipt.lines)


# Printer ---------------------------------------------------------------------------------------


def test_print_outputs_the_receipt_and_uses_paper():
    p = printer(paper_lines=1000)
    receipt = transaction_receipt(SALE)
    result = p.print(receipt)
    assert p.printed == [receipt]
    assert result.lines == len(receipt) and result.paper_left == 1000 - len(receipt)
    assert p.paper_left == 1000 - len(receipt)


def test_paper_runs_out_mid_receipt_and_the_receipt_is_not_printed():
    p = printer(paper_lines=1000)
    p.load_paper(10)  # the end of the roll
    receipt = transaction_receipt(SALE)
    with pytest.raises(PrinterError) as err:
        p.print(receipt)
    assert err.value.kind == "out_of_paper"
    assert err.value.lines_printed == 10
    assert "out of paper" in err.value.message
    assert p.printed == []
    assert p.out_of_paper and not p.ready
    assert p.last_partial == (receipt, 10)
    with pytest.raises(PrinterError) as again:  # still out: nothing comes out at all
        p.print(receipt)
    assert again.value.lines_printed == 0
    p.load_paper()
    reprint = as_reprint(receipt)
    p.print(reprint)
    assert p.printed == [reprint]
    assert "REPRINT" in p.printed[0] and "重打印" in p.printed[0]


def test_out_of_paper_fault_strikes_at_the_given_line():
    p = printer()
    p.faults["out_of_paper"].arm(count=1, param=5)
    with pytest.raises(PrinterError) as err:
        p.print(transaction_receipt(SALE))
    assert (err.value.kind, err.value.lines_printed) == ("out_of_paper", 5)
    assert p.out_of_paper and p.printed == []


def test_jam_persists_until_cleared():
    p = printer()
    p.faults["jam"].arm(count=1, param=3)
    receipt = transaction_receipt(SALE)
    with pytest.raises(PrinterError) as err:
        p.print(receipt)
    assert (err.value.kind, err.value.lines_printed) == ("jam", 3)
    assert "jam" in err.value.message
    with pytest.raises(PrinterError, match="jam"):
        p.print(receipt)
    p.clear_jam()
    p.print(receipt)
    assert p.printed == [receipt]


def test_fail_after_lines_is_transient_and_waits_for_a_long_enough_receipt():
    p = printer()
    receipt = transaction_receipt(SALE)
    p.faults["fail_after_lines"].arm(count=1, param=len(receipt) + 5)
    p.print(receipt)  # shorter than the failure point: prints, fault stays armed
    assert p.faults["fail_after_lines"].armed
    p.faults["fail_after_lines"].arm(count=1, param=12)
    with pytest.raises(PrinterError) as err:
        p.print(receipt)
    assert (err.value.kind, err.value.lines_printed) == ("failure", 12)
    assert p.ready
    p.print(receipt)
    assert p.printed == [receipt, receipt]
    assert p.failures == 1


def test_fault_without_a_line_strikes_at_a_seeded_random_line():
    def strike(seed: int) -> int:
        p = Printer(rng=random.Random(seed))
        p.faults["fail_after_lines"].arm(always=True)
        with pytest.raises(PrinterError) as err:
            p.print(transaction_receipt(SALE))
        return err.value.lines_printed

    assert strike(4) == strike(4)
    assert 0 <= strike(4) < len(transaction_receipt(SALE))


def test_printed_keeps_the_most_recent_receipts_only():
    p = printer(keep_printed=3)
    receipts = [transaction_receipt(dataclasses.replace(SALE, stan=f"{i:06d}")) for i in range(5)]
    for receipt in receipts:
        p.print(receipt)
    assert [r.stan for r in p.printed] == ["000002", "000003", "000004"]
    assert p.receipts_total == 5


def test_printing_drains_the_battery_per_line():
    battery = Battery(clock=lambda: 0.0, idle_drain_per_hour=0)
    p = printer(battery=battery)
    receipt = transaction_receipt(SALE)
    p.print(receipt)
    assert battery.level == pytest.approx(100 - len(receipt) * battery.op_cost("print_line"))


def test_paper_low_warning():
    p = printer(paper_lines=100, paper_low_lines=50)
    assert not p.print(transaction_receipt(SALE)).paper_low
    assert p.print(transaction_receipt(SALE)).paper_low
    assert p.status()["paper_low"]


# Receipts ---------------------------------------------------------------------------------------


def test_sale_receipt_has_what_a_merchant_expects_and_masks_the_pan():
    receipt = transaction_receipt(SALE)
    text = receipt.text
    assert PAN not in text
    assert PAN[6:12] not in text
    assert "622202******3215" in text
    for expected in (
        "POS签购单",
        "MERCHANT COPY",
        "LI'S SUPERMARKET",
        "898100012340001",
        "10000001",
        "001",
        "CHIP",
        "SALE",
        "RMB 12.34",
        "2025/03/01 12:34:56",
        "000007",
        "000123",
        "250301123456",
        "654321",
        "CARDHOLDER SIGNATURE",
    ):
        assert expected in text, expected
    assert "3012" not in text  # expiry never printed
    assert not receipt.reprint and "REPRINT" not in text
    assert fits(receipt)


def test_customer_copy_has_no_signature_area():
    receipt = transaction_receipt(SALE, copy="customer")
    assert "CUSTOMER COPY" in receipt and "SIGNATURE" not in receipt.text
    with pytest.raises(ValueError):
        transaction_receipt(SALE, copy="bank")


def test_reprint_marking():
    receipt = transaction_receipt(SALE, reprint=True)
    assert receipt.reprint and "REPRINT" in receipt and "重打印" in receipt
    assert as_reprint(transaction_receipt(SALE)).text == receipt.text
    assert as_reprint(receipt) is receipt


@pytest.mark.parametrize(
    ("signature", "present", "absent"),
    [
        ("unsigned", ["UNSIGNED", "signature not captured"], ["CARDHOLDER SIGNATURE", "E-SIGNATURE"]),
        ("captured", ["E-SIGNATURE CAPTURED"], ["UNSIGNED", "CARDHOLDER SIGNATURE"]),
        ("paper", ["CARDHOLDER SIGNATURE", "_" * WIDTH], ["UNSIGNED", "E-SIGNATURE"]),
        ("none", ["NO SIGNATURE REQUIRED"], ["UNSIGNED", "CARDHOLDER SIGNATURE"]),
    ],
)
def test_signature_markings(signature, present, absent):
    receipt = transaction_receipt(dataclasses.replace(SALE, signature=signature))
    for text in present:
        assert text in receipt
    for text in absent:
        assert text not in receipt
    assert fits(receipt)


def test_void_refund_and_balance_slips():
    void = transaction_receipt(dataclasses.replace(SALE, txn_type="VOID", stan="000124", original_stan="000123"))
    assert "VOID" in void and "消费撤销" in void and "ORIG TRACE NO." in void
    refund = transaction_receipt(dataclasses.replace(SALE, txn_type="REFUND", amount_fen=500))
    assert "REFUND" in refund and "RMB 5.00" in refund
    balance = transaction_receipt(dataclasses.replace(SALE, txn_type="BALANCE", balance_fen=123_456_78))
    assert "BALANCE" in balance and "RMB 123456.78" in balance and "SIGNATURE" not in balance.text
    with pytest.raises(ValueError, match="txn_type"):
        dataclasses.replace(SALE, txn_type="PAYMENT")


def test_declined_slip_says_not_charged_with_code_and_meaning():
    receipt = declined_receipt(dataclasses.replace(SALE, response_code="51", auth_code="", rrn=""))
    assert receipt.kind == "declined"
    text = receipt.text
    assert "51" in text and "INSUFFICIENT FUNDS" in text and "NOT CHARGED" in text
    assert PAN not in text and "622202******3215" in text
    assert "RMB 12.34" in text
    assert fits(receipt)


def test_settlement_voucher():
    receipt = settlement_voucher(SETTLEMENT)
    text = receipt.text
    for expected in (
        "结算单",
        "SETTLEMENT",
        "000007",
        "T0",
        "202503010001",
        "RMB 37.02",
        "RMB 12.34",
        "RMB 24.68",
        "BALANCED",
        "2025/03/01 22:00:00",
        "898100012340001",
        "10000001",
    ):
        assert expected in text, expected
    assert "UNBALANCED" not in text
    assert fits(receipt)
    unbalanced = settlement_voucher(
        dataclasses.replace(
            SETTLEMENT,
            result="unbalanced",
            uploaded_records=4,
            unsigned_stans=("000123",),
            host_debit_count=2,
            host_debit_fen=2468,
        )
    )
    for expected in ("UNBALANCED", "BATCH UPLOADED", "4 RECORDS", "UNSIGNED", "000123", "HOST TOTALS"):
        assert expected in unbalanced, expected
    assert fits(unbalanced)


def test_signoff_voucher():
    receipt = signoff_voucher(SETTLEMENT)
    for expected in (
        "签退凭证",
        "SIGN-OFF VOUCHER",
        "T0",
        "202503010001",
        "AMOUNTS MATCHED",
        "SIGNED OFF",
        "RMB 37.02",
    ):
        assert expected in receipt, expected
    assert "AMOUNTS NOT MATCHED" in signoff_voucher(dataclasses.replace(SETTLEMENT, result="unbalanced"))
    assert "REPRINT" in signoff_voucher(SETTLEMENT, reprint=True)


def test_settlement_data_is_validated():
    with pytest.raises(ValueError, match="12 digits"):
        dataclasses.replace(SETTLEMENT, merchant_serial="12345")
    with pytest.raises(ValueError, match="T0 or T1"):
        dataclasses.replace(SETTLEMENT, settlement_type="T2")
    with pytest.raises(ValueError, match="result"):
        dataclasses.replace(SETTLEMENT, result="fine")


def test_format_amount():
    assert format_amount(1234) == "RMB 12.34"
    assert format_amount(5) == "RMB 0.05"
    assert format_amount(-1000) == "RMB -10.00"


@given(
    name=st.text(alphabet=st.sampled_from("ABCXYZ 李超市便利店-'"), min_size=1, max_size=80),
    amount=st.integers(0, 999_999_999_999),
    pan=st.from_regex(r"62[0-9]{14,17}", fullmatch=True),
)
def test_every_line_fits_and_the_pan_is_always_masked(name, amount, pan):
    data = dataclasses.replace(SALE, merchant_name=name, amount_fen=amount, pan=pan)
    for receipt in (transaction_receipt(data), declined_receipt(data), transaction_receipt(data, reprint=True)):
        assert fits(receipt)
        assert pan not in receipt.text.replace("\n", "")


def test_the_slip_prints_the_date_and_time_to_the_second():
    from dataclasses import replace

    lines = transaction_receipt(replace(SALE, when=datetime(2025, 3, 1, 2, 4, 6, 789000))).lines
    assert "DATE/TIME" + " " * 4 + "2025/03/01 02:04:06" in lines  # no microseconds, zero-padded
    assert fits(transaction_receipt(SALE))
