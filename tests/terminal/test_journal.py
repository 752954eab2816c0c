"""The journal: write-ahead reversals, STANs never reused, encrypted PANs, totals rules, intents, bad files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from terminal.journal import Journal, JournalError

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "6222020000000015"


def open_journal(path: Path | str) -> Journal:
    return Journal.open(path, tid="10000001", mid="898100012340001", pan_key=KEY, clock=lambda: 1_700_000_000.0)


def sale(j: Journal, stan: str, amount: int, *, kind: str = "sale", original: str | None = None) -> None:
    j.record_pending(kind=kind, stan=stan, batch=j.batch, amount_fen=amount, pan=PAN, entry_mode="021",
                     original_stan=original, reversal={"11": stan, "4": f"{amount:012d}", "39": "98"})


def test_reversal_is_durable_before_the_request_and_cleared_by_the_reply(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    sale(j, "000001", 1234)
    j.close()
    j = open_journal(path)  # as after a crash right after record_pending
    (pending,) = j.pending_reversals()
    assert (pending.stan, pending.reason, pending.fields[4]) == ("000001", "98", "000000001234")
    j.record_reply(stan="000001", batch=j.batch, rc="00", approved=True, rrn="1" * 12, auth_code="A1")
    assert j.pending_reversals() == []
    assert j.transaction("000001", j.batch).status == "approved"


def test_stans_are_never_reused_across_reopen_and_wrap(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    first = [j.next_stan() for _ in range(3)]
    j.close()
    j = open_journal(path)
    assert j.next_stan() == "000004" and first == ["000001", "000002", "000003"]
    j._db.execute("UPDATE identity SET stan = 999999")
    assert j.next_stan() == "000001"


def test_pan_is_never_in_the_database_file_in_clear(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    sale(j, "000001", 100)
    txn = j.transaction("000001", j.batch)
    assert j.pan_for(txn) == PAN and txn.pan_masked == "622202******0015"
    j.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert PAN.encode() not in raw


def test_batch_totals_follow_the_dialect_rules(tmp_path):
    j = open_journal(tmp_path / "j.sqlite")
    for stan, amount in (("000001", 1000), ("000002", 2000), ("000003", 4000), ("000004", 8000)):
        sale(j, stan, amount)
    for stan in ("000001", "000002", "000003"):
        j.record_reply(stan=stan, batch=j.batch, rc="00", approved=True)
    j.record_reply(stan="000004", batch=j.batch, rc="51", approved=False)
    sale(j, "000005", 1000, kind="void", original="000001")
    j.record_reply(stan="000005", batch=j.batch, rc="00", approved=True)
    sale(j, "000006", 500, kind="refund", original="000002")
    j.record_reply(stan="000006", batch=j.batch, rc="00", approved=True)
    j.clear_reversal("000003", j.batch, "00")  # no-op: the sale was answered
    sale(j, "000007", 700)
    j.clear_reversal("000007", j.batch, "00")  # reversed: counts nowhere
    assert j.transaction("000001", j.batch).status == "voided"
    assert j.transaction("000002", j.batch).refunded_fen == 500
    assert j.transaction("000007", j.batch).status == "reversed"
    # sales 1000 (voided, still a debit) + 2000 + 4000; credits: void 1000 + refund 500
    assert j.batch_totals(j.batch) == (7000, 3, 1500, 2)
    assert sorted(r.stan for r in j.batch_records(j.batch)) == ["000001", "000002", "000003", "000005", "000006"]
    assert {r.pan for r in j.batch_records(j.batch)} == {PAN}


def test_intents_survive_and_are_not_duplicated(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(path)
    intent = j.begin_intent("sign_off", j.batch, {"stan": "000009"})
    j.close()
    j = open_journal(path)
    assert [i.kind for i in j.open_intents()] == ["sign_off"]
    assert j.begin_intent("sign_off", j.batch, {"stan": "000010"}).id == intent.id
    j.complete_intent(intent)
    assert j.open_intents() == []


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=r"bad\.sqlite"):
        open_journal(bad)


def test_journal_of_another_terminal_is_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    open_journal(path).close()
    with pytest.raises(JournalError, match="belongs to terminal 10000001"):
        Journal.open(path, tid="20000002", mid="898100012340001", pan_key=KEY)


def test_sigkill_after_write_ahead_leaves_the_reversal(tmp_path):
    path = tmp_path / "j.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from terminal.journal import Journal
        j = Journal.open({str(path)!r}, tid="10000001", mid="898100012340001", pan_key=bytes.fromhex({KEY.hex()!r}))
        j.record_pending(kind="sale", stan=j.next_stan(), batch=j.batch, amount_fen=4321, pan={PAN!r},
                         reversal={{"11": "000001", "39": "98"}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    j = open_journal(path)
    assert [r.stan for r in j.pending_reversals()] == ["000001"]
    assert j.transaction("000001", j.batch).amount_fen == 4321
    assert os.path.exists(path)
