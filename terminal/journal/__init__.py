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

Two backends, one behaviour: `Journal.open(path)` on a file gives the SQLite `Journal` above, durable
across crashes; `Journal.open(":memory:")` gives a `MemoryJournal`, the same calls with the same answers,
records, errors and masking, kept in plain Python objects. A journal in memory dies with its process
whatever holds it, so SQLite bought it nothing but cost (a third of a simulated terminal's CPU per sale,
~146 KB per journal): load runs, the 10,000-terminal fleet and tests use the memory backend, a real
terminal a file. The differential tests hold the two to the same answers.

Modules: `journal` (the Journal class), `memory` (MemoryJournal), `rules` (the checks and decisions both
share), `records` (what they hand out, the status vocabularies, JournalError), `schema` (tables and
migrations), `vault` (sealing and masking).
"""

from .journal import Journal
from .memory import MemoryJournal
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
from .rules import MAX_EVENTS
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
    "MemoryJournal",
    "PendingReversal",
    "SettlementRecord",
    "SettlementReport",
    "StoredReceipt",
    "Transaction",
    "UnsignedItem",
]
