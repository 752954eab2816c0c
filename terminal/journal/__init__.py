"""The terminal's journal: its durable memory, in SQLite (WAL, synchronous=FULL).

Write-ahead (DESIGN principle 4): a financial request's reversal is stored in the same SQLite
transaction as the pending transaction, before the request is sent; a settlement, batch upload or
sign-off is stored as an *intent* before its first message leaves. A process killed at any instant
and restarted on the same file therefore knows exactly what may have reached the host, and the
terminal finishes or undoes it: nothing charged twice, nothing approved lost.

Card data: the PAN (batch upload needs it) is stored only sealed (AES-GCM under a key derived with
HKDF from the terminal's key, a fresh nonce per row, the row's identity as associated data), beside
its masked form; a stored reversal's fields (they carry the PAN) are sealed the same way. Events,
intents and receipts have card numbers masked on the way in.

Modules: `journal` (the Journal class), `records` (what it hands out, the status vocabularies,
JournalError), `schema` (tables and migrations), `vault` (sealing and masking).
"""

from .journal import MAX_EVENTS, Journal
from .records import (
    COUNTED_STATUSES,
    INTENT_KINDS,
    REVERSAL_REASONS,
    SIGNATURE_STATUSES,
    TXN_KINDS,
    TXN_STATUSES,
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
from .schema import SCHEMA_VERSION

__all__ = [
    "COUNTED_STATUSES",
    "INTENT_KINDS",
    "MAX_EVENTS",
    "REVERSAL_REASONS",
    "SCHEMA_VERSION",
    "SIGNATURE_STATUSES",
    "TXN_KINDS",
    "TXN_STATUSES",
    "BatchItem",
    "Intent",
    "Journal",
    "JournalError",
    "JournalFull",
    "PendingReversal",
    "SettlementRecord",
    "SettlementReport",
    "StoredReceipt",
    "Transaction",
    "UnsignedItem",
]
