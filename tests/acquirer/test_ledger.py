"""The host's ledger on its own: durability, PAN protection, RRNs, totals rules, migration, clock."""

from __future__ import annotations

import sqlite3

import pytest

from acquirer.config import Merchant
from acquirer.ledger import Ledger

PAN = "6222020000000015"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def add(ledger: Ledger, stan: str, kind: str = "sale", amount: int = 100, status: str = "approved",
        batch: str = "000001", **kw) -> int:
    rrn = ledger.next_rrn()
    with ledger.tx() as db:
        return ledger.insert_txn(db, tid="10000001", mid="898100012340001", batch=batch, stan=stan, kind=kind,
                                 amount_fen=amount, pan=PAN, rc="00", status=status, rrn=rrn, **kw)


def test_wal_and_synchronous(tmp_path):
    normal = Ledger(str(tmp_path / "a.sqlite"))
    full = Ledger(str(tmp_path / "b.sqlite"), synchronous="full")
    assert normal.one("PRAGMA journal_mode")[0] == "wal"
    assert normal.one("PRAGMA synchronous")[0] == 1 and full.one("PRAGMA synchronous")[0] == 2
    with pytest.raises(ValueError):
        Ledger(str(tmp_path / "c.sqlite"), synchronous="OFF")


def test_committed_transactions_survive_close_and_reopen(tmp_path):
    path = str(tmp_path / "host.sqlite")
    ledger = Ledger(path, clock=Clock())
    add(ledger, "000001", amount=1234)
    add(ledger, "000002", kind="refund", amount=34)
    rrns = [r["rrn"] for r in ledger.query("SELECT rrn FROM txn ORDER BY id")]
    hashed = ledger.pan_hash(PAN)
    ledger.close()
    again = Ledger(path, clock=Clock())
    assert again.totals("10000001", "000001") == (1234, 1, 34, 1)
    assert [r["rrn"] for r in again.query("SELECT rrn FROM txn ORDER BY id")] == rrns
    assert again.pan_hash(PAN) == hashed  # the PAN key is durable: batch uploads still reconcile
    assert again.next_rrn() not in rrns  # the RRN counter is durable too


def test_uncommitted_work_is_rolled_back(tmp_path):
    ledger = Ledger(str(tmp_path / "host.sqlite"))
    with pytest.raises(RuntimeError), ledger.tx() as db:
        ledger.insert_txn(db, tid="10000001", mid="898100012340001", batch="000001", stan="000001", kind="sale",
                          amount_fen=1, pan=PAN, rc="00", status="approved")
        raise RuntimeError("killed mid-transaction")
    assert ledger.query("SELECT * FROM txn") == []


def test_pan_is_never_stored_in_clear(tmp_path):
    path = tmp_path / "host.sqlite"
    ledger = Ledger(str(path))
    add(ledger, "000001")
    with ledger.tx() as db:
        ledger.add_upload(db, tid="10000001", batch="000001", stan="000001", amount_fen=100, organisation="00",
                          pan=PAN)
    (row,) = ledger.query("SELECT pan_masked, pan_hash FROM txn")
    assert row["pan_masked"] == "622202******0015" and len(row["pan_hash"]) == 64
    ledger.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert PAN.encode() not in raw
    other = Ledger(str(tmp_path / "other.sqlite"))
    assert other.pan_hash(PAN) != row["pan_hash"]  # keyed per ledger


def test_rrns_are_12_digits_and_unique():
    ledger = Ledger(":memory:")
    rrns = [ledger.next_rrn() for _ in range(500)]
    assert all(len(r) == 12 and r.isdigit() for r in rrns) and len(set(rrns)) == 500


def test_totals_count_the_way_the_terminal_does():
    ledger = Ledger(":memory:")
    add(ledger, "000001", amount=1000, status="voided")  # a voided sale still counts as a debit
    add(ledger, "000002", kind="void", amount=1000)  # ... and its void as a credit
    add(ledger, "000003", kind="refund", amount=300)
    add(ledger, "000004", amount=700, status="reversed")  # reversed: nowhere
    add(ledger, "000005", amount=900, status="declined")  # declined: nowhere
    add(ledger, "000006", kind="balance", amount=0)  # balance inquiries: nowhere
    add(ledger, "000007", amount=50, batch="000002")  # another batch
    assert ledger.totals("10000001", "000001") == (1000, 1, 1300, 2)
    assert [r["stan"] for r in ledger.batch_txns("10000001", "000001")] == ["000001", "000002", "000003"]


