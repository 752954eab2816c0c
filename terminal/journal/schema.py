"""The journal's tables, and the migration from the first schema.

Version 2 (this one):
- `schema_version`: one row per schema the file has been brought to (also mirrored in PRAGMA user_version).
- `identity`: the single terminal row: tid, mid, merchant name, firmware, settlement type, operator, signed-in
  flag and times, last activity, working keys exactly as field 62 brought them (still wrapped under the
  TMK), key mode, the STAN and batch counters, and the check value of the card-data key.
- `txn`: one row per online financial request (sale, void, refund), written before the request leaves;
  PAN and expiry only sealed (`pan_enc`), the masked PAN beside them.
- `reversal`: the 0400 owed for a txn (at most one per txn), its fields sealed (they carry the PAN).
- `receipt`: rendered slips with printed flag and reprint count.
- `intent`: write-ahead records of day-end work; at most one open per (kind, batch).
- `settlement`: one row per settled batch.
- `event`: a bounded log (time, kind, JSON detail with card numbers masked).

Version 1 differed in: no `schema_version` table; reversal fields stored as clear JSON (the PAN with
them); no CHECK constraints; no original batch, reversal outcome, operator, activity or key check.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .records import INTENT_KINDS, REVERSAL_REASONS, SIGNATURE_STATUSES, TXN_KINDS, TXN_STATUSES
from .vault import Vault

SCHEMA_VERSION = 2

#: Page size of a new journal. Journals are small and a fleet keeps thousands open: 1 KiB pages keep an
#: idle in-memory journal near 100 KB instead of near 200 KB (4 KiB pages), and each commit's WAL frames small.
PAGE_SIZE = 1024
#: Page cache bound per connection (negative: KiB). The OS caches the file; the journal's working set is tiny.
CACHE_KIB = 256


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


TABLES: dict[str, str] = {
    "schema_version": """CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY, applied_at REAL NOT NULL, description TEXT NOT NULL)""",
    "identity": """CREATE TABLE identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        tid TEXT NOT NULL, mid TEXT NOT NULL, merchant_name TEXT, firmware TEXT, settlement_type TEXT,
        operator TEXT,
        signed_in INTEGER NOT NULL DEFAULT 0 CHECK (signed_in IN (0, 1)), signed_in_at REAL, signed_out_at REAL,
        last_activity_at REAL, wrapped_keys BLOB, key_mode TEXT,
        stan INTEGER NOT NULL DEFAULT 0 CHECK (stan BETWEEN 0 AND 999999),
        batch TEXT NOT NULL DEFAULT '000001' CHECK (length(batch) = 6),
        key_check BLOB)""",
    "txn": f"""CREATE TABLE txn (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN {_in(TXN_KINDS)}),
        stan TEXT NOT NULL CHECK (length(stan) = 6), batch TEXT NOT NULL CHECK (length(batch) = 6),
        amount_fen INTEGER NOT NULL CHECK (amount_fen >= 0),
        pan_masked TEXT NOT NULL, pan_enc BLOB NOT NULL, entry_mode TEXT,
        original_stan TEXT, original_batch TEXT,
        status TEXT NOT NULL CHECK (status IN {_in(TXN_STATUSES)}),
        rc TEXT, rrn TEXT, auth_code TEXT, host_date TEXT, host_time TEXT,
        refunded_fen INTEGER NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0),
        signature TEXT NOT NULL DEFAULT 'not_required' CHECK (signature IN {_in(SIGNATURE_STATUSES)}),
        signature_image BLOB, reversal_rc TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL,
        UNIQUE (batch, stan))""",
    "reversal": f"""CREATE TABLE reversal (
        txn_id INTEGER PRIMARY KEY REFERENCES txn (id),
        stan TEXT NOT NULL, batch TEXT NOT NULL, fields_enc BLOB NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN {_in(REVERSAL_REASONS)}),
        attempts INTEGER NOT NULL DEFAULT 0, last_attempt REAL, last_rc TEXT, created_at REAL NOT NULL)""",
    "receipt": """CREATE TABLE receipt (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL, copy TEXT, stan TEXT, batch TEXT, text TEXT NOT NULL,
        printed INTEGER NOT NULL DEFAULT 0 CHECK (printed IN (0, 1)),
        reprints INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, printed_at REAL)""",
    "intent": f"""CREATE TABLE intent (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN {_in(INTENT_KINDS)}), batch TEXT NOT NULL, data TEXT NOT NULL,
        step TEXT NOT NULL DEFAULT 'begun', open INTEGER NOT NULL DEFAULT 1 CHECK (open IN (0, 1)),
        outcome TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    "settlement": """CREATE TABLE settlement (
        batch TEXT PRIMARY KEY, stan TEXT, result TEXT NOT NULL, terminal_totals TEXT NOT NULL, host_totals TEXT,
        uploaded INTEGER NOT NULL DEFAULT 0, answers INTEGER NOT NULL DEFAULT 1,
        settled_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    "event": """CREATE TABLE event (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)""",
}

INDEXES = (
    "CREATE INDEX txn_stan ON txn (stan)",
    "CREATE INDEX receipt_owner ON receipt (stan, batch)",
    "CREATE INDEX receipt_unprinted ON receipt (id) WHERE printed = 0",
    "CREATE UNIQUE INDEX intent_one_open ON intent (kind, batch) WHERE open = 1",
)

#: Tables whose presence marks a file as a possim terminal journal of any version.
JOURNAL_MARKERS = {"identity", "txn", "reversal"}


def tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                     "'sqlite_%'")}


def create(db: sqlite3.Connection, now: float) -> None:
    """A new journal (inside the caller's transaction)."""
    for ddl in TABLES.values():
        db.execute(ddl)
    for ddl in INDEXES:
        db.execute(ddl)
    db.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, 'created')",
               (SCHEMA_VERSION, now))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def recorded_version(db: sqlite3.Connection) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if "schema_version" in tables(db):
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = max(version, int(row[0] or 0))
    return version


