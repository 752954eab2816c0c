"""The journal: write-ahead reversals, STANs never reused, sealed card data, totals rules, receipts,
intents and settlements, events, bad files, a full disk, migration from schema 1, random operation
sequences with crashes (hypothesis), and processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from terminal.journal import SCHEMA_VERSION, Journal, JournalError, JournalFull, MemoryJournal

ROOT = Path(__file__).resolve().parents[2]
TID, MID = "10000001", "898100012340001"
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "6222020000000015"
PAN2 = "6217000000000097"
T0 = 1_700_000_000.0


class Clock:
    """The injected clock: advances one second per reading, so every timestamp is distinct and known."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def open_journal(path: Path | str, clock: Clock | None = None, key: bytes = KEY) -> Journal | MemoryJournal:
    return Journal.open(path, tid=TID, mid=MID, pan_key=key, clock=clock or Clock())


@pytest.fixture(params=["file", "memory"])
def new_journal(request, tmp_path):
    """Opens journals of the test's backend: an SQLite file under tmp_path, or a MemoryJournal (":memory:").
    Tests that need a file (reopening, its bytes, damage, migration, kills) use `open_journal` on a path."""
    made: list[Journal | MemoryJournal] = []

    def new(clock: Clock | None = None, key: bytes = KEY) -> Journal | MemoryJournal:
        made.append(open_journal(tmp_path / f"j{len(made)}.sqlite" if request.param == "file" else ":memory:",
                                 clock, key))
        return made[-1]

    yield new
    for j in made:
        j.close()


def reversal_fields(stan: str, amount: int, batch: str = "000001", pan: str = PAN) -> dict[str, str]:
    """What the terminal stores for a 0400: the original's 2, 3, 4, 11, 14, 22, 25, 41, 42, 49, 60 (cup-pos)."""
    return {"2": pan, "3": "000000", "4": f"{amount:012d}", "11": stan, "14": "3012", "22": "021", "25": "00",
            "41": TID, "42": MID, "49": "156", "60": f"22{batch}000", "39": "98"}


def pending(j: Journal, stan: str, amount: int, *, kind: str = "sale", original: str | None = None,
            pan: str = PAN, protected: bool = True) -> int:
    return j.record_pending(kind=kind, stan=stan, batch=j.batch, amount_fen=amount, pan=pan, expiry="3012",
                            entry_mode="021", original_stan=original,
                            reversal=reversal_fields(stan, amount, j.batch, pan) if protected else None)


def approve(j: Journal, stan: str) -> None:
    j.record_reply(stan=stan, batch=j.batch, rc="00", approved=True, rrn=f"{int(stan):012d}", auth_code="A1B2C3",
                   host_date="0315", host_time="101112")


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


# ----------------------------------------------------------------------------------------------
# write-ahead and reversals
# ----------------------------------------------------------------------------------------------


