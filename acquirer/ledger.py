"""The host's ledger in SQLite (WAL): sessions, transactions, reversals, settlements, funds, events.

Every committed transaction survives a kill and restart: WAL with synchronous=NORMAL (the default)
keeps every commit across a killed process; synchronous=FULL (`durability = "full"`) also across a
power cut, at an fsync per commit. Working keys are stored the way they went to the terminal -
wrapped under its TMK - never in clear; PANs as a masked form and a keyed hash (enough to reconcile
batch-upload records; the key lives in the ledger, so the hash protects the PAN in logs, reports and
exports, not from someone holding the whole file). Every time comes from the injected clock.
"""

from __future__ import annotations

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
CREATE TABLE IF NOT EXISTS reversal (
    tid TEXT NOT NULL, batch TEXT NOT NULL, stan TEXT NOT NULL, reason TEXT, amount_fen INTEGER,
    outcome TEXT NOT NULL, txn_id INTEGER, received INTEGER NOT NULL DEFAULT 1, first_at REAL NOT NULL,
    last_at REAL NOT NULL, PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS batch_upload (
    tid TEXT NOT NULL, batch TEXT NOT NULL, stan TEXT NOT NULL, amount_fen INTEGER NOT NULL,
    organisation TEXT NOT NULL, pan_masked TEXT, pan_hash TEXT, at REAL NOT NULL, PRIMARY KEY (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS merchant (
    mid TEXT PRIMARY KEY, name TEXT NOT NULL, settlement_type TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS txn_day ON txn (tid, created_at);
CREATE INDEX IF NOT EXISTS funds_mid ON funds (mid, status);
"""

#: Columns added after the first release: (table, column, declaration). Old ledgers gain them on open.
_MIGRATIONS = (
    ("txn", "mti", "TEXT"),
    ("txn", "proc_code", "TEXT"),
    ("txn", "updated_at", "REAL"),
    ("funds", "kind", "TEXT NOT NULL DEFAULT 'sale'"),
    ("funds", "rule", "TEXT"),
    ("funds", "settled_at", "REAL"),
    ("settlement", "declared_records", "INTEGER"),
)

DEBIT_KINDS = ("sale",)
CREDIT_KINDS = ("void", "refund")


class Ledger:
    def __init__(self, path: str, *, clock: Callable[[], float] = time.time, synchronous: str = "NORMAL") -> None:
        """`synchronous`: NORMAL (WAL) keeps every committed transaction across a killed process, which
        is the host's contract; FULL also survives the machine losing power, at an fsync per commit."""
        synchronous = synchronous.upper()
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
        self._migrate()
        # two processes opening a new ledger at once (host and admin) agree on the first secret written
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('pan_secret', ?)", (os.urandom(32),))
        self._pan_secret = bytes(self._db.execute("SELECT value FROM meta WHERE key = 'pan_secret'").fetchone()[0])
        self._inserts: dict[tuple[str, ...], str] = {}  # column names -> INSERT INTO txn statement
        self._day = (-1, "")  # (epoch second, its day of the year): RRN prefixes formatted once a second

    def _migrate(self) -> None:
        for table, column, declaration in _MIGRATIONS:
            columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The ledger's connection, for readers (funds reports) that take one."""
        return self._db

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back when it raises.

        A COMMIT that fails is rolled back too, so the connection is never left inside a transaction
        (every later `tx` would fail) and the caller, seeing the error, never reports work as done.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def pan_hash(self, pan: str) -> str:
        """HMAC-SHA256 of the PAN under the ledger's key, hex (hmac.digest: the one-shot C path)."""
        return hmac.digest(self._pan_secret, pan.encode(), "sha256").hex()

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

    def sign_in_session(self, tid: str, mid: str, *, wrapped_keys: bytes, key_mode: str, firmware: str,
                        at: float, device_info: str | None) -> str:
        """Mark the terminal signed in with new (wrapped) keys, creating its session at batch 000001 when
        it has none, and return its batch: one upsert instead of a look, an insert and an update.
        Device information replaces what is stored only when the terminal sent some."""
        rows = self._db.execute(
            "INSERT INTO session (tid, mid, signed_in, wrapped_keys, key_mode, firmware, signed_in_at, device_info) "
            "VALUES (?, ?, 1, ?, ?, ?, ?, ?) ON CONFLICT (tid) DO UPDATE SET signed_in = 1, "
            "wrapped_keys = excluded.wrapped_keys, key_mode = excluded.key_mode, firmware = excluded.firmware, "
            "signed_in_at = excluded.signed_in_at, device_info = COALESCE(excluded.device_info, device_info) "
            "RETURNING batch", (tid, mid, wrapped_keys, key_mode, firmware, at, device_info)).fetchall()
        return str(rows[0][0])

    # transactions -------------------------------------------------------------------------------
    def seen(self, tid: str, batch: str, stan: str) -> bool:
        """Whether this terminal's batch already used the STAN: a transaction, or a reversal of an
        unknown original (so a late original after its reversal is a duplicate). One statement: the
        second table is probed only when the first has no row."""
        return self.one("SELECT 1 FROM txn WHERE tid = ? AND batch = ? AND stan = ? UNION ALL "
                        "SELECT 1 FROM reversed_unknown WHERE tid = ? AND batch = ? AND stan = ? LIMIT 1",
                        (tid, batch, stan, tid, batch, stan)) is not None

    def txn(self, tid: str, batch: str, stan: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM txn WHERE tid = ? AND batch = ? AND stan = ?", (tid, batch, stan))

    def next_rrn(self) -> str:
        """A retrieval reference number unique for this host, in a transaction of its own."""
        with self.tx() as db:
            return self.take_rrn(db)

    def take_rrn(self, db: sqlite3.Connection) -> str:
        """A retrieval reference number, inside the caller's transaction: day-of-year prefix + a durable
        counter (1 to 99,999,999, then 1 again).

        The counter moves with the work it numbers - one commit per request instead of two - and a
        request rolled back gives its number back. One upsert reads and advances it (the first RRN of
        a new ledger is 1); fetchall runs the statement to its end so the COMMIT finds it finished.
        """
        value = db.execute("INSERT INTO meta (key, value) VALUES ('rrn', '1') ON CONFLICT (key) DO UPDATE "
                           "SET value = CAST(CAST(value AS INTEGER) % 99999999 + 1 AS TEXT) RETURNING value"
                           ).fetchall()[0][0]
        now = self.clock()
        if int(now) != self._day[0]:
            self._day = (int(now), time.strftime("%j", time.localtime(now)))
        return f"{self._day[1]:0>3}{0:01d}{int(value):08d}"

    def insert_txn(self, db: sqlite3.Connection, **values: Any) -> int:
        pan = values.pop("pan", None)
        values["pan_masked"] = mask_pan(pan) if pan else None
        values["pan_hash"] = self.pan_hash(pan) if pan else None
        values.setdefault("created_at", self.clock())
        names = tuple(values)
        sql = self._inserts.get(names)
        if sql is None:  # callers use a handful of column sets: build each statement once
            sql = self._inserts[names] = (f"INSERT INTO txn ({', '.join(names)}) "
                                          f"VALUES ({', '.join('?' for _ in names)})")
        cur = db.execute(sql, tuple(values.values()))
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

    # reversals ----------------------------------------------------------------------------------
    def record_reversal(self, db: sqlite3.Connection, *, tid: str, batch: str, stan: str, reason: str | None,
                        amount_fen: int, outcome: str, txn_id: int | None) -> int:
        """Note a 0400 received; returns how many times this reversal has now been received."""
        now = self.clock()
        row = db.execute("SELECT received FROM reversal WHERE tid = ? AND batch = ? AND stan = ?",
                         (tid, batch, stan)).fetchone()
        if row is None:
            db.execute("INSERT INTO reversal (tid, batch, stan, reason, amount_fen, outcome, txn_id, first_at, "
                       "last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (tid, batch, stan, reason, amount_fen, outcome, txn_id, now, now))
            return 1
        db.execute("UPDATE reversal SET received = received + 1, last_at = ? WHERE tid = ? AND batch = ? AND stan = ?",
                   (now, tid, batch, stan))
        return int(row[0]) + 1

    def reversals(self, tid: str | None = None) -> list[sqlite3.Row]:
        where = " WHERE tid = ?" if tid else ""
        return self.query(f"SELECT * FROM reversal{where} ORDER BY first_at", (tid,) if tid else ())

    # settlement and batch upload ----------------------------------------------------------------
    def settlement(self, tid: str, batch: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM settlement WHERE tid = ? AND batch = ?", (tid, batch))

    def add_upload(self, db: sqlite3.Connection, *, tid: str, batch: str, stan: str, amount_fen: int,
                   organisation: str, pan: str) -> bool:
        """One batch-upload record; a record sent again (same STAN) replaces the first. True when new."""
        existed = db.execute("SELECT 1 FROM batch_upload WHERE tid = ? AND batch = ? AND stan = ?",
                             (tid, batch, stan)).fetchone() is not None
        db.execute("INSERT OR REPLACE INTO batch_upload (tid, batch, stan, amount_fen, organisation, pan_masked, "
                   "pan_hash, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (tid, batch, stan, amount_fen, organisation, mask_pan(pan) if pan else None,
                    self.pan_hash(pan) if pan else None, self.clock()))
        return not existed

    def uploads(self, tid: str, batch: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM batch_upload WHERE tid = ? AND batch = ? ORDER BY stan", (tid, batch))

    # registry snapshot: lets `possim host admin` work from the ledger file alone -------------------
    def sync_merchants(self, merchants: Any) -> None:
        """Record the registry's merchants (id, name, settlement type) as the host starts."""
        with self.tx() as db:
            for m in merchants:
                db.execute("INSERT OR REPLACE INTO merchant (mid, name, settlement_type, updated_at) "
                           "VALUES (?, ?, ?, ?)", (m.mid, m.name, m.settlement_type, self.clock()))

    def merchants(self) -> dict[str, sqlite3.Row]:
        return {r["mid"]: r for r in self.query("SELECT * FROM merchant")}