def _rebuild(db: sqlite3.Connection, table: str) -> None:
    """Recreate `table` with its current definition, keeping every column the two share."""
    db.execute(TABLES[table].replace(f"CREATE TABLE {table} (", f"CREATE TABLE {table}__new (", 1))
    old = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    new = {r[1] for r in db.execute(f"PRAGMA table_info({table}__new)")}
    cols = ", ".join(c for c in old if c in new)
    db.execute(f"INSERT INTO {table}__new ({cols}) SELECT {cols} FROM {table}")
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE {table}__new RENAME TO {table}")


def migrate_1_to_2(db: sqlite3.Connection, vault: Vault, now: float) -> None:
    """Inside the caller's transaction (foreign keys off): constraints, new columns, sealed reversal fields."""
    # Intents: v1 could leave two open of one kind and batch; the oldest one is the one to finish.
    db.execute("UPDATE intent SET open = 0, step = 'superseded' WHERE open = 1 AND id NOT IN "
               "(SELECT MIN(id) FROM intent WHERE open = 1 GROUP BY kind, batch)")
    db.execute("DELETE FROM intent WHERE kind NOT IN " + _in(INTENT_KINDS))
    for table in ("identity", "txn", "receipt", "intent"):
        _rebuild(db, table)
    db.execute("UPDATE txn SET status = 'refunded' WHERE kind = 'sale' AND status = 'approved' AND "
               "refunded_fen > 0 AND refunded_fen >= amount_fen")
    settlement_rows = db.execute("SELECT batch, result, terminal_totals, host_totals, uploaded, settled_at "
                                 "FROM settlement").fetchall()
    db.execute("DROP TABLE settlement")
    db.execute(TABLES["settlement"])
    db.executemany("INSERT INTO settlement (batch, result, terminal_totals, host_totals, uploaded, settled_at, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", [(*r, r[5]) for r in settlement_rows])
    # Reversals: v1 kept the 0400's fields (PAN included) as clear JSON; seal them.
    old: list[Any] = db.execute("SELECT txn_id, stan, batch, fields, reason, attempts, last_attempt, created_at "
                                "FROM reversal").fetchall()
    db.execute("DROP TABLE reversal")
    db.execute(TABLES["reversal"])
    for txn_id, stan, batch, fields, reason, attempts, last_attempt, created_at in old:
        clear = {k: v for k, v in json.loads(fields).items() if k != "39"}
        sealed = vault.seal(json.dumps(clear, sort_keys=True).encode(), stan=stan, batch=batch, purpose="reversal")
        db.execute("INSERT INTO reversal (txn_id, stan, batch, fields_enc, reason, attempts, last_attempt, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (txn_id, stan, batch, sealed, reason if reason in REVERSAL_REASONS else "06", attempts,
                    last_attempt, created_at))
    db.execute(TABLES["schema_version"])
    db.execute("INSERT INTO schema_version (version, applied_at, description) VALUES (1, ?, 'found')", (now,))
    db.execute("INSERT INTO schema_version (version, applied_at, description) VALUES "
               "(2, ?, 'migrated from 1: constraints, sealed reversal fields')", (now,))
    for ddl in INDEXES:
        db.execute(ddl.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS").replace(
            "CREATE UNIQUE INDEX", "CREATE UNIQUE INDEX IF NOT EXISTS"))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