def test_reversal_is_durable_before_the_request_and_cleared_by_the_reply(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    stan = j.next_stan()
    pending(j, stan, 1234)
    j.close()
    j = open_journal(path)  # as after a crash right after record_pending
    (owed,) = j.pending_reversals()
    assert (owed.stan, owed.batch, owed.reason, owed.attempts) == ("000001", "000001", "98", 0)
    assert owed.fields[2] == PAN and owed.fields[4] == "000000001234" and owed.fields[39] == "98"
    assert (owed.kind, owed.amount_fen) == ("sale", 1234)
    assert j.transaction(stan, j.batch).status == "pending"
    j.record_reply(stan=stan, batch=j.batch, rc="00", approved=True, rrn="1" * 12, auth_code="A1")
    assert j.pending_reversals() == []
    txn = j.transaction(stan, j.batch)
    assert (txn.status, txn.rc, txn.rrn, txn.auth_code) == ("approved", "00", "1" * 12, "A1")


def test_a_declined_reply_also_clears_the_reversal_and_counts_nowhere(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 500)
    j.record_reply(stan="000001", batch=j.batch, rc="51", approved=False)
    assert j.pending_reversals() == [] and j.transaction("000001", j.batch).status == "declined"
    assert j.batch_totals(j.batch) == (0, 0, 0, 0)


def test_an_unanswered_request_owes_its_reversal_with_the_reason_and_counts_attempts(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 700)
    j.set_reversal_reason("000001", j.batch, "A0")  # the reply's MAC did not verify
    assert j.transaction("000001", j.batch).status == "reversal_pending"
    j.mark_reversal_sent("000001", j.batch)
    j.mark_reversal_sent("000001", j.batch)
    (owed,) = j.pending_reversals()
    assert (owed.reason, owed.fields[39], owed.attempts) == ("A0", "A0", 2)
    assert owed.last_attempt is not None
    assert j.clear_reversal("000001", j.batch, "00") is True
    assert j.pending_reversals() == []
    assert j.transaction("000001", j.batch).status == "reversed"
    assert j.batch_totals(j.batch) == (0, 0, 0, 0)


def test_an_unverified_refusal_keeps_the_reversal(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 700)
    j.record_refusal(stan="000001", batch=j.batch, rc="A0")
    assert j.transaction("000001", j.batch).status == "reversal_pending"
    assert [r.stan for r in j.pending_reversals()] == ["000001"]


def test_a_reversal_answered_96_stays_owed_one_refused_needs_a_person(new_journal):
    j = new_journal()
    for amount in (100, 200):
        pending(j, j.next_stan(), amount)
    assert j.clear_reversal("000001", j.batch, "96") is False  # maintenance: not processed
    (first, _) = j.pending_reversals()
    assert (first.stan, first.last_rc) == ("000001", "96")
    assert j.transaction("000001", j.batch).status == "pending"
    assert j.clear_reversal("000002", j.batch, "64") is True  # amount differs: the host will not reverse it
    txn = j.transaction("000002", j.batch)
    assert (txn.status, txn.reversal_rc) == ("reversal_refused", "64")
    assert [e["rc"] for e in j.events(prefix="reversal.")] == ["96", "64"]
    assert j.clear_reversal("000001", j.batch, "00") is True
    assert j.clear_reversal("000001", j.batch, "00") is True  # a second answer changes nothing
    assert j.transaction("000001", j.batch).status == "reversed"


def test_reversals_come_out_oldest_first_one_per_original(new_journal):
    j = new_journal()
    for amount in (300, 100, 200):
        pending(j, j.next_stan(), amount)
    j.set_reversal_reason("000002", j.batch, "06")
    assert [r.stan for r in j.pending_reversals()] == ["000001", "000002", "000003"]
    with pytest.raises(JournalError, match="STAN 000002 is already used in batch 000001"):
        pending(j, "000002", 999)
    assert len(j.pending_reversals()) == 3 and j.transaction("000002", j.batch).amount_fen == 100


def test_a_reversal_with_track_or_pin_data_is_refused_and_nothing_is_recorded(new_journal):
    j = new_journal()
    fields = {**reversal_fields("000001", 100), "35": PAN + "D3012201"}
    with pytest.raises(ValueError, match="field 35"):
        j.record_pending(kind="sale", stan="000001", batch=j.batch, amount_fen=100, pan=PAN, reversal=fields)
    assert j.transactions() == [] and j.pending_reversals() == []


def test_binary_reversal_fields_round_trip_as_bytes(new_journal):
    j = new_journal()
    fields = {**reversal_fields("000001", 100), 55: b"\x9f\x26\x08\x01"}
    j.record_pending(kind="sale", stan="000001", batch=j.batch, amount_fen=100, pan=PAN, reversal=fields)
    assert j.pending_reversals()[0].fields[55] == b"\x9f\x26\x08\x01"


def test_bad_arguments_are_refused_before_anything_is_written(new_journal):
    j = new_journal()
    with pytest.raises(ValueError, match="kind"):
        j.record_pending(kind="preauth", stan="000001", batch=j.batch, amount_fen=1, pan=PAN)
    with pytest.raises(ValueError, match="stan"):
        j.record_pending(kind="sale", stan="1", batch=j.batch, amount_fen=1, pan=PAN)
    with pytest.raises(ValueError, match="amount_fen"):
        j.record_pending(kind="sale", stan="000001", batch=j.batch, amount_fen=-5, pan=PAN)
    with pytest.raises(ValueError, match="original_stan"):
        j.record_pending(kind="void", stan="000001", batch=j.batch, amount_fen=5, pan=PAN)
    with pytest.raises(ValueError, match="reason"):
        j.set_reversal_reason("000001", j.batch, "99")
    with pytest.raises(ValueError, match="signature status"):
        j.set_signature("000001", j.batch, "maybe")
    assert j.transactions() == []


def test_a_reply_cannot_overturn_a_settled_outcome(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 100)
    approve(j, "000001")
    approve(j, "000001")  # the same reply recorded twice: harmless
    with pytest.raises(JournalError, match="already approved"):
        j.record_reply(stan="000001", batch=j.batch, rc="05", approved=False)
    pending(j, j.next_stan(), 100)
    j.clear_reversal("000002", j.batch, "00")
    with pytest.raises(JournalError, match="already reversed"):
        approve(j, "000002")
    with pytest.raises(JournalError, match="no transaction"):
        approve(j, "000077")


# ----------------------------------------------------------------------------------------------
# counters
# ----------------------------------------------------------------------------------------------


def test_stans_are_never_reused_across_reopen_and_wrap_to_000001(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    first = [j.next_stan() for _ in range(3)]
    j.close()
    j = open_journal(path)
    assert first == ["000001", "000002", "000003"] and j.stan == "000003" and j.next_stan() == "000004"
    j._db.execute("UPDATE identity SET stan = 999998")  # set-up: skip a million STANs
    assert [j.next_stan(), j.next_stan(), j.next_stan()] == ["999999", "000001", "000002"]


def test_two_openers_of_one_file_never_share_a_stan(tmp_path):
    """A status command may open the journal while the daemon's terminal uses it: each STAN is still unique."""
    path = tmp_path / "j.sqlite"
    a, b = open_journal(path), open_journal(path)
    stans = [j.next_stan() for _ in range(50) for j in (a, b)]
    assert len(set(stans)) == 100 and max(stans) == "000100"
    pending(a, stans[-1], 100)
    assert [r.stan for r in b.pending_reversals()] == ["000100"]  # committed means visible to the other
    a.close()
    b.close()


def test_batch_is_set_by_sign_in_and_advances_only_past_a_settled_batch(new_journal):
    j = new_journal()
    assert j.batch == "000001"
    j.set_signed_in(wrapped_keys=b"\x01" * 60, key_mode="004", batch="000041")
    assert j.batch == "000041"
    with pytest.raises(JournalError, match="batch 000041 has no settlement record"):
        j.advance_batch()
    j.record_settlement("000041", result="balanced", terminal_totals="0" * 62, host_totals="0" * 62, uploaded=0)
    assert j.advance_batch() == "000042"
    assert j.advance_batch() == "000042"  # repeated after a crash: nothing moves twice
    assert j.advance_batch("000041") == "000042"
    with pytest.raises(JournalError, match="cannot advance from batch 000007: the current batch is 000042"):
        j.advance_batch("000007")
    with pytest.raises(ValueError, match="batch"):
        j.set_batch("42")


def test_batch_number_wraps(new_journal):
    j = new_journal()
    j.set_batch("999999")
    j.record_settlement("999999", result="balanced", terminal_totals="0" * 62, host_totals=None, uploaded=0)
    assert j.advance_batch() == "000001"


# ----------------------------------------------------------------------------------------------
# identity and keys
# ----------------------------------------------------------------------------------------------


def test_identity_keeps_keys_wrapped_exactly_as_field_62_brought_them(tmp_path):
    path = tmp_path / "j.sqlite"
    clock = Clock()
    j = open_journal(path, clock)
    field62 = bytes(range(60))
    j.set_signed_in(wrapped_keys=field62, key_mode="004", batch="000007")
    j.set_identity(merchant_name="ACME TEA", firmware="3.0.8", operator="001", settlement_type="T0")
    j.close()
    j = open_journal(path, clock)
    ident = j.identity()
    assert ident["wrapped_keys"] == field62 and ident["key_mode"] == "004" and ident["signed_in"] == 1
    assert (ident["merchant_name"], ident["firmware"], ident["operator"], ident["settlement_type"]) == \
        ("ACME TEA", "3.0.8", "001", "T0")
    assert T0 < ident["signed_in_at"] <= clock.now and ident["last_activity_at"] >= ident["signed_in_at"]
    with pytest.raises(ValueError, match="unknown identity fields: tid"):
        j.set_identity(tid="99999999")
    j.set_signed_out()
    ident = j.identity()
    assert ident["signed_in"] == 0 and ident["wrapped_keys"] is None and ident["signed_out_at"] > ident["signed_in_at"]
    assert [e["kind"] for e in j.events(prefix="signed_")] == ["signed_in", "signed_out"]


def test_timestamps_come_from_the_injected_clock(new_journal):
    clock = Clock(start=5_000.0)
    j = new_journal(clock)
    pending(j, j.next_stan(), 100)
    txn = j.transaction("000001", j.batch)
    assert 5_000.0 < txn.created_at <= clock.now
    assert all(5_000.0 < e["at"] <= clock.now for e in j.events())
    j.touch()
    assert j.identity()["last_activity_at"] == clock.now


# ----------------------------------------------------------------------------------------------
# card data
# ----------------------------------------------------------------------------------------------


def test_the_full_pan_never_reaches_the_database_files_in_clear(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    pending(j, j.next_stan(), 100)  # the reversal carries field 2, the PAN
    approve(j, "000001")
    pending(j, j.next_stan(), 200, pan=PAN2)  # still owed: its reversal is stored
    # careless callers: the journal masks card numbers in events, intents and receipts on the way in
    j.event("debug", {"pan": PAN, "note": f"card {PAN2} swiped", "nested": [{"track": f"{PAN}D3012"}]})
    j.begin_intent("batch_upload", j.batch, {"first": PAN})
    j.store_receipt("transaction", f"CARD {PAN}\nMERCHANT {MID}", stan="000001", batch=j.batch, copy="merchant")
    txn = j.transaction("000001", j.batch)
    assert txn.pan_masked == "622202******0015" and j.pan_for(txn) == PAN and j.pan_for(txn.id) == PAN
    assert j.pending_reversals()[0].fields[2] == PAN2
    assert [r.pan for r in j.batch_records(j.batch)] == [PAN]
    assert PAN not in repr(j.batch_records(j.batch))
    receipt = j.receipt_for("000001")
    assert "622202******0015" in receipt.text and MID in receipt.text  # the merchant id is not a card number
    assert j.events("debug")[0]["note"] == "card 621700******0097 swiped"
    for clear in (PAN, PAN2):
        assert clear.encode() not in all_bytes(tmp_path)  # database, WAL and shared memory, while open
    j.close()
    for clear in (PAN, PAN2):
        assert clear.encode() not in all_bytes(tmp_path)


def test_card_data_does_not_open_under_another_key_or_on_another_row(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    pending(j, j.next_stan(), 100)
    pending(j, j.next_stan(), 200)
    j.close()
    with pytest.raises(JournalError, match=r"j\.sqlite was written under another terminal key"):
        open_journal(path, key=bytes(16))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE txn SET pan_enc = (SELECT pan_enc FROM txn WHERE stan = '000002') WHERE stan = '000001'")
    raw.commit()
    raw.close()
    j = open_journal(path)
    with pytest.raises(JournalError, match=r"card data of STAN 000001 .* does not decrypt"):
        j.transaction("000001", j.batch)


def test_the_journal_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "j.sqlite"
    open_journal(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ----------------------------------------------------------------------------------------------
# transactions, totals, batch upload
# ----------------------------------------------------------------------------------------------


def test_batch_totals_and_records_follow_the_dialect_rules(new_journal):
    j = new_journal()
    for amount in (1000, 2000, 4000, 8000):
        pending(j, j.next_stan(), amount)
    for stan in ("000001", "000002", "000003"):
        approve(j, stan)
    j.record_reply(stan="000004", batch=j.batch, rc="51", approved=False)
    pending(j, j.next_stan(), 1000, kind="void", original="000001")  # 000005
    approve(j, "000005")
    pending(j, j.next_stan(), 500, kind="refund", original="000002")  # 000006
    approve(j, "000006")
    pending(j, j.next_stan(), 700)  # 000007: reversed
    j.clear_reversal("000007", j.batch, "00")
    pending(j, j.next_stan(), 900)  # 000008: still unanswered
    pending(j, j.next_stan(), 300)  # 000009: the host refused to reverse it
    j.clear_reversal("000009", j.batch, "12")
    assert j.transaction("000001", j.batch).status == "voided"
    sale2 = j.transaction("000002", j.batch)
    assert (sale2.status, sale2.refunded_fen, sale2.refundable_fen) == ("approved", 500, 1500)
    # debits: sales 1000 (voided, still a debit) + 2000 + 4000; credits: the void 1000 + the refund 500
    assert j.batch_totals(j.batch) == (7000, 3, 1500, 2)
    records = j.batch_records(j.batch)
    assert [(r.stan, r.kind, r.amount_fen) for r in records] == [
        ("000001", "sale", 1000), ("000002", "sale", 2000), ("000003", "sale", 4000),
        ("000005", "void", 1000), ("000006", "refund", 500)]
    assert {r.pan for r in records} == {PAN}
    assert [t.stan for t in j.transactions(j.batch, status="pending")] == ["000008"]


def test_batch_count_is_the_batch_log_a_settlement_counts(new_journal):
    """batch_count: what batch_records uploads and batch_totals counts - approved sales (voided and refunded
    ones still in), voids and refunds - and nothing else; per batch; a new batch starts at 0."""
    j = new_journal()
    assert j.batch_count(j.batch) == 0
    counts = []
    for amount in (1000, 2000, 4000):
        stan = j.next_stan()
        pending(j, stan, amount)
        counts.append(j.batch_count(j.batch))  # in flight: not in the log yet
        approve(j, stan)
        counts.append(j.batch_count(j.batch))
    assert counts == [0, 1, 1, 2, 2, 3]
    pending(j, j.next_stan(), 500)  # 000004 declined
    j.record_reply(stan="000004", batch=j.batch, rc="51", approved=False)
    pending(j, j.next_stan(), 700)  # 000005 reversed
    j.clear_reversal("000005", j.batch, "00")
    pending(j, j.next_stan(), 300)  # 000006 the host refused to reverse it
    j.clear_reversal("000006", j.batch, "12")
    pending(j, j.next_stan(), 900)  # 000007 unanswered
    j.set_reversal_reason("000007", j.batch, "98")
    assert j.batch_count(j.batch) == 3
    pending(j, j.next_stan(), 1000, kind="void", original="000001")  # 000008: the sale voided, the void logged
    approve(j, "000008")
    pending(j, j.next_stan(), 2000, kind="refund", original="000002")  # 000009: refunded in full, still logged
    approve(j, "000009")
    _, debit_n, _, credit_n = j.batch_totals(j.batch)
    assert j.batch_count(j.batch) == 5 == len(j.batch_records(j.batch)) == debit_n + credit_n
    assert [t.status for t in j.transactions(j.batch)][:2] == ["voided", "refunded"]
    j.record_settlement(j.batch, result="balanced", terminal_totals="0" * 62, host_totals=None, uploaded=0)
    settled = j.batch
    j.advance_batch()
    assert j.batch_count(j.batch) == 0 and j.batch_count(settled) == 5 and j.batch_count("000777") == 0


def test_a_sale_refunded_in_full_is_refunded_and_still_a_debit(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 1000)
    approve(j, "000001")
    for amount in (400, 600):
        stan = j.next_stan()
        pending(j, stan, amount, kind="refund", original="000001")
        approve(j, stan)
    sale = j.transaction("000001", j.batch)
    assert (sale.status, sale.refunded_fen, sale.refundable_fen) == ("refunded", 1000, 0)
    assert j.batch_totals(j.batch) == (1000, 1, 1000, 2)


def test_a_refund_of_an_earlier_batch_finds_its_sale_by_batch_and_stan(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 1000)
    approve(j, "000001")
    j.record_settlement("000001", result="balanced", terminal_totals="0" * 62, host_totals=None, uploaded=0)
    j.advance_batch()
    j.record_pending(kind="refund", stan=j.next_stan(), batch=j.batch, amount_fen=250, pan=PAN,
                     original_stan="000001", original_batch="000001")
    approve(j, "000002")
    assert j.transaction("000001", "000001").refunded_fen == 250
    assert j.batch_totals("000001") == (1000, 1, 0, 0) and j.batch_totals("000002") == (0, 0, 250, 1)
    assert j.find_transaction("000002").original_batch == "000001"


def test_an_unprotected_request_stays_pending_without_a_reversal(new_journal):
    """The FM-13 fault switch turns reversals off: the journal says what is unknown, and owes nothing."""
    j = new_journal()
    pending(j, j.next_stan(), 100, protected=False)
    j.set_reversal_reason("000001", j.batch, "98")
    assert j.transaction("000001", j.batch).status == "pending" and j.pending_reversals() == []


def test_signature_statuses_and_the_unsigned_list(new_journal):
    j = new_journal()
    for amount in (100, 200, 300):
        pending(j, j.next_stan(), amount)
        approve(j, j.stan)
    j.set_signature("000001", j.batch, "unsigned")
    j.set_signature("000002", j.batch, "signed", image=b"PNG...")
    j.set_signature("000002", j.batch, "uploaded")
    j.set_signature("000003", j.batch, "pending")  # capture cut short
    assert j.unsigned_stans(j.batch) == ["000001", "000003"]
    (first, _) = j.unsigned(j.batch)
    assert (first.pan_masked, first.amount_fen, first.signature) == ("622202******0015", 100, "unsigned")
    pending(j, j.next_stan(), 100, kind="void", original="000001")
    approve(j, "000004")
    assert j.unsigned_stans(j.batch) == ["000003"]  # a voided sale needs no signature any more
    with pytest.raises(JournalError, match="no transaction"):
        j.set_signature("000099", j.batch, "signed")


# ----------------------------------------------------------------------------------------------
# receipts
# ----------------------------------------------------------------------------------------------


def test_receipts_pending_printed_and_reprinted(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 100)
    approve(j, "000001")
    merchant = j.store_receipt("transaction", "MERCHANT COPY", stan="000001", batch=j.batch, copy="merchant")
    j.store_receipt("transaction", "CUSTOMER COPY", stan="000001", batch=j.batch, copy="customer")
    assert j.transaction("000001", j.batch).receipt == "pending"
    j.mark_printed(merchant)
    # the printer ran out of paper before the customer copy
    assert [r.copy for r in j.pending_receipts()] == ["customer"]
    assert j.last_receipt().copy == "customer" and j.receipt_for("000001").copy == "customer"
    j.mark_printed("transaction", stan="000001", batch=j.batch, copy="customer")
    assert j.pending_receipts() == [] and j.transaction("000001", j.batch).receipt == "printed"
    again = j.receipt_for("000001")
    assert again.copy == "merchant"
    j.mark_reprinted(again)
    assert j.receipt_for("000001").reprints == 1 and j.transaction("000001", j.batch).receipt == "reprinted"
    j.store_receipt("settlement", "SETTLEMENT VOUCHER", batch=j.batch, printed=True)
    assert j.last_receipt().kind == "settlement"
    assert [r.kind for r in j.receipts(batch=j.batch)] == ["transaction", "transaction", "settlement"]


# ----------------------------------------------------------------------------------------------
# intents, settlement, sign-off
# ----------------------------------------------------------------------------------------------


def test_intents_survive_a_restart_and_are_not_duplicated(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    intent = j.begin_intent("sign_off", j.batch, {"stan": "000009"})
    j.close()
    j = open_journal(path)
    assert [(i.kind, i.data) for i in j.open_intents()] == [("sign_off", {"stan": "000009"})]
    assert j.begin_intent("sign_off", j.batch, {"stan": "000010"}).id == intent.id
    assert j.open_intent("sign_off").data == {"stan": "000009"}
    j.complete_intent(intent)
    j.complete_intent(intent)  # harmless
    assert j.open_intents() == []
    with pytest.raises(ValueError, match="intent kind"):
        j.begin_intent("lunch", j.batch)


def test_intent_steps_merge_with_what_is_stored(new_journal):
    j = new_journal()
    intent = j.begin_intent("batch_upload", j.batch, {"records": 12})
    j.intent_step(intent, "sent", {"messages": 1})
    j.intent_step(intent, "sent", {"messages_acked": 1})  # the stale object does not lose the first step
    (stored,) = j.open_intents()
    assert stored.step == "sent" and stored.data == {"records": 12, "messages": 1, "messages_acked": 1}
    j.complete_intent(intent, outcome="abandoned")
    with pytest.raises(JournalError, match="is not open"):
        j.intent_step(intent, "late")


def test_a_batch_is_settled_once_even_when_the_settlement_is_resumed(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    pending(j, j.next_stan(), 1000)
    approve(j, "000001")
    totals = f"{1000:012d}001" + "0" * 47
    intent = j.begin_intent("settlement", "000001", {"totals": totals})
    j.record_settlement("000001", result="balanced", terminal_totals=totals, host_totals=totals, uploaded=0,
                        stan="000002")
    j.advance_batch()
    j.close()  # killed before the intent was completed
    j = open_journal(path)
    (resumed,) = j.open_intents()
    assert resumed.id == intent.id and resumed.batch == "000001"
    # the resumed settlement resends the 0500 (the host answers it again) and records the answer again
    j.record_settlement("000001", result="balanced", terminal_totals=totals, host_totals=totals, uploaded=0)
    assert j.advance_batch() == "000002"  # not 000003
    j.complete_intent(resumed)
    (record,) = j.settlements()
    assert (record.batch, record.answers, record.stan, record.result) == ("000001", 2, "000002", "balanced")
    with pytest.raises(JournalError, match="batch 000001 is already settled"):
        j.begin_intent("settlement", "000001")


def test_complete_settlement_is_one_step_and_repeatable(new_journal):
    j = new_journal()
    pending(j, j.next_stan(), 1000)
    approve(j, "000001")
    intent = j.begin_intent("settlement", j.batch)
    j.intent_step(intent, "answered", {"result": "unbalanced"})
    assert j.complete_settlement(intent, result="unbalanced", terminal_totals="t", host_totals="h",
                                 uploaded=1) == "000002"
    assert j.complete_settlement(intent, result="unbalanced", terminal_totals="t", host_totals="h",
                                 uploaded=1) == "000002"
    assert j.open_intents() == [] and j.batch == "000002" and len(j.settlements()) == 1
    assert j.last_settlement().uploaded == 1


def test_complete_sign_off_signs_out_and_closes_the_intent_together(new_journal):
    j = new_journal()
    j.set_signed_in(wrapped_keys=b"k" * 60, key_mode="004", batch="000001")
    intent = j.begin_intent("sign_off", j.batch, {"stan": j.next_stan()})
    j.complete_sign_off(intent)
    assert j.open_intents() == [] and j.summary()["signed_in"] is False


def test_settlement_report_shows_unsigned_transactions_and_the_voucher(new_journal):
    j = new_journal()
    for amount in (1000, 2500):
        pending(j, j.next_stan(), amount)
        approve(j, j.stan)
    pending(j, j.next_stan(), 99)  # unanswered
    j.set_signature("000002", j.batch, "unsigned")
    report = j.settlement_report()
    assert report.batch == "000001" and report.settlement is None
    assert report.totals == (3500, 2, 0, 0) and report.pending_reversals == 1
    assert report.by_status == {"approved": 2, "pending": 1}
    assert [(u.stan, u.pan_masked, u.amount_fen) for u in report.unsigned] == [("000002", "622202******0015", 2500)]
    j.record_settlement("000001", result="balanced", terminal_totals="t", host_totals="t", uploaded=0)
    assert j.settlement_report("000001").settlement.voucher_printed is False
    j.store_receipt("settlement", "VOUCHER", batch="000001", printed=True)
    assert j.settlement_report("000001").settlement.voucher_printed is True


# ----------------------------------------------------------------------------------------------
# events, summary, status
# ----------------------------------------------------------------------------------------------


def test_events_are_bounded_filtered_and_keep_their_own_kind(new_journal):
    j = new_journal()
    for i in range(30):
        j.event("printer.fault", {"kind": "out_of_paper", "n": i})
    j.event("reader.error", {"reason": "worn"})
    faults = j.events("printer.fault", limit=5)
    assert [e["n"] for e in faults] == [25, 26, 27, 28, 29]
    assert all(e["kind"] == "printer.fault" and e["detail"]["kind"] == "out_of_paper" for e in faults)
    assert len(j.events(limit=10**9)) == 31  # capped, not unbounded
    assert [e["kind"] for e in j.events(prefix="reader.")] == ["reader.error"]
    assert [e["n"] for e in j.events(since=faults[-1]["at"], kind="printer.fault")] == [29]


def test_summary_and_status_for_the_cli_and_the_daemon(new_journal):
    j = new_journal()
    j.set_signed_in(wrapped_keys=b"k" * 60, key_mode="004", batch="000003")
    pending(j, j.next_stan(), 100)
    pending(j, j.next_stan(), 200)
    approve(j, "000002")
    j.set_signature("000002", j.batch, "unsigned")
    j.store_receipt("transaction", "SLIP", stan="000002", batch=j.batch, copy="merchant")
    j.begin_intent("sign_off", j.batch)
    summary = j.summary()
    assert summary == {"signed_in": True, "batch": "000003", "stan": "000002", "pending_reversals": 1,
                       "open_intents": ["sign_off"], "unsigned": 1, "pending_receipts": 1, "transactions": 2}
    status = j.status()
    assert status["tid"] == TID and status["mid"] == MID and status["schema_version"] == SCHEMA_VERSION
    assert "wrapped_keys" not in status and status.items() >= summary.items()


# ----------------------------------------------------------------------------------------------
# bad files, a full disk, a closed journal
# ----------------------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_a_clear_error_naming_it(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=r"journal .*bad\.sqlite is not usable"):
        open_journal(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_a_damaged_journal_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "damaged.sqlite"
    j = open_journal(path)
    for amount in range(1, 200):
        pending(j, j.next_stan(), amount)
    j.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[3 * page:4 * page] = b"\xff" * page  # a torn write, a bad sector
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"journal .*damaged\.sqlite is (damaged|not usable)"):
        open_journal(path)


def test_another_sqlite_database_is_not_taken_over(tmp_path):
    ledger = tmp_path / "host.sqlite"
    raw = sqlite3.connect(ledger)
    raw.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY)")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match=r"host\.sqlite is an SQLite database but not a possim terminal journal"):
        open_journal(ledger)
    raw = sqlite3.connect(ledger)
    assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["ledger"]
    raw.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    open_journal(path).close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, 0, 'future')",
                (SCHEMA_VERSION + 1,))
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match=rf"future\.sqlite has schema version {SCHEMA_VERSION + 1}, newer"):
        open_journal(path)


def test_a_journal_of_another_terminal_is_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    open_journal(path).close()
    with pytest.raises(JournalError, match=r"j\.sqlite belongs to terminal 10000001, not 20000002"):
        Journal.open(path, tid="20000002", mid=MID, pan_key=KEY)


def test_a_path_that_cannot_hold_a_journal_names_itself(tmp_path):
    with pytest.raises(JournalError, match="no-such-dir"):
        open_journal(tmp_path / "no-such-dir" / "j.sqlite")
    with pytest.raises(JournalError, match=re.escape(str(tmp_path))):
        open_journal(tmp_path)  # a directory


def test_a_full_disk_is_a_clear_error_and_loses_nothing_committed(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    pending(j, j.next_stan(), 1000)
    approve(j, "000001")
    j._db.execute(f"PRAGMA max_page_count = {j._db.execute('PRAGMA page_count').fetchone()[0]}")  # the disk fills
    with pytest.raises(JournalFull, match=r"j\.sqlite: disk full .* not recorded"):
        for i in range(10_000):
            j.event("filler", {"i": i, "pad": "x" * 200})
    stan = j.stan
    with pytest.raises(JournalFull):
        for _ in range(10_000):
            j.record_pending(kind="sale", stan=j.next_stan(), batch=j.batch, amount_fen=5, pan=PAN,
                             reversal=reversal_fields(j.stan, 5))
    # the step that failed left nothing half-written: every transaction it holds has its reversal
    for txn in j.transactions():
        if txn.status == "pending":
            assert any(r.stan == txn.stan for r in j.pending_reversals())
    assert int(j.stan) >= int(stan)
    j._db.execute("PRAGMA max_page_count = 1073741823")  # space freed: the same journal carries on
    last = j.next_stan()
    pending(j, last, 42)
    j.close()
    j = open_journal(path)
    assert j.transaction("000001", "000001").status == "approved"
    assert j.transaction(last, "000001").amount_fen == 42 and j.stan == last


def test_a_closed_journal_says_so(new_journal):
    j = new_journal()
    j.close()
    j.close()
    with pytest.raises(JournalError, match="is closed"):
        j.next_stan()
    with pytest.raises(JournalError, match="is closed"):
        j.pending_reversals()


def test_an_in_memory_journal_for_tests():
    with Journal.open(":memory:", tid=TID, mid=MID, pan_key=KEY) as j:
        assert isinstance(j, MemoryJournal) and repr(j) == f"<MemoryJournal :memory: tid={TID}>"
        pending(j, j.next_stan(), 100)
        assert len(j.pending_reversals()) == 1
    assert j.closed


# ----------------------------------------------------------------------------------------------
# migration from schema 1
# ----------------------------------------------------------------------------------------------

SCHEMA_1 = """
CREATE TABLE identity (id INTEGER PRIMARY KEY CHECK (id = 1), tid TEXT NOT NULL, mid TEXT NOT NULL,
    merchant_name TEXT, firmware TEXT, settlement_type TEXT, signed_in INTEGER NOT NULL DEFAULT 0, signed_in_at REAL,
    wrapped_keys BLOB, key_mode TEXT, stan INTEGER NOT NULL DEFAULT 0, batch TEXT NOT NULL DEFAULT '000001');
CREATE TABLE txn (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, stan TEXT NOT NULL, batch TEXT NOT NULL,
    amount_fen INTEGER NOT NULL, pan_masked TEXT NOT NULL, pan_enc BLOB NOT NULL, entry_mode TEXT, original_stan TEXT,
    status TEXT NOT NULL, rc TEXT, rrn TEXT, auth_code TEXT, host_date TEXT, host_time TEXT,
    refunded_fen INTEGER NOT NULL DEFAULT 0, signature TEXT NOT NULL DEFAULT 'not_required', signature_image BLOB,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (batch, stan));
CREATE TABLE reversal (txn_id INTEGER PRIMARY KEY REFERENCES txn(id), stan TEXT NOT NULL, batch TEXT NOT NULL,
    fields TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_attempt REAL,
    created_at REAL NOT NULL);
CREATE TABLE receipt (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, copy TEXT, stan TEXT, batch TEXT, text TEXT NOT NULL,
    printed INTEGER NOT NULL DEFAULT 0, reprints INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE intent (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, batch TEXT NOT NULL, data TEXT NOT NULL,
    step TEXT NOT NULL DEFAULT 'begun', open INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE settlement (batch TEXT PRIMARY KEY, result TEXT NOT NULL, terminal_totals TEXT NOT NULL,
    host_totals TEXT, uploaded INTEGER NOT NULL DEFAULT 0, settled_at REAL NOT NULL);
CREATE TABLE event (id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
PRAGMA user_version = 1;
"""


def schema_1_journal(path: Path) -> None:
    """A journal as possim's schema 1 wrote it: card data sealed, but reversal fields (PAN included) in clear."""
    aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"possim journal PAN").derive(KEY))

    def seal(stan: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, f"{PAN}|3012".encode(), f"{TID}|000001|{stan}".encode())

    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.executescript(SCHEMA_1)
    raw.execute("INSERT INTO identity (id, tid, mid, signed_in, stan, batch) VALUES (1, ?, ?, 1, 3, '000001')",
                (TID, MID))
    rows = [("000001", "sale", 1000, "approved", 1000, None), ("000002", "refund", 1000, "approved", 0, "000001"),
            ("000003", "sale", 700, "reversal_pending", 0, None)]
    for stan, kind, amount, status, refunded, original in rows:
        raw.execute("INSERT INTO txn (kind, stan, batch, amount_fen, pan_masked, pan_enc, original_stan, status, "
                    "refunded_fen, created_at, updated_at) VALUES (?, ?, '000001', ?, ?, ?, ?, ?, ?, 1, 1)",
                    (kind, stan, amount, "622202******0015", seal(stan), original, status, refunded))
    raw.execute("INSERT INTO reversal (txn_id, stan, batch, fields, reason, attempts, created_at) VALUES "
                "(3, '000003', '000001', ?, '98', 2, 1)", (json.dumps(reversal_fields("000003", 700)),))
    raw.execute("INSERT INTO intent (kind, batch, data, created_at, updated_at) VALUES ('sign_off', '000001', "
                "'{\"stan\": \"000004\"}', 1, 1)")
    raw.commit()
    raw.close()


def test_a_schema_1_journal_is_migrated_and_its_clear_reversal_fields_sealed(tmp_path):
    path = tmp_path / "old.sqlite"
    schema_1_journal(path)
    assert PAN.encode() in all_bytes(tmp_path)  # what schema 1 left on disk
    j = open_journal(path)
    (owed,) = j.pending_reversals()
    assert (owed.stan, owed.attempts, owed.fields[2], owed.fields[4]) == ("000003", 2, PAN, "000000000700")
    assert j.transaction("000001", "000001").status == "refunded"  # refunded in full under schema 1
    assert j.pan_for(j.transaction("000001", "000001")) == PAN
    assert j.batch_totals("000001") == (1000, 1, 1000, 1)
    assert [(i.kind, i.data) for i in j.open_intents()] == [("sign_off", {"stan": "000004"})]
    assert j.next_stan() == "000004" and j.identity()["signed_in"] == 1
    raw = sqlite3.connect(path)
    versions = [r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY version")]
    raw.close()
    assert versions == [1, SCHEMA_VERSION]
    j.close()
    assert PAN.encode() not in all_bytes(tmp_path)
    j = open_journal(path)  # opens again without migrating twice
    assert len(j.pending_reversals()) == 1
    j.close()


# ----------------------------------------------------------------------------------------------
# random operation sequences with crashes
# ----------------------------------------------------------------------------------------------

LIVE = ("pending", "reversal_pending")


class JournalModel(RuleBasedStateMachine):
    """Random sales, voids, refunds, replies, timeouts, reversals, settlements and sign-offs, with crashes:
    a crash copies the database and its WAL as they are on disk (what a SIGKILL leaves) and reopens the copy.

    Invariants after every step: no STAN issued twice; the journal's statuses, refunds and batch totals
    equal the model's; a reversal is owed exactly for each protected transaction still unanswered, in
    creation order; one settlement record per batch; the batch never moves twice past one settlement.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="possim-journal-"))
        self.generation = 0
        self.clock = Clock()
        self.j = open_journal(self.path(), self.clock)
        self.issued: list[str] = []
        self.txns: dict[tuple[str, str], dict] = {}  # (batch, stan) -> kind, amount, status, protected, ...
        self.batch = "000001"
        self.settled: set[str] = set()
        self.settlement_intent: str | None = None  # the batch of the open settlement intent
        self.sign_off_open = False

    def path(self) -> Path:
        return self.dir / f"j{self.generation}.sqlite"

    def teardown(self) -> None:
        self.j.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        assert self.j.batch == "000001"

    # --- helpers
    def issue(self) -> str:
        stan = self.j.next_stan()
        assert stan not in self.issued, f"STAN {stan} issued twice"
        self.issued.append(stan)
        return stan

    def pick(self, data: st.DataObject, predicate) -> tuple[str, str] | None:
        keys = [k for k, t in self.txns.items() if predicate(k, t)]
        return data.draw(st.sampled_from(keys)) if keys else None

    # --- rules
    @rule()
    def network_message(self) -> None:
        self.issue()  # sign-in, echo, settlement: STANs that are not transactions

    @rule(amount=st.integers(1, 100_000), protected=st.sampled_from([True, True, True, False]))
    def sale(self, amount: int, protected: bool) -> None:
        stan = self.issue()
        pending(self.j, stan, amount, protected=protected)  # unprotected: the FM-13 fault switch
        self.txns[(self.batch, stan)] = {"kind": "sale", "amount": amount, "status": "pending",
                                         "protected": protected, "refunded": 0, "original": None}

    @rule(amount=st.integers(1, 100_000))
    def approved_sale(self, amount: int) -> None:
        self.sale(amount, True)
        self.answer((self.batch, self.issued[-1]), approved=True)

    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        key = self.pick(data, lambda k, t: k[0] == self.batch and t["kind"] == "sale" and t["status"] == "approved"
                        and t["refunded"] == 0)
        if key is None:
            return
        stan = self.issue()
        sale = self.txns[key]
        self.j.record_pending(kind="void", stan=stan, batch=self.batch, amount_fen=sale["amount"], pan=PAN,
                              original_stan=key[1], original_batch=key[0],
                              reversal=reversal_fields(stan, sale["amount"], self.batch))
        self.txns[(self.batch, stan)] = {"kind": "void", "amount": sale["amount"], "status": "pending",
                                         "protected": True, "refunded": 0, "original": key}
        if data.draw(st.booleans()):
            self.answer((self.batch, stan), approved=True)

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        key = self.pick(data, lambda k, t: t["kind"] == "sale" and t["status"] == "approved")
        if key is None:
            return
        sale = self.txns[key]
        left = sale["amount"] - sale["refunded"]
        amount = data.draw(st.one_of(st.just(left), st.integers(1, left)))  # in full, often
        stan = self.issue()
        self.j.record_pending(kind="refund", stan=stan, batch=self.batch, amount_fen=amount, pan=PAN,
                              original_stan=key[1], original_batch=key[0],
                              reversal=reversal_fields(stan, amount, self.batch))
        self.txns[(self.batch, stan)] = {"kind": "refund", "amount": amount, "status": "pending", "protected": True,
                                         "refunded": 0, "original": key}
        if data.draw(st.booleans()):
            self.answer((self.batch, stan), approved=True)

    @rule(data=st.data(), approved=st.booleans())
    def reply(self, data: st.DataObject, approved: bool) -> None:
        key = self.pick(data, lambda k, t: t["status"] in LIVE)
        if key is not None:
            self.answer(key, approved=approved)

    def answer(self, key: tuple[str, str], *, approved: bool) -> None:
        self.j.record_reply(stan=key[1], batch=key[0], rc="00" if approved else "05", approved=approved)
        txn = self.txns[key]
        txn["status"] = "approved" if approved else "declined"
        if approved and txn["original"]:
            sale = self.txns[txn["original"]]
            if txn["kind"] == "void":
                sale["status"] = "voided"
            else:
                sale["refunded"] += txn["amount"]
                if sale["refunded"] >= sale["amount"] and sale["status"] == "approved":
                    sale["status"] = "refunded"

    @rule(data=st.data(), reason=st.sampled_from(["98", "A0", "06"]))
    def no_reply(self, data: st.DataObject, reason: str) -> None:
        key = self.pick(data, lambda k, t: t["status"] in LIVE)
        if key is None:
            return
        self.j.set_reversal_reason(key[1], key[0], reason)
        if self.txns[key]["protected"]:
            self.txns[key]["status"] = "reversal_pending"

    @rule(outcome=st.sampled_from(["00", "00", "96", "12", "25"]))
    def send_reversal(self, outcome: str) -> None:
        owed = self.j.pending_reversals()
        if not owed:
            return
        first = owed[0]
        self.j.mark_reversal_sent(first.stan, first.batch)
        cleared = self.j.clear_reversal(first.stan, first.batch, outcome)
        assert cleared == (outcome != "96")
        if outcome in ("00", "25"):
            self.txns[(first.batch, first.stan)]["status"] = "reversed"
        elif outcome == "12":
            self.txns[(first.batch, first.stan)]["status"] = "reversal_refused"

    @precondition(lambda self: self.settlement_intent is None)
    @rule()
    def settle_begin(self) -> None:
        if self.batch in self.settled:
            with pytest.raises(JournalError, match="already settled"):
                self.j.begin_intent("settlement", self.batch)
            return
        self.j.begin_intent("settlement", self.batch, {"totals": list(self.j.batch_totals(self.batch))})
        self.settlement_intent = self.batch

    @precondition(lambda self: self.settlement_intent is not None)
    @rule()
    def settle_answered(self) -> None:
        batch = self.settlement_intent
        assert self.j.begin_intent("settlement", batch).batch == batch  # resumed: the same intent
        self.j.record_settlement(batch, result="balanced", terminal_totals="t", host_totals="h", uploaded=0)
        self.settled.add(batch)

    @precondition(lambda self: self.settlement_intent is not None and self.settlement_intent in self.settled)
    @rule()
    def settle_advance(self) -> None:
        if self.batch == self.settlement_intent:
            self.batch = f"{int(self.batch) + 1:06d}"
        assert self.j.advance_batch() == self.batch

    @precondition(lambda self: self.settlement_intent is not None and self.settlement_intent in self.settled
                  and self.batch != self.settlement_intent)
    @rule()
    def settle_done(self) -> None:
        self.j.complete_intent(self.j.open_intent("settlement", self.settlement_intent))
        self.settlement_intent = None

    @precondition(lambda self: self.settlement_intent is not None)
    @rule()
    def settle_in_one_step(self) -> None:
        intent = self.j.open_intent("settlement", self.settlement_intent)
        new_batch = self.j.complete_settlement(intent, result="balanced", terminal_totals="t", host_totals="h",
                                               uploaded=0)
        self.settled.add(self.settlement_intent)
        if self.batch == self.settlement_intent:
            self.batch = f"{int(self.batch) + 1:06d}"
        assert new_batch == self.batch
        self.settlement_intent = None

    @rule()
    def sign_off(self) -> None:
        if not self.sign_off_open:
            self.j.begin_intent("sign_off", self.batch, {"stan": self.issue()})
            self.sign_off_open = True
        else:
            self.j.complete_sign_off(self.j.open_intent("sign_off"))
            self.sign_off_open = False

    @rule()
    def crash(self) -> None:
        """SIGKILL: whatever is in the database file and its WAL right now is all there is."""
        old = self.path()
        self.generation += 1
        new = self.path()
        for suffix in ("", "-wal"):
            if Path(f"{old}{suffix}").exists():
                shutil.copyfile(f"{old}{suffix}", f"{new}{suffix}")
        self.j.close()
        self.j = open_journal(new, self.clock)

    @rule()
    def restart(self) -> None:
        self.j.close()
        self.j = open_journal(self.path(), self.clock)

    # --- invariants
    @invariant()
    def stans_and_batch(self) -> None:
        assert self.j.stan == (self.issued[-1] if self.issued else "000000")
        assert self.j.batch == self.batch

    @invariant()
    def statuses_and_reversals(self) -> None:
        for (batch, stan), model in self.txns.items():
            txn = self.j.transaction(stan, batch)
            assert (txn.kind, txn.amount_fen, txn.status) == (model["kind"], model["amount"], model["status"])
            assert txn.refunded_fen == model["refunded"]
        owed = [(t["protected"] and t["status"] in LIVE, k) for k, t in self.txns.items()]
        expected = [k for due, k in owed if due]  # dict order is creation order
        assert [(r.batch, r.stan) for r in self.j.pending_reversals()] == expected

    @invariant()
    def totals(self) -> None:
        for batch in {k[0] for k in self.txns}:
            debit = [t["amount"] for k, t in self.txns.items() if k[0] == batch and t["kind"] == "sale"
                     and t["status"] in ("approved", "voided", "refunded")]
            credit = [t["amount"] for k, t in self.txns.items() if k[0] == batch and t["kind"] != "sale"
                      and t["status"] == "approved"]
            assert self.j.batch_totals(batch) == (sum(debit), len(debit), sum(credit), len(credit))

    @invariant()
    def settlements_and_intents(self) -> None:
        assert sorted(s.batch for s in self.j.settlements()) == sorted(self.settled)
        kinds = sorted(i.kind for i in self.j.open_intents())
        expected = sorted(["settlement"] * (self.settlement_intent is not None) + ["sign_off"] * self.sign_off_open)
        assert kinds == expected


JournalModel.TestCase.settings = settings(max_examples=40, stateful_step_count=50, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_random_operations_with_crashes_keep_the_invariants = JournalModel.TestCase


# ----------------------------------------------------------------------------------------------
# killed processes
# ----------------------------------------------------------------------------------------------

CHILD_PRELUDE = f"""
import os, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
from terminal.journal import Journal
PAN = {PAN!r}
def fields(stan, amount):
    return {{"2": PAN, "4": f"{{amount:012d}}", "11": stan, "39": "98"}}
"""


def test_sigkill_right_after_the_write_ahead_leaves_the_reversal(tmp_path):
    path = tmp_path / "j.sqlite"
    script = CHILD_PRELUDE + textwrap.dedent(f"""
        j = Journal.open({str(path)!r}, tid={TID!r}, mid={MID!r}, pan_key=bytes.fromhex({KEY.hex()!r}))
        stan = j.next_stan()
        j.record_pending(kind="sale", stan=stan, batch=j.batch, amount_fen=4321, pan=PAN, reversal=fields(stan, 4321))
        print("journaled", stan, flush=True)
        signal.pause()  # "sending": wait for the parent's SIGKILL, no timer involved
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["journaled", "000001"]
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    j = open_journal(path)
    (owed,) = j.pending_reversals()
    assert (owed.stan, owed.fields[4], owed.fields[2]) == ("000001", "000000004321", PAN)
    assert j.transaction("000001", j.batch).status == "pending"
    assert j.next_stan() == "000002"
    j.close()


def test_sigkill_at_random_instants_loses_nothing_and_reuses_no_stan(tmp_path):
    """A child journals sales as fast as it can and reports each committed step; it is killed at random
    instants, three times over on the same file. Everything it reported is in the journal."""
    path = tmp_path / "j.sqlite"
    script = CHILD_PRELUDE + textwrap.dedent(f"""
        j = Journal.open({str(path)!r}, tid={TID!r}, mid={MID!r}, pan_key=bytes.fromhex({KEY.hex()!r}))
        for pending in j.pending_reversals():  # the restarted terminal reverses what it owes first
            j.clear_reversal(pending.stan, pending.batch, "00")
            print("reversed", pending.stan, flush=True)
        while True:
            stan = j.next_stan()
            print("issued", stan, flush=True)
            amount = int(stan)
            j.record_pending(kind="sale", stan=stan, batch=j.batch, amount_fen=amount, pan=PAN,
                             reversal=fields(stan, amount))
            print("journaled", stan, flush=True)
            if amount % 3:
                j.record_reply(stan=stan, batch=j.batch, rc="00", approved=True)
                print("approved", stan, flush=True)
    """)
    rng = random.Random(8583)
    seen: dict[str, list[str]] = {"issued": [], "journaled": [], "approved": [], "reversed": []}
    for _round in range(3):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        lines = []
        try:
            for _ in range(rng.randint(5, 120)):
                lines.append(child.stdout.readline())
                assert lines[-1], "the child died on its own"
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
            lines += child.stdout.read().splitlines()  # what it reported before it died
        finally:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
        for line in lines:
            what, _, stan = line.strip().partition(" ")
            if what == "issued":
                assert stan not in seen["issued"], f"STAN {stan} issued twice"
            seen[what].append(stan)
    j = open_journal(path)
    try:
        assert int(j.stan) >= max(int(s) for s in seen["issued"])
        for stan in seen["journaled"]:
            txn = j.transaction(stan, "000001")
            assert txn is not None and txn.amount_fen == int(stan), f"journaled STAN {stan} lost"
        for stan in seen["approved"]:
            assert j.transaction(stan, "000001").status == "approved", f"approved STAN {stan} lost"
        for stan in seen["reversed"]:
            assert j.transaction(stan, "000001").status == "reversed"
        owed = {r.stan for r in j.pending_reversals()}
        for txn in j.transactions():
            assert (txn.stan in owed) == (txn.status == "pending"), txn
        assert owed <= set(seen["issued"])
        stans = [t.stan for t in j.transactions()]
        assert len(stans) == len(set(stans))
        assert int(j.next_stan()) > max(int(s) for s in seen["issued"])  # never reused after the kills
    finally:
        j.close()
