"""The host's ledger in SQLite (WAL, synchronous=FULL): sessions, transactions, settlements, funds.

Every committed transaction survives a kill and restart. Working keys are stored the way they went
to the terminal - wrapped under its TMK - never in clear; PANs as a masked form and a keyed hash
(enough to reconcile batch-upload records, useless to a thief).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from protocol.message import mask_pan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS session (
    tid TEXT PRIMARY KEY, mid TEXT NOT NULL, signed_in INTEGER NOT NULL DEFAULT 0, wrapped_keys BLOB,
    key_mode TEXT, batch TEXT NOT NULL DEFAULT '000001', firmware TEXT, device_info TEXT,
    signed_in_at REAL, signed_out_at REAL
);
CREATE TABLE IF NOT EXISTS txn (
    id INTEGER PRIMARY KEY, tid TEXT NOT NULL, mid TEXT NOT NULL, batch TEXT NOT NULL, stan TEXT NOT NULL,
    kind TEXT NOT NULL, amount_fen INTEGER NOT NULL, pan_masked TEXT, pan_hash TEXT, rrn TEXT UNIQUE,
    auth_code TEXT, rc TEXT NOT NULL, status TEXT NOT NULL, refunded_fen INTEGER NOT NULL DEFAULT 0,
    original_id INTEGER, host_date TEXT, host_time TEXT, risk_reason TEXT, created_at REAL NOT NULL,
    UNIQUE (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS reversed_unknown (
    tid TEXT NOT NULL, batch TEXT NOT NULL, stan TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS settlement (
    tid TEXT NOT NULL, batch TEXT NOT NULL, terminal_totals TEXT NOT NULL, host_totals TEXT NOT NULL,
    result TEXT NOT NULL, reply_48 TEXT NOT NULL, uploaded TEXT NOT NULL DEFAULT '[]',
    differences TEXT NOT NULL DEFAULT '[]', defect TEXT, at REAL NOT NULL, PRIMARY KEY (tid, batch)
);
CREATE TABLE IF NOT EXISTS sign_off (id INTEGER PRIMARY KEY, tid TEXT NOT NULL, batch TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS funds (
    txn_id INTEGER PRIMARY KEY REFERENCES txn(id), mid TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    expected_at REAL, credited_at REAL
);
CREATE TABLE IF NOT EXISTS signature (
    tid TEXT NOT NULL, batch TEXT NOT NULL, stan TEXT NOT NULL, image BLOB NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS policy (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

DEBIT_KINDS = ("sale",)
CREDIT_KINDS = ("void", "refund")


class Ledger:
    def __init__(self, path: str, *, clock: Callable[[], float] = time.time, synchronous: str = "NORMAL") -> None:
        """`synchronous`: NORMAL (WAL) keeps every committed transaction across a killed process, which
        is the host's contract; FULL also survives the machine losing power, at an fsync per commit."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = path
        self.clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'pan_secret'").fetchone()
        if row is None:
            secret = os.urandom(32)
            self._db.execute("INSERT INTO meta (key, value) VALUES ('pan_secret', ?)", (secret,))
        else:
            secret = row[0]
        self._pan_secret = bytes(secret)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def pan_hash(self, pan: str) -> str:
        return hmac.new(self._pan_secret, pan.encode(), hashlib.sha256).hexdigest()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self._db.execute(sql, params).fetchone()

    def event(self, kind: str, detail: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO event (at, kind, detail) VALUES (?, ?, ?)",
                         (self.clock(), kind, json.dumps(detail, sort_keys=True)))

    # policy: admin changes that outlive the process and reach a running host ------------------------
    def set_policy(self, key: str, value: Any) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO policy (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def policies(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.query("SELECT key, value FROM policy")}

    def data_version(self) -> int:
        """Changes whenever another connection (say `possim host admin`) commits to this ledger."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # sessions ----------------------------------------------------------------------------------
    def session(self, tid: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM session WHERE tid = ?", (tid,))

    def ensure_session(self, tid: str, mid: str) -> sqlite3.Row:
        row = self.session(tid)
        if row is None:
            self._db.execute("INSERT INTO session (tid, mid) VALUES (?, ?)", (tid, mid))
            row = self.session(tid)
        assert row is not None
        return row

    # transactions -------------------------------------------------------------------------------
    def seen(self, tid: str, batch: str, stan: str) -> bool:
        if self.one("SELECT 1 FROM txn WHERE tid = ? AND batch = ? AND stan = ?", (tid, batch, stan)):
            return True
        return self.one("SELECT 1 FROM reversed_unknown WHERE tid = ? AND batch = ? AND stan = ?",
                        (tid, batch, stan)) is not None

    def txn(self, tid: str, batch: str, stan: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM txn WHERE tid = ? AND batch = ? AND stan = ?", (tid, batch, stan))

    def next_rrn(self) -> str:
        """A retrieval reference number unique for this host: day-of-year prefix + a durable counter."""
        with self.tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'rrn'").fetchone()
            value = (int(row[0]) if row else 0) % 99_999_999 + 1
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rrn', ?)", (str(value),))
        day = time.strftime("%j", time.localtime(self.clock()))
        return f"{day:0>3}{0:01d}{value:08d}"

    def insert_txn(self, db: sqlite3.Connection, **values: Any) -> int:
        pan = values.pop("pan", None)
        values["pan_masked"] = mask_pan(pan) if pan else None
        values["pan_hash"] = self.pan_hash(pan) if pan else None
        values.setdefault("created_at", self.clock())
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cur = db.execute(f"INSERT INTO txn ({columns}) VALUES ({marks})", tuple(values.values()))
        return int(cur.lastrowid or 0)

    def daily_count(self, tid: str, since: float) -> int:
        row = self.one("SELECT COUNT(*) FROM txn WHERE tid = ? AND kind = 'sale' AND status != 'declined' "
                       "AND created_at >= ?", (tid, since))
        return int(row[0]) if row else 0

    def totals(self, tid: str, batch: str) -> tuple[int, int, int, int]:
        """(debit amount, debit count, credit amount, credit count) the way the terminal counts them."""
        rows = self.query("SELECT kind, amount_fen FROM txn WHERE tid = ? AND batch = ? AND status IN "
                          "('approved', 'voided') AND kind IN ('sale', 'void', 'refund')", (tid, batch))
        debit = [r["amount_fen"] for r in rows if r["kind"] in DEBIT_KINDS]
        credit = [r["amount_fen"] for r in rows if r["kind"] in CREDIT_KINDS]
        return sum(debit), len(debit), sum(credit), len(credit)

    def batch_txns(self, tid: str, batch: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM txn WHERE tid = ? AND batch = ? AND status IN ('approved', 'voided') "
                          "AND kind IN ('sale', 'void', 'refund') ORDER BY id", (tid, batch))
