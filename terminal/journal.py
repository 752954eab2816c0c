"""The terminal's journal: its durable memory, in SQLite (WAL, synchronous=FULL).

Write-ahead (DESIGN principle 4): a financial request's reversal is stored in the same SQLite
transaction as the pending transaction, before the request is sent; a settlement or sign-off is
stored as an *intent* before its message leaves. A process killed at any instant and restarted on
the same file therefore knows exactly what may have reached the host, and the terminal finishes
or undoes it: nothing charged twice, nothing approved lost.

Card data: the PAN (batch upload needs it) is stored only encrypted (AES-GCM under a key derived
from the terminal's key, the row's identity as associated data), beside its masked form.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.message import mask_pan

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    tid TEXT NOT NULL, mid TEXT NOT NULL, merchant_name TEXT, firmware TEXT, settlement_type TEXT,
    signed_in INTEGER NOT NULL DEFAULT 0, signed_in_at REAL, wrapped_keys BLOB, key_mode TEXT,
    stan INTEGER NOT NULL DEFAULT 0, batch TEXT NOT NULL DEFAULT '000001'
);
CREATE TABLE IF NOT EXISTS txn (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, stan TEXT NOT NULL, batch TEXT NOT NULL, amount_fen INTEGER NOT NULL,
    pan_masked TEXT NOT NULL, pan_enc BLOB NOT NULL, entry_mode TEXT, original_stan TEXT,
    status TEXT NOT NULL, rc TEXT, rrn TEXT, auth_code TEXT, host_date TEXT, host_time TEXT,
    refunded_fen INTEGER NOT NULL DEFAULT 0, signature TEXT NOT NULL DEFAULT 'not_required',
    signature_image BLOB, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (batch, stan)
);
CREATE TABLE IF NOT EXISTS reversal (
    txn_id INTEGER PRIMARY KEY REFERENCES txn(id),
    stan TEXT NOT NULL, batch TEXT NOT NULL, fields TEXT NOT NULL, reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_attempt REAL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receipt (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, copy TEXT, stan TEXT, batch TEXT, text TEXT NOT NULL,
    printed INTEGER NOT NULL DEFAULT 0, reprints INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS intent (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, batch TEXT NOT NULL, data TEXT NOT NULL, step TEXT NOT NULL DEFAULT 'begun',
    open INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settlement (
    batch TEXT PRIMARY KEY, result TEXT NOT NULL, terminal_totals TEXT NOT NULL, host_totals TEXT,
    uploaded INTEGER NOT NULL DEFAULT 0, settled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""


class JournalError(Exception):
    """The journal cannot be used: not a database, a newer schema, disk full. Names the file."""


@dataclass(frozen=True)
class Transaction:
    id: int
    kind: str
    stan: str
    batch: str
    amount_fen: int
    pan_masked: str
    entry_mode: str | None
    original_stan: str | None
    status: str  # pending | approved | declined | reversal_pending | reversed | voided
    rc: str | None
    rrn: str | None
    auth_code: str | None
    host_date: str | None
    host_time: str | None
    refunded_fen: int
    signature: str  # not_required | signed | unsigned | uploaded
    expiry: str | None = None


@dataclass(frozen=True)
class PendingReversal:
    stan: str
    batch: str
    fields: dict[int, str | bytes]
    reason: str
    attempts: int


@dataclass(frozen=True)
class StoredReceipt:
    id: int
    kind: str
    copy: str | None
    stan: str | None
    batch: str | None
    text: str
    printed: bool
    reprints: int


@dataclass(frozen=True)
class Intent:
    id: int
    kind: str
    batch: str
    data: dict[str, Any]
    step: str


@dataclass(frozen=True)
class SettlementRecord:
    batch: str
    result: str
    terminal_totals: str
    host_totals: str | None
    uploaded: int


@dataclass(frozen=True)
class BatchItem:
    stan: str
    pan: str
    amount_fen: int
    kind: str


#: Binary fields of a stored reversal (kept as hex in JSON).
_BINARY_FIELDS = {52, 55, 62, 64}


class Journal:
    """Open with `Journal.open(path, tid=..., mid=..., pan_key=..., clock=...)`."""

    def __init__(self, conn: sqlite3.Connection, path: str, *, tid: str, pan_key: bytes,
                 clock: Callable[[], float]) -> None:
        self._db = conn
        self.path = path
        self.tid = tid
        self._clock = clock
        self._aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                 info=b"possim journal PAN").derive(pan_key))

    @classmethod
    def open(cls, path: str | Path, *, tid: str, mid: str, pan_key: bytes,
             clock: Callable[[], float] = time.time) -> Journal:
        path = str(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"journal {path} has schema version {version}; this possim knows {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = conn.execute("SELECT tid FROM identity WHERE id = 1").fetchone()
            if row is None:
                conn.execute("INSERT INTO identity (id, tid, mid) VALUES (1, ?, ?)", (tid, mid))
            elif row[0] != tid:
                raise JournalError(f"journal {path} belongs to terminal {row[0]}, not {tid}")
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} is not usable: {exc}") from None
        conn.row_factory = sqlite3.Row
        return cls(conn, path, tid=tid, pan_key=pan_key, clock=clock)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable step; a full disk becomes a JournalError and nothing is half-written."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise JournalError(f"journal {self.path}: disk full; the last step was not recorded") from None
            raise JournalError(f"journal {self.path}: {exc}") from None

    # ------------------------------------------------------------------------------------------
    # identity, counters
    # ------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        row = self._db.execute("SELECT * FROM identity WHERE id = 1").fetchone()
        return dict(row)

    def set_identity(self, **values: Any) -> None:
        allowed = {"mid", "merchant_name", "firmware", "settlement_type"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown identity fields: {', '.join(sorted(unknown))}")
        if not values:
            return
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE identity SET {assignments} WHERE id = 1", tuple(values.values()))

    @property
    def batch(self) -> str:
        return str(self._db.execute("SELECT batch FROM identity WHERE id = 1").fetchone()[0])

    @property
    def stan(self) -> str:
        """The last STAN issued (000000 before the first)."""
        return f"{self._db.execute('SELECT stan FROM identity WHERE id = 1').fetchone()[0]:06d}"

    def next_stan(self) -> str:
        """A new STAN, durable before it is used: never reused, even across a crash."""
        with self._tx() as db:
            current = db.execute("SELECT stan FROM identity WHERE id = 1").fetchone()[0]
            value = current % 999_999 + 1
            db.execute("UPDATE identity SET stan = ? WHERE id = 1", (value,))
        return f"{value:06d}"

    def set_batch(self, batch: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE identity SET batch = ? WHERE id = 1", (batch,))

    def advance_batch(self) -> str:
        with self._tx() as db:
            current = int(db.execute("SELECT batch FROM identity WHERE id = 1").fetchone()[0])
            value = f"{current % 999_999 + 1:06d}"
            db.execute("UPDATE identity SET batch = ? WHERE id = 1", (value,))
        return value

    def set_signed_in(self, *, wrapped_keys: bytes, key_mode: str, batch: str) -> None:
        """Keys are stored as the host sent them: still wrapped under the TMK, never in clear."""
        with self._tx() as db:
            db.execute("UPDATE identity SET signed_in = 1, signed_in_at = ?, wrapped_keys = ?, key_mode = ?, "
                       "batch = ? WHERE id = 1", (self._clock(), wrapped_keys, key_mode, batch))
            self._event(db, "signed_in", {"batch": batch})

    def set_signed_out(self) -> None:
        with self._tx() as db:
            db.execute("UPDATE identity SET signed_in = 0, wrapped_keys = NULL WHERE id = 1")
            self._event(db, "signed_out", {})

    # ------------------------------------------------------------------------------------------
    # card data
    # ------------------------------------------------------------------------------------------
    def _aad(self, stan: str, batch: str) -> bytes:
        return f"{self.tid}|{batch}|{stan}".encode()

    def _seal(self, pan: str, expiry: str, stan: str, batch: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, f"{pan}|{expiry}".encode(), self._aad(stan, batch))

    def _open(self, blob: bytes, stan: str, batch: str) -> tuple[str, str]:
        try:
            clear = self._aead.decrypt(blob[:12], blob[12:], self._aad(stan, batch)).decode()
        except InvalidTag:
            raise JournalError(f"journal {self.path}: card data of STAN {stan} does not decrypt "
                               "(wrong terminal key?)") from None
        pan, _, expiry = clear.partition("|")
        return pan, expiry

    def pan_for(self, txn: Transaction) -> str:
        row = self._db.execute("SELECT pan_enc FROM txn WHERE id = ?", (txn.id,)).fetchone()
        return self._open(row[0], txn.stan, txn.batch)[0]

    # ------------------------------------------------------------------------------------------
    # transactions and reversals
    # ------------------------------------------------------------------------------------------
    def record_pending(self, *, kind: str, stan: str, batch: str, amount_fen: int, pan: str,
                       entry_mode: str | None = None, original_stan: str | None = None, expiry: str = "",
                       reversal: dict[str, str] | None = None, reason: str = "98") -> int:
        """The transaction about to be sent, and its reversal, in one durable step (write-ahead)."""
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO txn (kind, stan, batch, amount_fen, pan_masked, pan_enc, entry_mode, original_stan, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (kind, stan, batch, amount_fen, mask_pan(pan), self._seal(pan, expiry, stan, batch), entry_mode,
                 original_stan, now, now))
            txn_id = int(cur.lastrowid or 0)
            if reversal is not None:
                db.execute("INSERT INTO reversal (txn_id, stan, batch, fields, reason, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (txn_id, stan, batch, json.dumps(reversal), reason, now))
            self._event(db, "txn.pending", {"kind": kind, "stan": stan, "amount": amount_fen,
                                            "pan": mask_pan(pan)})
        return txn_id

    def record_reply(self, *, stan: str, batch: str, rc: str, approved: bool, rrn: str = "", auth_code: str = "",
                     host_date: str = "", host_time: str = "") -> None:
        """A verified reply: the transaction's outcome recorded and its reversal cleared, atomically."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT id, kind, original_stan, amount_fen FROM txn WHERE batch = ? AND stan = ?",
                             (batch, stan)).fetchone()
            if row is None:
                raise JournalError(f"journal {self.path}: no pending transaction {batch}/{stan}")
            db.execute("UPDATE txn SET status = ?, rc = ?, rrn = ?, auth_code = ?, host_date = ?, host_time = ?, "
                       "updated_at = ? WHERE id = ?",
                       ("approved" if approved else "declined", rc, rrn, auth_code, host_date, host_time, now,
                        row["id"]))
            db.execute("DELETE FROM reversal WHERE txn_id = ?", (row["id"],))
            if approved and row["original_stan"]:
                self._apply_to_original(db, row["kind"], row["original_stan"], row["amount_fen"], now)
            self._event(db, "txn.reply", {"stan": stan, "rc": rc, "approved": approved})

    def _apply_to_original(self, db: sqlite3.Connection, kind: str, original_stan: str, amount: int,
                           now: float) -> None:
        original = db.execute("SELECT id FROM txn WHERE stan = ? AND kind = 'sale' ORDER BY id DESC LIMIT 1",
                              (original_stan,)).fetchone()
        if original is None:
            return
        if kind == "void":
            db.execute("UPDATE txn SET status = 'voided', updated_at = ? WHERE id = ?", (now, original["id"]))
        elif kind == "refund":
            db.execute("UPDATE txn SET refunded_fen = refunded_fen + ?, updated_at = ? WHERE id = ?",
                       (amount, now, original["id"]))

    def record_refusal(self, *, stan: str, batch: str, rc: str) -> None:
        """An unauthenticated refusal (A0 / 30 without MAC): nothing charged, reversal kept (cup-pos)."""
        with self._tx() as db:
            db.execute("UPDATE txn SET status = 'reversal_pending', rc = ?, updated_at = ? WHERE batch = ? AND "
                       "stan = ?", (rc, self._clock(), batch, stan))
            self._event(db, "txn.refused", {"stan": stan, "rc": rc})

    def set_reversal_reason(self, stan: str, batch: str, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE reversal SET reason = ? WHERE batch = ? AND stan = ?", (reason, batch, stan))
            fields_row = db.execute("SELECT fields FROM reversal WHERE batch = ? AND stan = ?",
                                    (batch, stan)).fetchone()
            if fields_row is not None:
                fields = json.loads(fields_row[0])
                fields["39"] = reason
                db.execute("UPDATE reversal SET fields = ? WHERE batch = ? AND stan = ?",
                           (json.dumps(fields), batch, stan))
            db.execute("UPDATE txn SET status = 'reversal_pending', updated_at = ? WHERE batch = ? AND stan = ? "
                       "AND status = 'pending'", (self._clock(), batch, stan))

    def pending_reversals(self) -> list[PendingReversal]:
        """Reversals owed to the host, oldest first, including those of requests still marked pending.

        A transaction left `pending` by a crash is unanswered by definition: its reversal is due.
        """
        rows = self._db.execute("SELECT stan, batch, fields, reason, attempts FROM reversal ORDER BY created_at, "
                                "txn_id").fetchall()
        out = []
        for row in rows:
            raw = json.loads(row["fields"])
            fields: dict[int, str | bytes] = {
                int(k): (bytes.fromhex(v) if int(k) in _BINARY_FIELDS else v) for k, v in raw.items()}
            fields[39] = row["reason"]
            out.append(PendingReversal(row["stan"], row["batch"], fields, row["reason"], row["attempts"]))
        return out

    def mark_reversal_sent(self, stan: str, batch: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE reversal SET attempts = attempts + 1, last_attempt = ? WHERE batch = ? AND stan = ?",
                       (self._clock(), batch, stan))

    def clear_reversal(self, stan: str, batch: str, rc: str) -> None:
        """The host answered the reversal: the original counts nowhere any more."""
        with self._tx() as db:
            row = db.execute("SELECT txn_id FROM reversal WHERE batch = ? AND stan = ?", (batch, stan)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM reversal WHERE txn_id = ?", (row[0],))
            db.execute("UPDATE txn SET status = 'reversed', updated_at = ? WHERE id = ?", (self._clock(), row[0]))
            self._event(db, "reversal.cleared", {"stan": stan, "rc": rc})

    def _txn(self, row: sqlite3.Row | None) -> Transaction | None:
        if row is None:
            return None
        return Transaction(row["id"], row["kind"], row["stan"], row["batch"], row["amount_fen"], row["pan_masked"],
                           row["entry_mode"], row["original_stan"], row["status"], row["rc"], row["rrn"],
                           row["auth_code"], row["host_date"], row["host_time"], row["refunded_fen"],
                           row["signature"], self._open(row["pan_enc"], row["stan"], row["batch"])[1])

    def transaction(self, stan: str, batch: str) -> Transaction | None:
        return self._txn(self._db.execute("SELECT * FROM txn WHERE batch = ? AND stan = ?",
                                          (batch, stan)).fetchone())

    def find_transaction(self, stan: str) -> Transaction | None:
        """The most recent transaction with this STAN (STANs are unique over a long window)."""
        return self._txn(self._db.execute("SELECT * FROM txn WHERE stan = ? ORDER BY id DESC LIMIT 1",
                                          (stan,)).fetchone())

    def transactions(self, batch: str | None = None) -> list[Transaction]:
        query = "SELECT * FROM txn" + (" WHERE batch = ?" if batch else "") + " ORDER BY id"
        rows = self._db.execute(query, (batch,) if batch else ()).fetchall()
        return [t for t in (self._txn(r) for r in rows) if t is not None]

    def set_signature(self, stan: str, batch: str, status: str, *, image: bytes | None = None) -> None:
        with self._tx() as db:
            if image is not None:
                db.execute("UPDATE txn SET signature = ?, signature_image = ? WHERE batch = ? AND stan = ?",
                           (status, image, batch, stan))
            else:
                db.execute("UPDATE txn SET signature = ? WHERE batch = ? AND stan = ?", (status, batch, stan))

    def unsigned_stans(self, batch: str) -> list[str]:
        # A voided sale needs no signature any more: only live approvals are owed one.
        rows = self._db.execute("SELECT stan FROM txn WHERE batch = ? AND signature = 'unsigned' AND status = "
                                "'approved' ORDER BY id", (batch,)).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------------------
    # batch
    # ------------------------------------------------------------------------------------------
    def batch_totals(self, batch: str) -> tuple[int, int, int, int]:
        """(debit amount, debit count, credit amount, credit count) per the cup-pos clarifications.

        A sale is a debit even when later voided; voids and refunds are credits; reversed,
        declined and unanswered transactions count nowhere.
        """
        rows = self._db.execute("SELECT kind, amount_fen FROM txn WHERE batch = ? AND status IN "
                                "('approved', 'voided') AND kind IN ('sale', 'void', 'refund')", (batch,)).fetchall()
        debit = [r["amount_fen"] for r in rows if r["kind"] == "sale"]
        credit = [r["amount_fen"] for r in rows if r["kind"] != "sale"]
        return sum(debit), len(debit), sum(credit), len(credit)

    def batch_records(self, batch: str) -> list[BatchItem]:
        rows = self._db.execute("SELECT * FROM txn WHERE batch = ? AND status IN ('approved', 'voided') AND kind IN "
                                "('sale', 'void', 'refund') ORDER BY id", (batch,)).fetchall()
        return [BatchItem(r["stan"], self._open(r["pan_enc"], r["stan"], r["batch"])[0], r["amount_fen"], r["kind"])
                for r in rows]

    # ------------------------------------------------------------------------------------------
    # receipts
    # ------------------------------------------------------------------------------------------
    def store_receipt(self, kind: str, text: str, *, stan: str | None, batch: str | None, copy: str | None,
                      printed: bool = False) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO receipt (kind, copy, stan, batch, text, printed, created_at) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?)", (kind, copy, stan, batch, text, int(printed), self._clock()))

    def mark_printed(self, kind: str, *, stan: str | None, batch: str | None, copy: str | None) -> None:
        with self._tx() as db:
            row = db.execute("SELECT id FROM receipt WHERE kind = ? AND stan IS ? AND batch IS ? AND copy IS ? "
                             "ORDER BY id DESC LIMIT 1", (kind, stan, batch, copy)).fetchone()
            if row is not None:
                db.execute("UPDATE receipt SET printed = 1 WHERE id = ?", (row[0],))

    def _receipt(self, row: sqlite3.Row | None) -> StoredReceipt | None:
        if row is None:
            return None
        return StoredReceipt(row["id"], row["kind"], row["copy"], row["stan"], row["batch"], row["text"],
                             bool(row["printed"]), row["reprints"])

    def last_receipt(self) -> StoredReceipt | None:
        """The last receipt not yet printed if any (the one the customer is owed), else the last one."""
        row = self._db.execute("SELECT * FROM receipt WHERE printed = 0 ORDER BY id LIMIT 1").fetchone()
        return self._receipt(row or self._db.execute("SELECT * FROM receipt ORDER BY id DESC LIMIT 1").fetchone())

    def receipt_for(self, stan: str) -> StoredReceipt | None:
        row = self._db.execute("SELECT * FROM receipt WHERE stan = ? ORDER BY printed, id LIMIT 1",
                               (stan,)).fetchone()
        return self._receipt(row)

    def pending_receipts(self) -> list[StoredReceipt]:
        rows = self._db.execute("SELECT * FROM receipt WHERE printed = 0 ORDER BY id").fetchall()
        return [r for r in (self._receipt(row) for row in rows) if r is not None]

    def mark_reprinted(self, receipt: StoredReceipt) -> None:
        with self._tx() as db:
            db.execute("UPDATE receipt SET printed = 1, reprints = reprints + 1 WHERE id = ?", (receipt.id,))

    # ------------------------------------------------------------------------------------------
    # intents (settlement, sign-off) and settlements
    # ------------------------------------------------------------------------------------------
    def begin_intent(self, kind: str, batch: str, data: dict[str, Any]) -> Intent:
        existing = self.open_intent(kind, batch)
        if existing is not None:
            return existing
        now = self._clock()
        with self._tx() as db:
            cur = db.execute("INSERT INTO intent (kind, batch, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                             (kind, batch, json.dumps(data), now, now))
            self._event(db, f"intent.{kind}", {"batch": batch})
        return Intent(int(cur.lastrowid or 0), kind, batch, data, "begun")

    def open_intent(self, kind: str, batch: str | None = None) -> Intent | None:
        query = "SELECT * FROM intent WHERE open = 1 AND kind = ?" + (" AND batch = ?" if batch else "")
        row = self._db.execute(query + " ORDER BY id LIMIT 1", (kind, batch) if batch else (kind,)).fetchone()
        return None if row is None else Intent(row["id"], row["kind"], row["batch"], json.loads(row["data"]),
                                               row["step"])

    def open_intents(self) -> list[Intent]:
        rows = self._db.execute("SELECT * FROM intent WHERE open = 1 ORDER BY id").fetchall()
        return [Intent(r["id"], r["kind"], r["batch"], json.loads(r["data"]), r["step"]) for r in rows]

    def intent_step(self, intent: Intent, step: str, data: dict[str, Any] | None = None) -> None:
        with self._tx() as db:
            merged = {**intent.data, **(data or {})}
            db.execute("UPDATE intent SET step = ?, data = ?, updated_at = ? WHERE id = ?",
                       (step, json.dumps(merged), self._clock(), intent.id))

    def complete_intent(self, intent: Intent) -> None:
        with self._tx() as db:
            db.execute("UPDATE intent SET open = 0, step = 'done', updated_at = ? WHERE id = ?",
                       (self._clock(), intent.id))

    def record_settlement(self, batch: str, *, result: str, terminal_totals: str, host_totals: str | None,
                          uploaded: int) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settlement (batch, result, terminal_totals, host_totals, uploaded, "
                       "settled_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (batch, result, terminal_totals, host_totals, uploaded, self._clock()))
            self._event(db, "settled", {"batch": batch, "result": result, "uploaded": uploaded})

    def last_settlement(self) -> SettlementRecord | None:
        row = self._db.execute("SELECT * FROM settlement ORDER BY settled_at DESC, batch DESC LIMIT 1").fetchone()
        return None if row is None else SettlementRecord(row["batch"], row["result"], row["terminal_totals"],
                                                         row["host_totals"], row["uploaded"])

    def settlements(self) -> list[SettlementRecord]:
        rows = self._db.execute("SELECT * FROM settlement ORDER BY batch").fetchall()
        return [SettlementRecord(r["batch"], r["result"], r["terminal_totals"], r["host_totals"], r["uploaded"])
                for r in rows]

    # ------------------------------------------------------------------------------------------
    # events and summary
    # ------------------------------------------------------------------------------------------
    def _event(self, db: sqlite3.Connection, kind: str, detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO event (at, kind, detail) VALUES (?, ?, ?)",
                   (self._clock(), kind, json.dumps(detail, sort_keys=True)))

    def event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Record an event; callers pass masked card data only (the journal never sees a clear PAN here)."""
        with self._tx() as db:
            self._event(db, kind, detail or {})

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT at, kind, detail FROM event" + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(query, (kind, limit) if kind else (limit,)).fetchall()
        return [{"at": r["at"], "kind": r["kind"], **json.loads(r["detail"])} for r in reversed(rows)]

    def summary(self) -> dict[str, Any]:
        ident = self.identity()
        return {
            "signed_in": bool(ident["signed_in"]),
            "pending_reversals": self._db.execute("SELECT COUNT(*) FROM reversal").fetchone()[0],
            "open_intents": [i.kind for i in self.open_intents()],
            "unsigned": len(self.unsigned_stans(ident["batch"])),
            "pending_receipts": self._db.execute("SELECT COUNT(*) FROM receipt WHERE printed = 0").fetchone()[0],
            "transactions": self._db.execute("SELECT COUNT(*) FROM txn WHERE batch = ?",
                                             (ident["batch"],)).fetchone()[0],
        }