def test_seen_covers_transactions_and_reversals_of_unknown_originals():
    ledger = Ledger(":memory:")
    add(ledger, "000001")
    with ledger.tx() as db:
        db.execute("INSERT INTO reversed_unknown (tid, batch, stan, at) VALUES ('10000001', '000001', '000009', 0)")
    assert ledger.seen("10000001", "000001", "000001") and ledger.seen("10000001", "000001", "000009")
    assert not ledger.seen("10000001", "000002", "000001") and not ledger.seen("20000002", "000001", "000001")


def test_times_come_from_the_injected_clock():
    clock = Clock(1_700_000_000.0)
    ledger = Ledger(":memory:", clock=clock)
    add(ledger, "000001")
    clock.now += 3600
    ledger.event("something", {"a": 1})
    assert ledger.one("SELECT created_at FROM txn")[0] == 1_700_000_000.0
    assert ledger.one("SELECT at FROM event")[0] == 1_700_003_600.0
    # the daily count looks at created_at from the clock
    assert ledger.daily_count("10000001", 1_700_000_000.0) == 1
    assert ledger.daily_count("10000001", 1_700_000_001.0) == 0


def test_reversals_are_counted_once_each():
    clock = Clock()
    ledger = Ledger(":memory:", clock=clock)
    for _ in range(3):
        with ledger.tx() as db:
            times = ledger.record_reversal(db, tid="10000001", batch="000001", stan="000004", reason="98",
                                           amount_fen=700, outcome="unknown", txn_id=None)
        clock.now += 1
    (row,) = ledger.reversals("10000001")
    assert times == 3 and row["received"] == 3 and row["last_at"] - row["first_at"] == 2 and row["reason"] == "98"


def test_batch_upload_records_are_deduplicated_by_stan():
    ledger = Ledger(":memory:")
    with ledger.tx() as db:
        assert ledger.add_upload(db, tid="10000001", batch="000001", stan="000001", amount_fen=100,
                                 organisation="00", pan=PAN)
        assert not ledger.add_upload(db, tid="10000001", batch="000001", stan="000001", amount_fen=100,
                                     organisation="00", pan=PAN)
    assert len(ledger.uploads("10000001", "000001")) == 1


def test_merchant_snapshot_and_policies_reach_other_connections(tmp_path):
    path = str(tmp_path / "host.sqlite")
    host = Ledger(path)
    host.sync_merchants([Merchant("898100012340001", "GOOD FOOD CAFE", "T0")])
    admin = Ledger(path)
    assert admin.merchants()["898100012340001"]["settlement_type"] == "T0"
    before = host.data_version()
    admin.set_policy("min_firmware", "3.0.2")
    assert host.data_version() != before and host.policies() == {"min_firmware": "3.0.2"}


def test_an_old_ledger_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE txn (id INTEGER PRIMARY KEY, tid TEXT NOT NULL, mid TEXT NOT NULL, batch TEXT NOT NULL,
            stan TEXT NOT NULL, kind TEXT NOT NULL, amount_fen INTEGER NOT NULL, pan_masked TEXT, pan_hash TEXT,
            rrn TEXT UNIQUE, auth_code TEXT, rc TEXT NOT NULL, status TEXT NOT NULL,
            refunded_fen INTEGER NOT NULL DEFAULT 0, original_id INTEGER, host_date TEXT, host_time TEXT,
            risk_reason TEXT, created_at REAL NOT NULL, UNIQUE (tid, batch, stan));
        CREATE TABLE funds (txn_id INTEGER PRIMARY KEY, mid TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
            expected_at REAL, credited_at REAL);
        INSERT INTO txn (tid, mid, batch, stan, kind, amount_fen, rc, status, created_at)
            VALUES ('10000001', '898100012340001', '000001', '000001', 'sale', 500, '00', 'approved', 0);
        INSERT INTO funds (txn_id, mid, status) VALUES (1, '898100012340001', 'pending');
    """)
    db.commit()
    db.close()
    ledger = Ledger(str(path))
    columns = {r[1] for r in ledger.query("PRAGMA table_info(txn)")}
    assert {"mti", "proc_code", "updated_at"} <= columns
    assert ledger.one("SELECT kind FROM funds")[0] == "sale"  # old rows were all sales
    assert ledger.totals("10000001", "000001") == (500, 1, 0, 0)
