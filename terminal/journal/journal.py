"""The Journal class, the file backend: every state change is one SQLite transaction, committed with
synchronous=FULL. (":memory:" opens a MemoryJournal instead: see memory.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from protocol.message import mask_pan

from . import schema
from .memory import MemoryJournal
from .records import (
    COUNTED_STATUSES,
    BatchItem,
    Intent,
    JournalError,
    JournalFull,
    PendingReversal,
    SettlementRecord,
    SettlementReport,
    StoredReceipt,
    Transaction,
    UnsignedItem,
)
from .rules import (
    LIVE_STATUSES,
    MAX_EVENTS,
    OWED_SIGNATURES,
    REVERSED,
    JournalCommon,
    advance,
    check_identity,
    check_intent,
    check_pending,
    check_reason,
    check_signature,
    check_signed_in,
    check_slips,
    event_limit,
    event_out,
    mask_receipt,
    next_batch,
    normalise_fields,
    not_processed,
    opening,
    receipt_limit,
    reversal_fields,
    six,
    sorted_json,
)
from .vault import Vault, mask_value

#: UPDATE ... RETURNING (SQLite 3.35): a STAN taken in one statement.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class Journal(JournalCommon):
    """The terminal's durable memory. Open with `Journal.open(path, tid=..., mid=..., pan_key=..., clock=...)`.

    Calls are synchronous and short (SQLite on local disk); each state change is one transaction, so a
    process killed at any instant leaves the journal as it was after the last call that returned.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, *, tid: str, vault: Vault,
                 clock: Callable[[], float]) -> None:
        self._db = conn
        self.path = path
        self.tid = tid
        self._vault = vault
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        row = conn.execute("SELECT mid FROM identity WHERE id = 1").fetchone()
        self._keep = frozenset({row[0]}) if row else frozenset()  # our own MID is not a card number

    # ------------------------------------------------------------------------------------------
    # opening, closing, transactions
    # ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, tid: str, mid: str, pan_key: bytes,
             clock: Callable[[], float] = time.time, keep_batches: int | None = None,
             max_events: int | None = None) -> Journal | MemoryJournal:
        """Open (or create) the journal at `path`; ":memory:" gives a `MemoryJournal` (the same calls and
        answers, in process memory: load runs, fleets, tests).

        `keep_batches` and `max_events` bound a memory journal (see `MemoryJournal.keep_batches`); a file
        keeps every batch and prunes events itself, so for a file they are a ValueError.

        Refuses, with a JournalError naming the file: a file that is not SQLite, an SQLite file that is
        not a terminal journal, a newer schema, another terminal's journal, a different card-data key.
        """
        path = str(path)
        if path == ":memory:":
            return MemoryJournal.open(path, tid=tid, mid=mid, pan_key=pan_key, clock=clock, keep_batches=keep_batches,
                                      max_events=max_events)
        if keep_batches is not None or max_events is not None:
            raise ValueError(f"keep_batches and max_events bound a journal in memory, not the file {path}")
        vault = opening(tid, mid, pan_key)
        if not os.path.exists(path):
            try:  # card data and wrapped keys live here: readable by the owner only
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise JournalError(f"journal {path} cannot be created: {exc.strerror}") from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            conn.execute(f"PRAGMA page_size={schema.PAGE_SIZE}")  # takes effect only on a new file
            conn.execute(f"PRAGMA cache_size=-{schema.CACHE_KIB}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # deleted card data does not stay on disk
            conn.execute("PRAGMA foreign_keys=OFF")  # a migration rebuilds tables
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise JournalError(f"journal {path} is damaged: {'; '.join(problems)}")
            if cls._prepare(conn, path, tid=tid, mid=mid, vault=vault, now=clock()):
                conn.execute("VACUUM")  # no page of the old layout (clear reversal fields) survives
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA foreign_keys=ON")
        except JournalError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise JournalError(f"journal {path} is not usable: {exc}") from None
        conn.row_factory = sqlite3.Row
        return cls(conn, path, tid=tid, vault=vault, clock=clock)

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: str, *, tid: str, mid: str, vault: Vault, now: float) -> bool:
        """Create, check or migrate the schema in one transaction; True when a migration ran."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = schema.tables(conn)
            version = schema.recorded_version(conn)
            migrated = False
            if version > schema.SCHEMA_VERSION:
                raise JournalError(f"journal {path} has schema version {version}, newer than this possim "
                                   f"understands ({schema.SCHEMA_VERSION}); use a newer possim")
            if version == 0:
                if found:
                    raise JournalError(f"journal {path} is an SQLite database but not a possim terminal journal "
                                       f"(it holds tables {', '.join(sorted(found))})")
                schema.create(conn, now)
            elif not found >= schema.JOURNAL_MARKERS:
                raise JournalError(f"journal {path} is not a possim terminal journal (schema version {version} "
                                   f"but tables {', '.join(sorted(schema.JOURNAL_MARKERS - found))} missing)")
            row = conn.execute("SELECT tid FROM identity WHERE id = 1").fetchone()
            if row is not None and row[0] != tid:
                raise JournalError(f"journal {path} belongs to terminal {row[0]}, not {tid}")
            if version == 1:
                Journal._check_v1_key(conn, path, vault)
                try:
                    schema.migrate_1_to_2(conn, vault, now)
                except sqlite3.Error as exc:
                    raise JournalError(f"journal {path}: cannot migrate schema 1 to "
                                       f"{schema.SCHEMA_VERSION}: {exc}") from None
                migrated = True
            if row is None:
                conn.execute("INSERT INTO identity (id, tid, mid, key_check) VALUES (1, ?, ?, ?)",
                             (tid, mid, vault.key_check))
            else:
                stored = conn.execute("SELECT key_check FROM identity WHERE id = 1").fetchone()[0]
                if stored is None:
                    conn.execute("UPDATE identity SET key_check = ? WHERE id = 1", (vault.key_check,))
                elif not vault.matches(stored):
                    raise JournalError(f"journal {path} was written under another terminal key: its card data "
                                       "would not decrypt (check the TMK configured for this terminal)")
            conn.execute("COMMIT")
            return migrated
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _check_v1_key(conn: sqlite3.Connection, path: str, vault: Vault) -> None:
        row = conn.execute("SELECT stan, batch, pan_enc FROM txn ORDER BY id LIMIT 1").fetchone()
        if row is not None and vault.open(row[2], stan=row[0], batch=row[1]) is None:
            raise JournalError(f"journal {path} was written under another terminal key: its card data would not "
                               "decrypt (check the TMK configured for this terminal)")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def _error(self, exc: sqlite3.Error) -> JournalError:
        text = str(exc)
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "full" in text:
            return JournalFull(f"journal {self.path}: disk full ({text}); this step was not recorded, "
                               "everything recorded before it is intact")
        if isinstance(exc, sqlite3.ProgrammingError) and self._closed:
            return JournalError(f"journal {self.path} is closed")
        if "locked" in text or "busy" in text:
            return JournalError(f"journal {self.path} is busy: another process holds it ({text})")
        return JournalError(f"journal {self.path}: {text}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable step: all of it is committed, or (disk full, any error) none of it."""
        with self._lock:
            self._check_open()
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise

    @contextmanager
    def _autocommit(self) -> Iterator[sqlite3.Connection]:
        """A step that is one writing statement: SQLite makes it atomic and durable on its own
        (autocommit), so it needs no BEGIN/COMMIT of ours - a third of the statements of a sale."""
        with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _write1(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._autocommit() as db:
            return db.execute(sql, params)

    def _q(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _q1(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        rows = self._q(sql, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------------------------------------
    # identity, counters
    # ------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The terminal row: tid, mid, merchant_name, firmware, settlement_type, operator, signed_in (0/1),
        signed_in_at, signed_out_at, last_activity_at, wrapped_keys (as field 62 brought them), key_mode,
        stan (int), batch."""
        row = self._q1("SELECT * FROM identity WHERE id = 1")
        assert row is not None
        ident = dict(row)
        ident.pop("key_check", None)
        return ident

    def set_identity(self, **values: Any) -> None:
        """Update mid, merchant_name, firmware, settlement_type and/or operator."""
        check_identity(values)
        if not values:
            return
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE identity SET {assignments} WHERE id = 1", tuple(values.values()))
        if values.get("mid"):
            self._keep = frozenset({values["mid"]})

    def touch(self) -> None:
        """Record activity now (the idle auto sign-off reads `last_activity_at`)."""
        with self._tx() as db:
            db.execute("UPDATE identity SET last_activity_at = ? WHERE id = 1", (self._clock(),))

    @property
    def batch(self) -> str:
        """The current batch number (6 digits)."""
        row = self._q1("SELECT batch FROM identity WHERE id = 1")
        assert row is not None
        return str(row[0])

    @property
    def stan(self) -> str:
        """The last STAN issued ("000000" before the first)."""
        row = self._q1("SELECT stan FROM identity WHERE id = 1")
        assert row is not None
        return f"{row[0]:06d}"

    def next_stan(self) -> str:
        """A new STAN, committed before it is returned: never reused, even across a crash.

        000001 .. 999999, then 000001 again.
        """
        if _RETURNING:
            row = self._write1("UPDATE identity SET stan = stan % 999999 + 1 WHERE id = 1 RETURNING stan").fetchone()
            return f"{row[0]:06d}"
        with self._tx() as db:
            current = db.execute("SELECT stan FROM identity WHERE id = 1").fetchone()[0]
            value = current % 999_999 + 1
            db.execute("UPDATE identity SET stan = ? WHERE id = 1", (value,))
        return f"{value:06d}"

    def set_batch(self, batch: str) -> None:
        """Adopt the batch number the host gave (sign-in 60.2)."""
        six(batch, "batch")
        with self._tx() as db:
            old = db.execute("SELECT batch FROM identity WHERE id = 1").fetchone()[0]
            if old != batch:
                db.execute("UPDATE identity SET batch = ? WHERE id = 1", (batch,))
                self._event(db, "batch.set", {"from": old, "to": batch})

    def advance_batch(self, settled_batch: str | None = None) -> str:
        """Move past a settled batch; returns the current batch afterwards. Safe to repeat.

        Advances only from a batch that has a settlement record, once: called again after a crash
        (the settlement resumed and recorded again) it changes nothing. With `settled_batch`, only that
        batch is advanced from. Advancing from a batch never settled is a JournalError.
        """
        with self._tx() as db:
            current = db.execute("SELECT batch FROM identity WHERE id = 1").fetchone()[0]
            target = current if settled_batch is None else six(settled_batch, "batch")
            settled = db.execute("SELECT 1 FROM settlement WHERE batch = ?", (current,)).fetchone() is not None
            last = db.execute("SELECT batch FROM settlement ORDER BY rowid DESC LIMIT 1").fetchone()
            value = advance(self.path, current, target, settled, None if last is None else last[0])
            if value is None:
                return current
            db.execute("UPDATE identity SET batch = ? WHERE id = 1", (value,))
            self._event(db, "batch.advanced", {"from": current, "to": value})
            return value

    def set_signed_in(self, *, wrapped_keys: bytes, key_mode: str, batch: str) -> None:
        """Signed in: the working keys exactly as field 62 brought them (still wrapped under the TMK, never
        in clear), the key mode and the host's batch, in one step."""
        check_signed_in(wrapped_keys, batch)
        now = self._clock()
        with self._tx() as db:
            db.execute("UPDATE identity SET signed_in = 1, signed_in_at = ?, last_activity_at = ?, wrapped_keys = ?, "
                       "key_mode = ?, batch = ? WHERE id = 1", (now, now, bytes(wrapped_keys), key_mode, batch))
            self._event(db, "signed_in", {"batch": batch, "key_mode": key_mode})

    def set_signed_out(self, *, completing: Intent | None = None) -> None:
        """Signed out: the working keys are forgotten. With `completing`, that sign-off intent is closed in
        the same step (so a crash cannot leave a signed-out terminal with its sign-off still open)."""
        now = self._clock()
        with self._tx() as db:
            db.execute("UPDATE identity SET signed_in = 0, signed_out_at = ?, last_activity_at = ?, "
                       "wrapped_keys = NULL WHERE id = 1", (now, now))
            if completing is not None:
                self._complete(db, completing.id, "done", now)
            self._event(db, "signed_out", {})

    # ------------------------------------------------------------------------------------------
    # card data
    # ------------------------------------------------------------------------------------------
    def _card(self, blob: bytes, stan: str, batch: str) -> tuple[str, str]:
        clear = self._vault.open(blob, stan=stan, batch=batch)
        if clear is None:
            raise JournalError(f"journal {self.path}: card data of STAN {stan} (batch {batch}) does not decrypt "
                               "(wrong terminal key, or the row was tampered with)")
        pan, _, expiry = clear.decode().partition("|")
        return pan, expiry

    def pan_for(self, txn: Transaction | int) -> str:
        """The clear PAN of a transaction (batch upload, void and refund need it). Never log it."""
        txn_id = txn if isinstance(txn, int) else txn.id
        row = self._q1("SELECT stan, batch, pan_enc FROM txn WHERE id = ?", (txn_id,))
        if row is None:
            raise JournalError(f"journal {self.path}: no transaction with id {txn_id}")
        return self._card(row["pan_enc"], row["stan"], row["batch"])[0]

    # ------------------------------------------------------------------------------------------
    # transactions and reversals
    # ------------------------------------------------------------------------------------------
    def record_pending(self, *, kind: str, stan: str, batch: str, amount_fen: int, pan: str, expiry: str = "",
                       entry_mode: str | None = None, original_stan: str | None = None,
                       original_batch: str | None = None, reversal: dict[Any, Any] | None = None,
                       reason: str = "98") -> int:
        """Write-ahead: the request about to be sent and its reversal (the 0400's fields), in one step.

        Call it after building the request and before sending it; if it raises, do not send. `reversal`
        None (the FM-13 fault switch) journals the transaction without protection. Returns the txn id.
        """
        check_pending(kind, stan, batch, amount_fen, pan, original_stan, original_batch, reason)
        sealed_fields = None
        if reversal is not None:
            fields = normalise_fields(reversal)
            sealed_fields = self._vault.seal(sorted_json(fields).encode(), stan=stan, batch=batch,
                                             purpose="reversal")
        sealed_card = self._vault.seal(f"{pan}|{expiry}".encode(), stan=stan, batch=batch)
        masked = mask_pan(pan)  # the row's and the event's
        now = self._clock()
        with self._tx() as db:
            try:  # UNIQUE (batch, stan) is the check: no lookup of our own
                cur = db.execute(
                    "INSERT INTO txn (kind, stan, batch, amount_fen, pan_masked, pan_enc, entry_mode, "
                    "original_stan, original_batch, status, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (kind, stan, batch, amount_fen, masked, sealed_card, entry_mode, original_stan,
                     original_batch, now, now))
            except sqlite3.IntegrityError:
                raise JournalError(f"journal {self.path}: STAN {stan} is already used in batch {batch}") from None
            txn_id = int(cur.lastrowid or 0)
            if sealed_fields is not None:
                db.execute("INSERT INTO reversal (txn_id, stan, batch, fields_enc, reason, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (txn_id, stan, batch, sealed_fields, reason, now))
            db.execute("UPDATE identity SET last_activity_at = ? WHERE id = 1", (now,))
            self._event(db, "txn.pending", {"kind": kind, "stan": stan, "batch": batch, "amount": amount_fen,
                                            "pan": masked, "protected": sealed_fields is not None})
        return txn_id

    def record_reply(self, *, stan: str, batch: str, rc: str, approved: bool, rrn: str = "", auth_code: str = "",
                     host_date: str = "", host_time: str = "") -> None:
        """A reply whose MAC verified: the outcome recorded and the reversal cleared, in one step.

        An approved void marks its sale voided; an approved refund adds to its sale's refunded amount
        (the sale becomes `refunded` once fully refunded). Recording the same outcome twice is harmless;
        a different outcome for a settled transaction is a JournalError.
        """
        status = "approved" if approved else "declined"
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT id, kind, status, rc, original_stan, original_batch, amount_fen FROM txn "
                             "WHERE batch = ? AND stan = ?", (batch, stan)).fetchone()
            if row is None:
                raise JournalError(f"journal {self.path}: no transaction {batch}/{stan} to record a reply for")
            if row["status"] not in LIVE_STATUSES:
                if row["status"] == status and row["rc"] == rc:
                    return
                raise JournalError(f"journal {self.path}: transaction {batch}/{stan} is already {row['status']}; "
                                   f"a reply {rc} cannot change it")
            db.execute("UPDATE txn SET status = ?, rc = ?, rrn = ?, auth_code = ?, host_date = ?, host_time = ?, "
                       "updated_at = ? WHERE id = ?",
                       (status, rc, rrn, auth_code, host_date, host_time, now, row["id"]))
            db.execute("DELETE FROM reversal WHERE txn_id = ?", (row["id"],))
            if approved and row["original_stan"]:
                self._apply_to_original(db, row, now)
            db.execute("UPDATE identity SET last_activity_at = ? WHERE id = 1", (now,))
            self._event(db, "txn.reply", {"stan": stan, "batch": batch, "rc": rc, "approved": approved})

    def _apply_to_original(self, db: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
        if row["original_batch"]:
            original = db.execute("SELECT id, amount_fen, refunded_fen FROM txn WHERE batch = ? AND stan = ? AND "
                                  "kind = 'sale'", (row["original_batch"], row["original_stan"])).fetchone()
        else:
            original = db.execute("SELECT id, amount_fen, refunded_fen FROM txn WHERE stan = ? AND kind = 'sale' "
                                  "ORDER BY id DESC LIMIT 1", (row["original_stan"],)).fetchone()
        if original is None:
            return  # a sale this journal never held (another journal, or older than it)
        if row["kind"] == "void":
            db.execute("UPDATE txn SET status = 'voided', updated_at = ? WHERE id = ?", (now, original["id"]))
        elif row["kind"] == "refund":
            refunded = original["refunded_fen"] + row["amount_fen"]
            db.execute("UPDATE txn SET refunded_fen = ?, status = CASE WHEN ? >= amount_fen AND status = 'approved' "
                       "THEN 'refunded' ELSE status END, updated_at = ? WHERE id = ?",
                       (refunded, refunded, now, original["id"]))

    def record_refusal(self, *, stan: str, batch: str, rc: str) -> None:
        """A refusal whose MAC could not be verified (A0, or 30 without MAC): nothing is trusted, so the
        reversal stays owed (cup-pos: only a verified reply clears it)."""
        with self._tx() as db:
            row = self._pending_row(db, stan, batch)
            db.execute("UPDATE txn SET status = CASE WHEN ? THEN 'reversal_pending' ELSE status END, rc = ?, "
                       "updated_at = ? WHERE id = ?", (row["protected"], rc, self._clock(), row["id"]))
            self._event(db, "txn.refused", {"stan": stan, "batch": batch, "rc": rc})

    def set_reversal_reason(self, stan: str, batch: str, reason: str) -> None:
        """No usable reply (timeout 98, MAC failed A0, other 06): the reversal is now due, for this reason."""
        check_reason(reason)
        with self._tx() as db:
            row = self._pending_row(db, stan, batch)
            if row["protected"]:
                db.execute("UPDATE reversal SET reason = ? WHERE txn_id = ?", (reason, row["id"]))
                db.execute("UPDATE txn SET status = 'reversal_pending', updated_at = ? WHERE id = ?",
                           (self._clock(), row["id"]))
            self._event(db, "txn.unanswered", {"stan": stan, "batch": batch, "reason": reason,
                                               "protected": bool(row["protected"])})

    def _pending_row(self, db: sqlite3.Connection, stan: str, batch: str) -> sqlite3.Row:
        row = db.execute("SELECT t.id, t.status, r.txn_id IS NOT NULL AS protected FROM txn t LEFT JOIN reversal r "
                         "ON r.txn_id = t.id WHERE t.batch = ? AND t.stan = ?", (batch, stan)).fetchone()
        if row is None:
            raise JournalError(f"journal {self.path}: no transaction {batch}/{stan}")
        if row["status"] not in LIVE_STATUSES:
            raise JournalError(f"journal {self.path}: transaction {batch}/{stan} is already {row['status']}")
        return row

    def pending_reversals(self) -> list[PendingReversal]:
        """Reversals owed to the host, oldest first (send them in this order, before any other request but
        sign-in). A transaction left `pending` by a crash is unanswered by definition: its reversal is here."""
        rows = self._q("SELECT r.*, t.kind, t.amount_fen FROM reversal r JOIN txn t ON t.id = r.txn_id "
                       "ORDER BY r.txn_id")
        out = []
        for row in rows:
            clear = self._vault.open(row["fields_enc"], stan=row["stan"], batch=row["batch"], purpose="reversal")
            if clear is None:
                raise JournalError(f"journal {self.path}: the reversal of STAN {row['stan']} does not decrypt")
            fields = reversal_fields(json.loads(clear), row["reason"])
            out.append(PendingReversal(row["stan"], row["batch"], fields, row["reason"],
                                       row["attempts"], row["last_attempt"], row["last_rc"], row["kind"],
                                       row["amount_fen"]))
        return out

    def mark_reversal_sent(self, stan: str, batch: str) -> None:
        """Call just before sending a stored reversal: counts the attempt."""
        with self._tx() as db:
            db.execute("UPDATE reversal SET attempts = attempts + 1, last_attempt = ? WHERE batch = ? AND stan = ?",
                       (self._clock(), batch, stan))

    def clear_reversal(self, stan: str, batch: str, outcome: str) -> bool:
        """The host answered a reversal with a verified MAC; `outcome` is its response code.

        00 (or 25, never seen) -> the transaction is `reversed` and counts nowhere. A code meaning the host
        did not process it (96 maintenance, 77 / A0 / 99 sign in, 03, 97, 30) keeps the reversal owed:
        returns False, send it again later. Any other code (12 voided, 64 amount differs ...) closes the
        reversal as `reversal_refused`: the host will not reverse it, a person must look. True when the
        reversal is no longer owed (also when there was none).
        """
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT txn_id FROM reversal WHERE batch = ? AND stan = ?", (batch, stan)).fetchone()
            if row is None:
                return True
            if not_processed(outcome):
                db.execute("UPDATE reversal SET last_rc = ? WHERE txn_id = ?", (outcome, row[0]))
                self._event(db, "reversal.not_processed", {"stan": stan, "batch": batch, "rc": outcome})
                return False
            status = "reversed" if outcome in REVERSED else "reversal_refused"
            db.execute("DELETE FROM reversal WHERE txn_id = ?", (row[0],))
            db.execute("UPDATE txn SET status = ?, reversal_rc = ?, updated_at = ? WHERE id = ?",
                       (status, outcome, now, row[0]))
            self._event(db, "reversal.cleared" if status == "reversed" else "reversal.refused",
                        {"stan": stan, "batch": batch, "rc": outcome})
            return True

    _TXN_SELECT = (
        "SELECT t.*, (SELECT CASE WHEN COUNT(*) = 0 THEN NULL WHEN SUM(printed = 0) > 0 THEN 'pending' "
        "WHEN SUM(reprints) > 0 THEN 'reprinted' ELSE 'printed' END FROM receipt WHERE receipt.stan = t.stan "
        "AND receipt.batch = t.batch) AS receipt_status FROM txn t")

    def _txn(self, row: sqlite3.Row | None) -> Transaction | None:
        if row is None:
            return None
        _, expiry = self._card(row["pan_enc"], row["stan"], row["batch"])
        return Transaction(row["id"], row["kind"], row["stan"], row["batch"], row["amount_fen"], row["pan_masked"],
                           row["entry_mode"], row["original_stan"], row["status"], row["rc"], row["rrn"],
                           row["auth_code"], row["host_date"], row["host_time"], row["refunded_fen"],
                           row["signature"], expiry, row["original_batch"], row["reversal_rc"],
                           row["receipt_status"], row["created_at"], row["updated_at"])

    def transaction(self, stan: str, batch: str) -> Transaction | None:
        return self._txn(self._q1(self._TXN_SELECT + " WHERE t.batch = ? AND t.stan = ?", (batch, stan)))

    def find_transaction(self, stan: str) -> Transaction | None:
        """The most recent transaction with this STAN (STANs repeat only after 999,999 of them)."""
        return self._txn(self._q1(self._TXN_SELECT + " WHERE t.stan = ? ORDER BY t.id DESC LIMIT 1", (stan,)))

    def transactions(self, batch: str | None = None, *, status: str | None = None) -> list[Transaction]:
        where, params = [], []
        if batch:
            where.append("t.batch = ?")
            params.append(batch)
        if status:
            where.append("t.status = ?")
            params.append(status)
        sql = self._TXN_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY t.id"
        return [t for t in (self._txn(r) for r in self._q(sql, tuple(params))) if t is not None]

    def set_signature(self, stan: str, batch: str, status: str, *, image: bytes | None = None) -> None:
        """Signature status: not_required, pending, signed (with the image), unsigned, uploaded."""
        check_signature(status)
        with self._tx() as db:
            if image is not None:
                cur = db.execute("UPDATE txn SET signature = ?, signature_image = ?, updated_at = ? WHERE batch = ? "
                                 "AND stan = ?", (status, image, self._clock(), batch, stan))
            else:
                cur = db.execute("UPDATE txn SET signature = ?, updated_at = ? WHERE batch = ? AND stan = ?",
                                 (status, self._clock(), batch, stan))
            if cur.rowcount == 0:
                raise JournalError(f"journal {self.path}: no transaction {batch}/{stan}")
            self._event(db, "signature", {"stan": stan, "batch": batch, "status": status})

    def unsigned(self, batch: str) -> list[UnsignedItem]:
        """Approved transactions of the batch still owed a signature (unsigned, or pending when a crash cut the
        capture short). A voided sale needs none any more."""
        rows = self._q("SELECT stan, pan_masked, amount_fen, kind, signature FROM txn WHERE batch = ? AND "
                       f"signature IN {schema._in(OWED_SIGNATURES)} AND status = 'approved' ORDER BY id", (batch,))
        return [UnsignedItem(r["stan"], r["pan_masked"], r["amount_fen"], r["kind"], r["signature"]) for r in rows]

    # ------------------------------------------------------------------------------------------
    # batch
    # ------------------------------------------------------------------------------------------
    def batch_totals(self, batch: str) -> tuple[int, int, int, int]:
        """(debit amount, debit count, credit amount, credit count) per the cup-pos clarifications.

        A sale is a debit even when later voided or refunded; voids and refunds are credits; reversed,
        declined, unanswered and refused-reversal transactions count nowhere.
        """
        row = self._q1(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'sale' THEN amount_fen END), 0), "
            "COUNT(CASE WHEN kind = 'sale' THEN 1 END), "
            "COALESCE(SUM(CASE WHEN kind != 'sale' THEN amount_fen END), 0), "
            "COUNT(CASE WHEN kind != 'sale' THEN 1 END) "
            f"FROM txn WHERE batch = ? AND status IN {schema._in(COUNTED_STATUSES)}", (batch,))
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    def batch_count(self, batch: str) -> int:
        """Records in the batch's log: the transactions its settlement counts and its batch upload sends
        (approved sales - voided or refunded ones too -, voids and refunds): `len(batch_records(batch))`,
        the debit count plus the credit count of `batch_totals(batch)`. Declined, reversed, unanswered and
        refused-reversal transactions are not in the log, as on a real terminal (it logs successes only).
        What `TerminalConfig.batch_capacity` is measured against."""
        return self._count(f"SELECT COUNT(*) FROM txn WHERE batch = ? AND status IN {schema._in(COUNTED_STATUSES)}",
                           (batch,))

    def batch_records(self, batch: str) -> list[BatchItem]:
        """Batch upload records: every approved, non-reversed sale (voided ones too), void and refund, in order,
        each with its own STAN, clear PAN and amount."""
        rows = self._q(f"SELECT id, kind, stan, batch, amount_fen, pan_enc FROM txn WHERE batch = ? AND status IN "
                       f"{schema._in(COUNTED_STATUSES)} ORDER BY id", (batch,))
        return [BatchItem(r["stan"], self._card(r["pan_enc"], r["stan"], r["batch"])[0], r["amount_fen"], r["kind"])
                for r in rows]

    # ------------------------------------------------------------------------------------------
    # receipts
    # ------------------------------------------------------------------------------------------
    def store_receipts(self, slips: list[tuple[str, str, str | None]], *, stan: str | None = None,
                       batch: str | None = None, printed: bool = False, pan: str | None = None
                       ) -> list[StoredReceipt]:
        """Keep several slips (kind, text, copy) of one transaction in one step, before printing them.

        `pan`, when the caller holds the clear card number, spares decrypting it from the transaction
        row to mask it; every other card number in the text is masked as `store_receipt` does.
        """
        check_slips(slips)
        if pan is None and stan and batch:
            pan = self._pan_of(stan, batch)
        masked = [(kind, mask_receipt(text, pan, self._keep), copy) for kind, text, copy in slips]
        now = self._clock()
        stored = []
        with self._tx() as db:
            for kind, text, copy in masked:
                cur = db.execute("INSERT INTO receipt (kind, copy, stan, batch, text, printed, created_at, printed_at) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (kind, copy, stan, batch, text, int(printed), now, now if printed else None))
                stored.append(StoredReceipt(int(cur.lastrowid or 0), kind, copy, stan, batch, text, printed, 0))
        return stored

    def _pan_of(self, stan: str, batch: str) -> str | None:
        row = self._q1("SELECT stan, batch, pan_enc FROM txn WHERE batch = ? AND stan = ?", (batch, stan))
        return None if row is None else self._card(row["pan_enc"], row["stan"], row["batch"])[0]

    def mark_printed(self, receipt: StoredReceipt | int | str, *, stan: str | None = None, batch: str | None = None,
                     copy: str | None = None) -> None:
        """The slip came out of the printer. Pass the StoredReceipt (or its id), or its kind with the stan,
        batch and copy it was stored with (the latest such slip not yet printed)."""
        if isinstance(receipt, StoredReceipt | int):
            receipt_id = receipt if isinstance(receipt, int) else receipt.id
            self._write1("UPDATE receipt SET printed = 1, printed_at = COALESCE(printed_at, ?) WHERE id = ?",
                         (self._clock(), receipt_id))
            return
        with self._tx() as db:
            row = db.execute("SELECT id FROM receipt WHERE kind = ? AND stan IS ? AND batch IS ? AND copy IS ? "
                             "ORDER BY printed, id DESC LIMIT 1", (receipt, stan, batch, copy)).fetchone()
            if row is None:
                return
            db.execute("UPDATE receipt SET printed = 1, printed_at = COALESCE(printed_at, ?) WHERE id = ?",
                       (self._clock(), row[0]))

    def mark_reprinted(self, receipt: StoredReceipt | int) -> None:
        """A reprint (marked REPRINT on paper) came out: printed, reprint count + 1."""
        receipt_id = receipt if isinstance(receipt, int) else receipt.id
        with self._tx() as db:
            db.execute("UPDATE receipt SET printed = 1, reprints = reprints + 1, printed_at = COALESCE(printed_at, ?) "
                       "WHERE id = ?", (self._clock(), receipt_id))

    @staticmethod
    def _receipt(row: sqlite3.Row | None) -> StoredReceipt | None:
        if row is None:
            return None
        return StoredReceipt(row["id"], row["kind"], row["copy"], row["stan"], row["batch"], row["text"],
                             bool(row["printed"]), row["reprints"])

    def last_receipt(self) -> StoredReceipt | None:
        """The slip a plain "reprint" should print: the oldest one still owed (not printed), else the newest."""
        row = self._q1("SELECT * FROM receipt WHERE printed = 0 ORDER BY id LIMIT 1")
        return self._receipt(row or self._q1("SELECT * FROM receipt ORDER BY id DESC LIMIT 1"))

    def receipt_for(self, stan: str, batch: str | None = None) -> StoredReceipt | None:
        """The slip of a STAN to reprint: one still owed first, else the first one (the merchant copy)."""
        if batch is None:
            row = self._q1("SELECT batch FROM receipt WHERE stan = ? ORDER BY id DESC LIMIT 1", (stan,))
            if row is None:
                return None
            batch = row[0]
        return self._receipt(self._q1("SELECT * FROM receipt WHERE stan = ? AND batch IS ? ORDER BY printed, id "
                                      "LIMIT 1", (stan, batch)))

    def pending_receipts(self) -> list[StoredReceipt]:
        """Slips stored but not printed (printer fault, crash), oldest first."""
        return [r for r in (self._receipt(row) for row in self._q("SELECT * FROM receipt WHERE printed = 0 "
                                                                  "ORDER BY id")) if r is not None]

    def receipts(self, *, stan: str | None = None, batch: str | None = None, limit: int = 100) -> list[StoredReceipt]:
        where, params = [], []
        if stan:
            where.append("stan = ?")
            params.append(stan)
        if batch:
            where.append("batch = ?")
            params.append(batch)
        sql = "SELECT * FROM receipt" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._q(sql, (*params, receipt_limit(limit)))
        return [r for r in (self._receipt(row) for row in reversed(rows)) if r is not None]

    # ------------------------------------------------------------------------------------------
    # intents (day-end write-ahead) and settlements
    # ------------------------------------------------------------------------------------------
    def begin_intent(self, kind: str, batch: str, data: dict[str, Any] | None = None) -> Intent:
        """Journal day-end work before its first message leaves; returns the open intent of this kind and
        batch if there is one (resume it: resend, the host is idempotent).

        A settlement intent for a batch that already has a settlement record and no open intent is a
        JournalError: a batch is settled once.
        """
        check_intent(kind, batch)
        data = mask_value(dict(data or {}), keep=self._keep)
        payload = sorted_json(data)
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT * FROM intent WHERE open = 1 AND kind = ? AND batch = ?", (kind, batch)).fetchone()
            if row is not None:
                return self._intent(row)
            if kind == "settlement" and db.execute("SELECT 1 FROM settlement WHERE batch = ?", (batch,)).fetchone():
                raise JournalError(f"journal {self.path}: batch {batch} is already settled; it is not settled twice")
            cur = db.execute("INSERT INTO intent (kind, batch, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                             (kind, batch, payload, now, now))
            self._event(db, f"intent.{kind}", {"batch": batch})
        return Intent(int(cur.lastrowid or 0), kind, batch, data, "begun", now, now)

    @staticmethod
    def _intent(row: sqlite3.Row) -> Intent:
        return Intent(row["id"], row["kind"], row["batch"], json.loads(row["data"]), row["step"], row["created_at"],
                      row["updated_at"])

    def open_intent(self, kind: str, batch: str | None = None) -> Intent | None:
        sql = "SELECT * FROM intent WHERE open = 1 AND kind = ?" + (" AND batch = ?" if batch else "")
        row = self._q1(sql + " ORDER BY id LIMIT 1", (kind, batch) if batch else (kind,))
        return None if row is None else self._intent(row)

    def open_intents(self) -> list[Intent]:
        """Interrupted day-end work, oldest first: finish each (resend; the host answers repeats idempotently)."""
        return [self._intent(r) for r in self._q("SELECT * FROM intent WHERE open = 1 ORDER BY id")]

    def intent_step(self, intent: Intent | int, step: str, data: dict[str, Any] | None = None) -> Intent:
        """Record progress (e.g. "sent", "answered", "uploaded"); `data` is merged into what is stored."""
        intent_id = intent if isinstance(intent, int) else intent.id
        with self._tx() as db:
            row = db.execute("SELECT * FROM intent WHERE id = ?", (intent_id,)).fetchone()
            if row is None or not row["open"]:
                raise JournalError(f"journal {self.path}: intent {intent_id} is not open")
            merged = {**json.loads(row["data"]), **mask_value(dict(data or {}), keep=self._keep)}
            now = self._clock()
            db.execute("UPDATE intent SET step = ?, data = ?, updated_at = ? WHERE id = ?",
                       (step, sorted_json(merged), now, intent_id))
        return Intent(intent_id, row["kind"], row["batch"], merged, step, row["created_at"], now)

    def complete_intent(self, intent: Intent | int, outcome: str = "done") -> None:
        """The work is finished (or abandoned, with another outcome); completing twice is harmless."""
        with self._tx() as db:
            self._complete(db, intent if isinstance(intent, int) else intent.id, outcome, self._clock())

    def _complete(self, db: sqlite3.Connection, intent_id: int, outcome: str, now: float) -> None:
        row = db.execute("SELECT kind, batch, open FROM intent WHERE id = ?", (intent_id,)).fetchone()
        if row is None or not row["open"]:
            return
        db.execute("UPDATE intent SET open = 0, step = 'done', outcome = ?, updated_at = ? WHERE id = ?",
                   (outcome, now, intent_id))
        self._event(db, f"intent.{row['kind']}.{outcome}", {"batch": row["batch"]})

    def record_settlement(self, batch: str, *, result: str, terminal_totals: str, host_totals: str | None,
                          uploaded: int, stan: str | None = None) -> None:
        """The host's settlement answer for a batch. One record per batch: a resumed settlement answered
        again updates it (host totals, upload) and counts the answer, it never adds a second one."""
        six(batch, "batch")
        with self._tx() as db:
            self._record_settlement(db, batch, result, terminal_totals, host_totals, uploaded, stan)

    def _record_settlement(self, db: sqlite3.Connection, batch: str, result: str, terminal_totals: str,
                           host_totals: str | None, uploaded: int, stan: str | None) -> None:
        now = self._clock()
        db.execute("INSERT INTO settlement (batch, stan, result, terminal_totals, host_totals, uploaded, settled_at, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch) DO UPDATE SET "
                   "stan = COALESCE(excluded.stan, stan), result = excluded.result, "
                   "host_totals = excluded.host_totals, uploaded = MAX(uploaded, excluded.uploaded), "
                   "answers = answers + 1, updated_at = excluded.updated_at",
                   (batch, stan, result, terminal_totals, host_totals, uploaded, now, now))
        self._event(db, "settled", {"batch": batch, "result": result, "uploaded": uploaded})

    def complete_settlement(self, intent: Intent, *, result: str, terminal_totals: str, host_totals: str | None,
                            uploaded: int, stan: str | None = None) -> str:
        """Settlement answered (and batch-uploaded if it had to be): the record, the move to the next batch and
        the intent's completion in one step. Returns the new batch. Safe to repeat after a crash."""
        with self._tx() as db:
            current = db.execute("SELECT batch FROM identity WHERE id = 1").fetchone()[0]
            self._record_settlement(db, intent.batch, result, terminal_totals, host_totals, uploaded, stan)
            if current == intent.batch:
                current = next_batch(current)
                db.execute("UPDATE identity SET batch = ?, last_activity_at = ? WHERE id = 1",
                           (current, self._clock()))
                self._event(db, "batch.advanced", {"from": intent.batch, "to": current})
            self._complete(db, intent.id, "done", self._clock())
        return current

    def _settlement(self, row: sqlite3.Row | None) -> SettlementRecord | None:
        if row is None:
            return None
        printed = self._q1("SELECT 1 FROM receipt WHERE kind = 'settlement' AND batch = ? AND printed = 1 LIMIT 1",
                           (row["batch"],)) is not None
        return SettlementRecord(row["batch"], row["result"], row["terminal_totals"], row["host_totals"],
                                row["uploaded"], row["stan"], row["settled_at"], row["answers"], printed)

    def settlement(self, batch: str) -> SettlementRecord | None:
        return self._settlement(self._q1("SELECT * FROM settlement WHERE batch = ?", (batch,)))

    def last_settlement(self) -> SettlementRecord | None:
        return self._settlement(self._q1("SELECT * FROM settlement ORDER BY rowid DESC LIMIT 1"))

    def settlements(self) -> list[SettlementRecord]:
        """Every settled batch, in the order they were settled."""
        return [s for s in (self._settlement(r) for r in self._q("SELECT * FROM settlement ORDER BY rowid"))
                if s is not None]

    def settlement_report(self, batch: str | None = None) -> SettlementReport:
        """The merchant's view of a batch (the current one by default): totals, the host's answer if settled,
        transactions by status, and the approved transactions still unsigned (FM-11)."""
        batch = batch or self.batch
        debit, debit_n, credit, credit_n = self.batch_totals(batch)
        by_status = {r[0]: r[1] for r in self._q("SELECT status, COUNT(*) FROM txn WHERE batch = ? GROUP BY status",
                                                 (batch,))}
        owed = self._q1("SELECT COUNT(*) FROM reversal WHERE batch = ?", (batch,))
        return SettlementReport(batch, debit, debit_n, credit, credit_n, self.settlement(batch),
                                tuple(self.unsigned(batch)), by_status, int(owed[0]) if owed else 0)

    # ------------------------------------------------------------------------------------------
    # events and summary
    # ------------------------------------------------------------------------------------------
    def _event(self, db: sqlite3.Connection, kind: str, detail: dict[str, Any]) -> None:
        cur = db.execute("INSERT INTO event (at, kind, detail) VALUES (?, ?, ?)",
                         (self._clock(), kind, sorted_json(mask_value(detail, keep=self._keep))))
        last = int(cur.lastrowid or 0)
        if last % 1024 == 0 and last > MAX_EVENTS:
            db.execute("DELETE FROM event WHERE id <= ?", (last - MAX_EVENTS,))

    def event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        """Log an event. Card numbers in the detail are masked on the way in; keys and PIN blocks must not
        be passed at all."""
        if not kind:
            raise ValueError("an event needs a kind")
        with self._autocommit() as db:
            self._event(db, kind, dict(detail or {}))  # one INSERT (a prune now and then is idempotent)

    def events(self, kind: str | None = None, limit: int = 100, *, prefix: str | None = None,
               since: float | None = None) -> list[dict[str, Any]]:
        """The latest events (at most `limit`, capped at 1,000), oldest first, as dicts: the detail's keys,
        then `id`, `at`, `kind` and the detail itself under `detail`. Filter by exact `kind`, by kind
        `prefix` (e.g. "reversal."), and/or `since` a time."""
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if prefix:
            where.append("kind >= ? AND kind < ?")
            params.extend([prefix, prefix + "\U0010ffff"])
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        limit = event_limit(limit)
        sql = "SELECT id, at, kind, detail FROM event" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._q(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        out = []
        for r in reversed(rows):
            out.append(event_out(r["id"], r["at"], r["kind"], json.loads(r["detail"])))
        return out

    def _counts(self, batch: str) -> tuple[int, int, int]:
        """(reversals owed, receipts not printed, transactions in `batch`), for `summary()`."""
        return (self._count("SELECT COUNT(*) FROM reversal"),
                self._count("SELECT COUNT(*) FROM receipt WHERE printed = 0"),
                self._count("SELECT COUNT(*) FROM txn WHERE batch = ?", (batch,)))

    def _count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        row = self._q1(sql, params)
        return int(row[0]) if row else 0

