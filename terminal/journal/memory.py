"""MemoryJournal: the journal's calls and answers in plain Python objects, for journals that live in memory.

`Journal.open(":memory:", ...)` returns one. A journal in process memory dies with the process whatever
holds it, so SQLite bought such a journal nothing but cost: a third of a simulated terminal's CPU per
sale (~23 statements) and ~146 KB of RSS per journal (load runs, the 10,000-terminal fleet). This class
answers every call exactly as `Journal` does - the same records, ids counting from 1 per kind like
SQLite's rowids, orderings, validation (ValueError before anything changes), JournalError messages
naming the journal (":memory:"), masking of card numbers on the way in, timestamps from the injected
clock (read as often, in the same order, as `Journal` reads it), atomic calls (checked first, then
changed) and one RLock per journal.

What it does not do, having no file: schema creation and migration, quick_check, file permissions,
VACUUM, WAL, a full disk (JournalFull), two openers of one journal, reopening after a crash - and no
AES-GCM sealing of card data, which never leaves the process (the clear PAN is kept for batch upload and
`pan_for`, as Journal keeps it sealed; it is in no repr, record, event or receipt). Events: the last
MAX_EVENTS are kept exactly (a deque); the SQLite journal prunes in chunks of 1,024, so it holds up to
MAX_EVENTS + 1,023. SQLite's type affinity is not imitated: arguments of the documented types come back
alike, but an int passed where text is documented comes back as the int here and as text from SQLite,
and a value SQLite cannot bind (a list as an rc) is stored here instead of refused. SQLite's NOT NULL and
CHECK constraints that the API leaves to it (mid, a settlement's result/totals/upload count, an intent's
step, a receipt's printed flag) are checked with the same messages.

Indexes stand where `Journal` relies on SQL: (batch, stan) -> transaction, STAN -> latest transaction and
latest sale, per-batch transaction lists and log counts (`batch_count`, kept as statuses change),
transactions owed a signature per batch, reversals owed in order, unprinted receipts, receipts per
(stan, batch) and per batch, settlements per batch. No call a sale makes scans history; the queries a
person asks for (batch totals, transactions, receipts without both stan and batch, events by kind) read
one batch or the history as SQL would.

Retention, which a file journal does not have: `keep_batches=N` keeps only the last N settled batches
(see `MemoryJournal.keep_batches`) and `max_events` fewer events, so a journal that lives as long as a
load run does not grow with the sales it makes. The defaults keep everything, as `Journal` does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.message import mask_pan

from .records import (
    COUNTED_STATUSES,
    BatchItem,
    Intent,
    JournalError,
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
from .vault import mask_value

MEMORY = ":memory:"
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Event detail key tuples, shared by every journal of the process (a fleet's events have a few shapes).
_KEY_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}
_MAX_KEY_SHAPES = 4096


def _plain(value: Any) -> Any:
    """What a JSON round trip (sorted keys) of a masked value gives back, without writing the text:
    fresh dicts (keys sorted) and lists, the same scalars; anything else goes through JSON itself (a
    TypeError for what JSON cannot hold, as the SQLite journal raises)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: _plain(value[k]) for k in sorted(value)}
    if kind is list:
        return [_plain(v) for v in value]
    return json.loads(sorted_json(value))


def _thaw(value: Any) -> Any:
    """A fresh copy of a `_plain` value (what the caller gets may be changed without changing the journal)."""
    kind = type(value)
    if kind is dict:
        return {k: _thaw(v) for k, v in value.items()}
    if kind is list:
        return [_thaw(v) for v in value]
    return value


def _positive(value: Any, what: str) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _retention(value: Any) -> int | None:
    """`keep_batches`: None (keep every batch) or at least 1 (the batch just settled stays: its voucher, the
    sign-off voucher and `advance_batch` read it)."""
    return None if value is None else _positive(value, "keep_batches")


#: Statuses counted in a batch's log, as a set (`batch_count` is kept as statuses change).
_LOGGED = frozenset(COUNTED_STATUSES)


def _not_null(path: str, table: str, **columns: Any) -> None:
    """SQLite's NOT NULL constraints on values the API does not check itself (first column first)."""
    for column, value in columns.items():
        if value is None:
            raise JournalError(f"journal {path}: NOT NULL constraint failed: {table}.{column}")


class _Txn:
    __slots__ = ("amount_fen", "auth_code", "batch", "created_at", "entry_mode", "expiry", "host_date",
                 "host_time", "id", "kind", "original_batch", "original_stan", "pan", "pan_masked", "rc",
                 "refunded_fen", "reversal_rc", "rrn", "signature", "signature_image", "stan", "status",
                 "updated_at")

    def __init__(self, txn_id: int, kind: str, stan: str, batch: str, amount_fen: int, pan: str, expiry: str,
                 entry_mode: str | None, original_stan: str | None, original_batch: str | None, now: float) -> None:
        self.id = txn_id
        self.kind = kind
        self.stan = stan
        self.batch = batch
        self.amount_fen = amount_fen
        self.pan = pan
        self.pan_masked = mask_pan(pan)
        self.expiry = expiry
        self.entry_mode = entry_mode
        self.original_stan = original_stan
        self.original_batch = original_batch
        self.status = "pending"
        self.rc = self.rrn = self.auth_code = self.host_date = self.host_time = None
        self.refunded_fen = 0
        self.signature = "not_required"
        self.signature_image: bytes | None = None
        self.reversal_rc: str | None = None
        self.created_at = self.updated_at = now


class _Reversal:
    __slots__ = ("attempts", "fields", "last_attempt", "last_rc", "reason", "txn")

    def __init__(self, txn: _Txn, fields: dict[str, str], reason: str) -> None:
        self.txn = txn
        self.fields = fields  # as normalise_fields gives them (what the SQLite journal seals)
        self.reason = reason
        self.attempts = 0
        self.last_attempt: float | None = None
        self.last_rc: str | None = None


class _Receipt:
    __slots__ = ("batch", "copy", "id", "kind", "printed", "reprints", "stan", "text")

    def __init__(self, receipt_id: int, kind: str, copy: str | None, stan: str | None, batch: str | None,
                 text: str, printed: bool) -> None:
        self.id = receipt_id
        self.kind = kind
        self.copy = copy
        self.stan = stan
        self.batch = batch
        self.text = text
        self.printed = printed
        self.reprints = 0

    def record(self) -> StoredReceipt:
        return StoredReceipt(self.id, self.kind, self.copy, self.stan, self.batch, self.text, self.printed,
                             self.reprints)


class _Intent:
    __slots__ = ("batch", "created_at", "data", "id", "kind", "open", "outcome", "step", "updated_at")

    def __init__(self, intent_id: int, kind: str, batch: str, data: dict[str, Any], now: float) -> None:
        self.id = intent_id
        self.kind = kind
        self.batch = batch
        self.data = data  # `_plain`: what the SQLite journal's JSON column gives back
        self.step = "begun"
        self.open = True
        self.outcome: str | None = None
        self.created_at = self.updated_at = now

    def record(self) -> Intent:
        return Intent(self.id, self.kind, self.batch, _thaw(self.data), self.step, self.created_at, self.updated_at)


class _Settlement:
    __slots__ = ("answers", "batch", "host_totals", "result", "settled_at", "stan", "terminal_totals", "uploaded")

    def __init__(self, batch: str, stan: str | None, result: str, terminal_totals: str, host_totals: str | None,
                 uploaded: int, now: float) -> None:
        self.batch = batch
        self.stan = stan
        self.result = result
        self.terminal_totals = terminal_totals
        self.host_totals = host_totals
        self.uploaded = uploaded
        self.answers = 1
        self.settled_at = now


class MemoryJournal(JournalCommon):
    """The terminal's journal in process memory: `Journal`'s calls and answers without SQLite (see the module
    docstring). Open with `Journal.open(":memory:", ...)` or `MemoryJournal.open(...)`. Each call is documented
    on `Journal`; a docstring here says only what is particular to memory."""

    def __init__(self, *, tid: str, mid: str, clock: Callable[[], float], keep_batches: int | None = None,
                 max_events: int | None = None) -> None:
        self.path = MEMORY
        self.tid = tid
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._created_at = float(clock())  # when the journal was made (the SQLite one's schema_version row)
        self._keep_batches = _retention(keep_batches)
        self._max_events = MAX_EVENTS if max_events is None else _positive(max_events, "max_events")
        #: called with a batch and its totals just before retention drops it: a load run's report counts a
        #: batch's totals once, when it is let go of or at the end, whichever way the batch was settled
        self.on_drop_batch: Callable[[str, tuple[int, int, int, int]], None] | None = None
        self._empty(mid)

    def _empty(self, mid: str) -> None:
        """Nothing recorded yet: a new journal, or a closed one letting go of what it held."""
        self._ident: dict[str, Any] = {
            "id": 1, "tid": self.tid, "mid": mid, "merchant_name": None, "firmware": None, "settlement_type": None,
            "operator": None, "signed_in": 0, "signed_in_at": None, "signed_out_at": None, "last_activity_at": None,
            "wrapped_keys": None, "key_mode": None, "stan": 0, "batch": "000001"}
        self._keep = frozenset({mid})  # our own MID is not a card number
        self._txns: dict[int, _Txn] = {}  # id -> transaction, in id order
        self._txn_id = 0  # the last id handed out: ids count on whatever retention dropped
        self._by_key: dict[tuple[str, str], _Txn] = {}  # (batch, stan)
        self._latest: dict[str, _Txn] = {}  # stan -> its latest transaction
        self._latest_sale: dict[str, _Txn] = {}  # stan -> its latest sale
        self._by_batch: dict[str, list[_Txn]] = {}
        self._logged: dict[str, int] = {}  # batch -> its transactions in COUNTED_STATUSES (`batch_count`)
        self._owed_signature: dict[str, dict[int, _Txn]] = {}  # batch -> id -> signature unsigned or pending
        self._reversals: dict[int, _Reversal] = {}  # txn id -> reversal owed, oldest first
        self._receipts: dict[int, _Receipt] = {}  # id -> slip, in id order
        self._receipt_id = 0
        self._batch_slips: dict[str, list[_Receipt]] = {}  # batch -> its slips (what retention drops with it)
        self._unprinted: dict[int, _Receipt] = {}  # oldest first
        self._owners: dict[tuple[str | None, str | None], list[_Receipt]] = {}  # (stan, batch) -> slips
        self._last_for_stan: dict[str, _Receipt] = {}
        self._vouchers: set[str] = set()  # batches with a printed settlement slip
        self._intents: dict[int, _Intent] = {}  # id -> intent, in id order
        self._intent_id = 0
        self._open_intents: dict[int, _Intent] = {}  # oldest first
        self._settlements: dict[str, _Settlement] = {}  # in the order settled
        #: (id, at, kind, detail keys (sorted), detail values as `_plain`)
        self._events: deque[tuple[int, float, str, tuple[str, ...], tuple[Any, ...]]] = deque(
            maxlen=self._max_events)
        self._event_id = 0

    # ------------------------------------------------------------------------------------------
    # opening, closing
    # ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path = MEMORY, *, tid: str, mid: str, pan_key: bytes,
             clock: Callable[[], float] = time.time, keep_batches: int | None = None,
             max_events: int | None = None) -> MemoryJournal:
        """A new, empty journal in memory (`pan_key` is checked as `Journal.open` checks it, then not needed).

        `keep_batches` (None: keep everything, as the SQLite journal does): see the attribute. `max_events`
        (default MAX_EVENTS): the events kept, the oldest dropped first."""
        if str(path) != MEMORY:
            raise ValueError(f"a MemoryJournal lives in memory ({MEMORY!r}), not at {str(path)!r}: "
                             "use Journal.open for a file")
        opening(tid, mid, pan_key)
        return cls(tid=tid, mid=mid, clock=clock, keep_batches=keep_batches, max_events=max_events)

    # ------------------------------------------------------------------------------------------
    # retention: what a long-running journal in memory may let go of
    # ------------------------------------------------------------------------------------------
    @property
    def keep_batches(self) -> int | None:
        """How many settled batches keep their records; None (the default) keeps every batch.

        With N, each new settlement drops the batches settled before the last N, whole: their transactions,
        receipts (settlement vouchers included), signature list, settlement record and closed intents, and
        every index entry pointing at them. Never dropped: the current batch, any batch not settled, and a
        settled batch that still owes something - a reversal, a slip not printed, a signature, an open
        intent - until a later settlement finds it clear. A dropped batch then answers as one never seen
        (no transactions, zero totals, no settlement record), so a refund can no longer find a sale of it
        (a real terminal's log forgets a settled batch too). Setting it applies it at once."""
        return self._keep_batches

    @keep_batches.setter
    def keep_batches(self, value: int | None) -> None:
        checked = _retention(value)
        with self._lock:
            self._check_open()
            self._keep_batches = checked
            self._prune()

    @property
    def max_events(self) -> int:
        """How many events are kept (the oldest go first); MAX_EVENTS unless set. Setting it keeps the newest."""
        return self._max_events

    @max_events.setter
    def max_events(self, value: int) -> None:
        checked = _positive(value, "max_events")
        with self._lock:
            self._check_open()
            self._max_events = checked
            self._events = deque(self._events, maxlen=checked)

    def _prune(self) -> None:
        """Drop the settled batches retention no longer keeps (see `keep_batches`); called at settlement."""
        keep = self._keep_batches
        if keep is None or len(self._settlements) <= keep:
            return
        current = self._ident["batch"]
        for batch in list(self._settlements)[:-keep]:
            if batch != current and not self._owes(batch):
                self._drop_batch(batch)

    def _owes(self, batch: str) -> bool:
        """Something of `batch` is still owed: a reversal, a slip, a signature, or day-end work (an open intent)."""
        return (any(r.txn.batch == batch for r in self._reversals.values())
                or any(not slip.printed for slip in self._batch_slips.get(batch, ()))
                or any(t.status == "approved" for t in self._owed_signature.get(batch, {}).values())
                or any(i.batch == batch for i in self._open_intents.values()))

    def _drop_batch(self, batch: str) -> None:
        if self.on_drop_batch is not None:
            self.on_drop_batch(batch, self.batch_totals(batch))
        for txn in self._by_batch.pop(batch, ()):
            del self._txns[txn.id]
            del self._by_key[(batch, txn.stan)]
            if self._latest.get(txn.stan) is txn:
                del self._latest[txn.stan]
            if self._latest_sale.get(txn.stan) is txn:
                del self._latest_sale[txn.stan]
        self._logged.pop(batch, None)
        self._owed_signature.pop(batch, None)
        for slip in self._batch_slips.pop(batch, ()):
            del self._receipts[slip.id]
            self._owners.pop((slip.stan, batch), None)
            if slip.stan is not None and self._last_for_stan.get(slip.stan) is slip:
                del self._last_for_stan[slip.stan]
        self._vouchers.discard(batch)
        del self._settlements[batch]
        for intent in [i for i in self._intents.values() if i.batch == batch and not i.open]:
            del self._intents[intent.id]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._empty(self._ident["mid"])  # what it held is freed: every call but close says it is closed

    def _now(self) -> float:
        return float(self._clock())  # SQLite's REAL columns hand back floats

    # ------------------------------------------------------------------------------------------
    # identity, counters
    # ------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The terminal row, as `Journal.identity` gives it (id 1, the keys still wrapped, no key check)."""
        with self._lock:
            self._check_open()
            return dict(self._ident)

    def set_identity(self, **values: Any) -> None:
        check_identity(values)
        if not values:
            return
        with self._lock:
            self._check_open()
            if "mid" in values:
                _not_null(self.path, "identity", mid=values["mid"])
            self._ident.update(values)
        if values.get("mid"):
            self._keep = frozenset({values["mid"]})

    def touch(self) -> None:
        with self._lock:
            self._check_open()
            self._ident["last_activity_at"] = self._now()

    @property
    def batch(self) -> str:
        with self._lock:
            self._check_open()
            return str(self._ident["batch"])

    @property
    def stan(self) -> str:
        with self._lock:
            self._check_open()
            return f"{self._ident['stan']:06d}"

    def next_stan(self) -> str:
        """A new STAN, never reused: 000001 .. 999999, then 000001 again."""
        with self._lock:
            self._check_open()
            value = self._ident["stan"] % 999_999 + 1
            self._ident["stan"] = value
        return f"{value:06d}"

    def set_batch(self, batch: str) -> None:
        six(batch, "batch")
        with self._lock:
            self._check_open()
            old = self._ident["batch"]
            if old != batch:
                self._ident["batch"] = batch
                self._event("batch.set", {"from": old, "to": batch})

    def advance_batch(self, settled_batch: str | None = None) -> str:
        """Move past a settled batch; returns the current batch afterwards. Safe to repeat (see Journal)."""
        with self._lock:
            self._check_open()
            current = self._ident["batch"]
            target = current if settled_batch is None else six(settled_batch, "batch")
            value = advance(self.path, current, target, current in self._settlements,
                            next(reversed(self._settlements), None))
            if value is None:
                return current
            self._ident["batch"] = value
            self._event("batch.advanced", {"from": current, "to": value})
            return value

    def set_signed_in(self, *, wrapped_keys: bytes, key_mode: str, batch: str) -> None:
        """Signed in: the working keys exactly as field 62 brought them, the key mode and the host's batch."""
        check_signed_in(wrapped_keys, batch)
        now = self._now()
        with self._lock:
            self._check_open()
            self._ident.update(signed_in=1, signed_in_at=now, last_activity_at=now, wrapped_keys=bytes(wrapped_keys),
                               key_mode=key_mode, batch=batch)
            self._event("signed_in", {"batch": batch, "key_mode": key_mode})

    def set_signed_out(self, *, completing: Intent | None = None) -> None:
        """Signed out: the working keys are forgotten; with `completing`, that sign-off intent closes with it."""
        now = self._now()
        with self._lock:
            self._check_open()
            self._ident.update(signed_in=0, signed_out_at=now, last_activity_at=now, wrapped_keys=None)
            if completing is not None:
                self._complete(completing.id, "done", now)
            self._event("signed_out", {})

    # ------------------------------------------------------------------------------------------
    # card data
    # ------------------------------------------------------------------------------------------
    def _txn_at(self, txn_id: Any) -> _Txn | None:
        return self._txns.get(txn_id) if isinstance(txn_id, int) else None

    def _set_status(self, txn: _Txn, status: str) -> None:
        """Every status change goes through here: it keeps the batch's log count (`batch_count`)."""
        logged, was = status in _LOGGED, txn.status in _LOGGED
        txn.status = status
        if logged is not was:
            self._logged[txn.batch] = self._logged.get(txn.batch, 0) + (1 if logged else -1)

    def pan_for(self, txn: Transaction | int) -> str:
        txn_id = txn if isinstance(txn, int) else txn.id
        with self._lock:
            self._check_open()
            found = self._txn_at(txn_id)
            if found is None:
                raise JournalError(f"journal {self.path}: no transaction with id {txn_id}")
            return found.pan

    # ------------------------------------------------------------------------------------------
    # transactions and reversals
    # ------------------------------------------------------------------------------------------
    def record_pending(self, *, kind: str, stan: str, batch: str, amount_fen: int, pan: str, expiry: str = "",
                       entry_mode: str | None = None, original_stan: str | None = None,
                       original_batch: str | None = None, reversal: dict[Any, Any] | None = None,
                       reason: str = "98") -> int:
        """Write-ahead: the request about to be sent and its reversal (the 0400's fields), in one step.
        Returns the txn id."""
        check_pending(kind, stan, batch, amount_fen, pan, original_stan, original_batch, reason)
        fields = None if reversal is None else normalise_fields(reversal)
        expiry = f"{expiry}"  # what the SQLite journal seals beside the PAN, and hands back, is text
        now = self._now()
        with self._lock:
            self._check_open()
            key = (batch, stan)
            if key in self._by_key:
                raise JournalError(f"journal {self.path}: STAN {stan} is already used in batch {batch}")
            self._txn_id += 1
            txn = _Txn(self._txn_id, kind, stan, batch, amount_fen, pan, expiry, entry_mode, original_stan,
                       original_batch, now)
            self._txns[txn.id] = txn
            self._by_key[key] = txn
            self._latest[stan] = txn
            if kind == "sale":
                self._latest_sale[stan] = txn
            in_batch = self._by_batch.get(batch)
            if in_batch is None:
                self._by_batch[batch] = [txn]
            else:
                in_batch.append(txn)
            if fields is not None:
                self._reversals[txn.id] = _Reversal(txn, fields, reason)
            self._ident["last_activity_at"] = now
            self._event("txn.pending", {"kind": kind, "stan": stan, "batch": batch, "amount": amount_fen,
                                        "pan": txn.pan_masked, "protected": fields is not None})
        return txn.id

    def record_reply(self, *, stan: str, batch: str, rc: str, approved: bool, rrn: str = "", auth_code: str = "",
                     host_date: str = "", host_time: str = "") -> None:
        """A reply whose MAC verified: the outcome recorded and the reversal cleared, in one step (see Journal)."""
        status = "approved" if approved else "declined"
        now = self._now()
        with self._lock:
            self._check_open()
            txn = self._by_key.get((batch, stan))
            if txn is None:
                raise JournalError(f"journal {self.path}: no transaction {batch}/{stan} to record a reply for")
            if txn.status not in LIVE_STATUSES:
                if txn.status == status and txn.rc == rc:
                    return
                raise JournalError(f"journal {self.path}: transaction {batch}/{stan} is already {txn.status}; "
                                   f"a reply {rc} cannot change it")
            self._set_status(txn, status)
            txn.rc, txn.rrn, txn.auth_code = rc, rrn, auth_code
            txn.host_date, txn.host_time, txn.updated_at = host_date, host_time, now
            self._reversals.pop(txn.id, None)
            if approved and txn.original_stan:
                self._apply_to_original(txn, now)
            self._ident["last_activity_at"] = now
            self._event("txn.reply", {"stan": stan, "batch": batch, "rc": rc, "approved": approved})

    def _apply_to_original(self, txn: _Txn, now: float) -> None:
        if txn.original_batch:
            original = self._by_key.get((txn.original_batch, txn.original_stan))  # type: ignore[arg-type]
            if original is not None and original.kind != "sale":
                original = None
        else:
            original = self._latest_sale.get(txn.original_stan)  # type: ignore[arg-type]
        if original is None:
            return  # a sale this journal never held
        if txn.kind == "void":
            self._set_status(original, "voided")
            original.updated_at = now
        elif txn.kind == "refund":
            refunded = original.refunded_fen + txn.amount_fen
            if refunded >= original.amount_fen and original.status == "approved":
                self._set_status(original, "refunded")
            original.refunded_fen = refunded
            original.updated_at = now

    def _live(self, stan: str, batch: str) -> _Txn:
        txn = self._by_key.get((batch, stan))
        if txn is None:
            raise JournalError(f"journal {self.path}: no transaction {batch}/{stan}")
        if txn.status not in LIVE_STATUSES:
            raise JournalError(f"journal {self.path}: transaction {batch}/{stan} is already {txn.status}")
        return txn

    def record_refusal(self, *, stan: str, batch: str, rc: str) -> None:
        """A refusal whose MAC could not be verified (A0, or 30 without MAC): the reversal stays owed."""
        with self._lock:
            self._check_open()
            txn = self._live(stan, batch)
            if txn.id in self._reversals:
                self._set_status(txn, "reversal_pending")
            txn.rc = rc
            txn.updated_at = self._now()
            self._event("txn.refused", {"stan": stan, "batch": batch, "rc": rc})

    def set_reversal_reason(self, stan: str, batch: str, reason: str) -> None:
        check_reason(reason)
        with self._lock:
            self._check_open()
            txn = self._live(stan, batch)
            owed = self._reversals.get(txn.id)
            if owed is not None:
                owed.reason = reason
                self._set_status(txn, "reversal_pending")
                txn.updated_at = self._now()
            self._event("txn.unanswered", {"stan": stan, "batch": batch, "reason": reason,
                                           "protected": owed is not None})

    def pending_reversals(self) -> list[PendingReversal]:
        """Reversals owed to the host, oldest first (send them in this order, before any other request but
        sign-in)."""
        with self._lock:
            self._check_open()
            return [PendingReversal(r.txn.stan, r.txn.batch, reversal_fields(r.fields, r.reason), r.reason,
                                    r.attempts, r.last_attempt, r.last_rc, r.txn.kind, r.txn.amount_fen)
                    for r in self._reversals.values()]

    def _owed(self, stan: str, batch: str) -> _Reversal | None:
        txn = self._by_key.get((batch, stan))
        return None if txn is None else self._reversals.get(txn.id)

    def mark_reversal_sent(self, stan: str, batch: str) -> None:
        with self._lock:
            self._check_open()
            now = self._now()
            owed = self._owed(stan, batch)
            if owed is not None:
                owed.attempts += 1
                owed.last_attempt = now

    def clear_reversal(self, stan: str, batch: str, outcome: str) -> bool:
        """The host answered a reversal with a verified MAC; `outcome` is its response code (see Journal).
        True when the reversal is no longer owed (also when there was none)."""
        now = self._now()
        with self._lock:
            self._check_open()
            owed = self._owed(stan, batch)
            if owed is None:
                return True
            if not_processed(outcome):
                owed.last_rc = outcome
                self._event("reversal.not_processed", {"stan": stan, "batch": batch, "rc": outcome})
                return False
            status = "reversed" if outcome in REVERSED else "reversal_refused"
            txn = owed.txn
            del self._reversals[txn.id]
            self._set_status(txn, status)
            txn.reversal_rc, txn.updated_at = outcome, now
            self._event("reversal.cleared" if status == "reversed" else "reversal.refused",
                        {"stan": stan, "batch": batch, "rc": outcome})
            return True

    def _receipt_status(self, stan: str, batch: str) -> str | None:
        slips = self._owners.get((stan, batch))
        if not slips:
            return None
        if any(not r.printed for r in slips):
            return "pending"
        return "reprinted" if any(r.reprints for r in slips) else "printed"

    def _record(self, t: _Txn) -> Transaction:
        return Transaction(t.id, t.kind, t.stan, t.batch, t.amount_fen, t.pan_masked, t.entry_mode, t.original_stan,
                           t.status, t.rc, t.rrn, t.auth_code, t.host_date, t.host_time, t.refunded_fen, t.signature,
                           t.expiry, t.original_batch, t.reversal_rc, self._receipt_status(t.stan, t.batch),
                           t.created_at, t.updated_at)

    def transaction(self, stan: str, batch: str) -> Transaction | None:
        with self._lock:
            self._check_open()
            txn = self._by_key.get((batch, stan))
            return None if txn is None else self._record(txn)

    def find_transaction(self, stan: str) -> Transaction | None:
        with self._lock:
            self._check_open()
            txn = self._latest.get(stan)
            return None if txn is None else self._record(txn)

    def transactions(self, batch: str | None = None, *, status: str | None = None) -> list[Transaction]:
        with self._lock:
            self._check_open()
            rows = self._by_batch.get(batch, []) if batch else self._txns.values()
            return [self._record(t) for t in rows if not status or t.status == status]

    def set_signature(self, stan: str, batch: str, status: str, *, image: bytes | None = None) -> None:
        check_signature(status)
        with self._lock:
            self._check_open()
            now = self._now()
            txn = self._by_key.get((batch, stan))
            if txn is None:
                raise JournalError(f"journal {self.path}: no transaction {batch}/{stan}")
            txn.signature = status
            if image is not None:
                txn.signature_image = image
            txn.updated_at = now
            if status in OWED_SIGNATURES:
                self._owed_signature.setdefault(batch, {})[txn.id] = txn
            else:
                self._owed_signature.get(batch, {}).pop(txn.id, None)
            self._event("signature", {"stan": stan, "batch": batch, "status": status})

    def unsigned(self, batch: str) -> list[UnsignedItem]:
        with self._lock:
            self._check_open()
            owed = self._owed_signature.get(batch)
            if not owed:
                return []
            return [UnsignedItem(t.stan, t.pan_masked, t.amount_fen, t.kind, t.signature)
                    for _, t in sorted(owed.items()) if t.status == "approved"]

    # ------------------------------------------------------------------------------------------
    # batch
    # ------------------------------------------------------------------------------------------
    def _counted(self, batch: str) -> list[_Txn]:
        return [t for t in self._by_batch.get(batch, ()) if t.status in COUNTED_STATUSES]

    def batch_totals(self, batch: str) -> tuple[int, int, int, int]:
        """(debit amount, debit count, credit amount, credit count) per the cup-pos clarifications: a sale is a
        debit even when later voided or refunded; voids and refunds are credits; the rest counts nowhere."""
        debit = debit_n = credit = credit_n = 0
        with self._lock:
            self._check_open()
            for txn in self._counted(batch):
                if txn.kind == "sale":
                    debit += txn.amount_fen
                    debit_n += 1
                else:
                    credit += txn.amount_fen
                    credit_n += 1
        return debit, debit_n, credit, credit_n

    def batch_count(self, batch: str) -> int:
        """Records in the batch's log (see Journal): a count kept as statuses change, no walk of the batch."""
        with self._lock:
            self._check_open()
            return self._logged.get(batch, 0)

    def batch_records(self, batch: str) -> list[BatchItem]:
        with self._lock:
            self._check_open()
            return [BatchItem(t.stan, t.pan, t.amount_fen, t.kind) for t in self._counted(batch)]

    # ------------------------------------------------------------------------------------------
    # receipts
    # ------------------------------------------------------------------------------------------
    def store_receipts(self, slips: list[tuple[str, str, str | None]], *, stan: str | None = None,
                       batch: str | None = None, printed: bool = False, pan: str | None = None
                       ) -> list[StoredReceipt]:
        """Keep several slips (kind, text, copy) of one transaction in one step, before printing them."""
        check_slips(slips)
        if pan is None and stan and batch:
            with self._lock:
                self._check_open()
                txn = self._by_key.get((batch, stan))
                pan = None if txn is None else txn.pan
        masked = [(kind, mask_receipt(text, pan, self._keep), copy) for kind, text, copy in slips]
        self._now()  # the SQLite journal's created_at/printed_at: read as it reads them, never handed out
        flag = 0
        with self._lock:
            self._check_open()
            if masked:
                flag = int(printed)
                if flag not in (0, 1):
                    raise JournalError(f"journal {self.path}: CHECK constraint failed: printed IN (0, 1)")
            stored = []
            for kind, text, copy in masked:
                self._receipt_id += 1
                slip = _Receipt(self._receipt_id, kind, copy, stan, batch, text, bool(flag))
                self._receipts[slip.id] = slip
                if batch is not None:
                    in_batch = self._batch_slips.get(batch)
                    if in_batch is None:
                        self._batch_slips[batch] = [slip]
                    else:
                        in_batch.append(slip)
                if not flag:
                    self._unprinted[slip.id] = slip
                elif kind == "settlement" and batch is not None:
                    self._vouchers.add(batch)
                owner = self._owners.get((stan, batch))
                if owner is None:
                    self._owners[(stan, batch)] = [slip]
                else:
                    owner.append(slip)
                if stan is not None:
                    self._last_for_stan[stan] = slip
                stored.append(StoredReceipt(slip.id, kind, copy, stan, batch, text, printed, 0))
        return stored

    def _receipt_at(self, receipt_id: Any) -> _Receipt | None:
        return self._receipts.get(receipt_id) if isinstance(receipt_id, int) else None

    def _printed(self, slip: _Receipt) -> None:
        if not slip.printed:
            slip.printed = True
            del self._unprinted[slip.id]
            if slip.kind == "settlement" and slip.batch is not None:
                self._vouchers.add(slip.batch)

    def mark_printed(self, receipt: StoredReceipt | int | str, *, stan: str | None = None, batch: str | None = None,
                     copy: str | None = None) -> None:
        if isinstance(receipt, StoredReceipt | int):
            receipt_id = receipt if isinstance(receipt, int) else receipt.id
            self._now()  # the SQLite journal's printed_at
            with self._lock:
                self._check_open()
                slip = self._receipt_at(receipt_id)
                if slip is not None:
                    self._printed(slip)
            return
        with self._lock:
            self._check_open()
            best = None
            for slip in reversed(self._owners.get((stan, batch), ())):
                if slip.kind == receipt and slip.copy == copy:
                    if not slip.printed:
                        best = slip
                        break
                    best = best or slip  # the latest printed one, unless one is still owed
            if best is None:
                return
            self._now()
            self._printed(best)

    def mark_reprinted(self, receipt: StoredReceipt | int) -> None:
        receipt_id = receipt if isinstance(receipt, int) else receipt.id
        with self._lock:
            self._check_open()
            self._now()
            slip = self._receipt_at(receipt_id)
            if slip is not None:
                self._printed(slip)
                slip.reprints += 1

    def last_receipt(self) -> StoredReceipt | None:
        with self._lock:
            self._check_open()
            slip = next(iter(self._unprinted.values()), None)
            if slip is None and self._receipts:
                slip = next(reversed(self._receipts.values()))
            return None if slip is None else slip.record()

    def receipt_for(self, stan: str, batch: str | None = None) -> StoredReceipt | None:
        with self._lock:
            self._check_open()
            if stan is None:
                return None
            if batch is None:
                latest = self._last_for_stan.get(stan)
                if latest is None:
                    return None
                batch = latest.batch
            slips = self._owners.get((stan, batch))
            if not slips:
                return None
            return next((r for r in slips if not r.printed), slips[0]).record()

    def pending_receipts(self) -> list[StoredReceipt]:
        with self._lock:
            self._check_open()
            return [r.record() for r in self._unprinted.values()]

    def receipts(self, *, stan: str | None = None, batch: str | None = None, limit: int = 100) -> list[StoredReceipt]:
        count = receipt_limit(limit)
        with self._lock:
            self._check_open()
            if stan and batch:
                return [r.record() for r in self._owners.get((stan, batch), [])[-count:]]
            found: list[_Receipt] = []
            for slip in reversed(self._receipts.values()):
                if (not stan or slip.stan == stan) and (not batch or slip.batch == batch):
                    found.append(slip)
                    if len(found) == count:
                        break
            return [r.record() for r in reversed(found)]

    # ------------------------------------------------------------------------------------------
    # intents (day-end write-ahead) and settlements
    # ------------------------------------------------------------------------------------------
    def begin_intent(self, kind: str, batch: str, data: dict[str, Any] | None = None) -> Intent:
        """Journal day-end work before its first message leaves; returns the open intent of this kind and
        batch if there is one. A settlement intent for a batch already settled is a JournalError."""
        check_intent(kind, batch)
        data = mask_value(dict(data or {}), keep=self._keep)
        stored = _plain(data)
        now = self._now()
        with self._lock:
            self._check_open()
            for intent in self._open_intents.values():
                if intent.kind == kind and intent.batch == batch:
                    return intent.record()
            if kind == "settlement" and batch in self._settlements:
                raise JournalError(f"journal {self.path}: batch {batch} is already settled; it is not settled twice")
            self._intent_id += 1
            intent = _Intent(self._intent_id, kind, batch, stored, now)
            self._intents[intent.id] = intent
            self._open_intents[intent.id] = intent
            self._event(f"intent.{kind}", {"batch": batch})
        return Intent(intent.id, kind, batch, data, "begun", now, now)

    def _intent_at(self, intent_id: Any) -> _Intent | None:
        return self._intents.get(intent_id) if isinstance(intent_id, int) else None

    def open_intent(self, kind: str, batch: str | None = None) -> Intent | None:
        with self._lock:
            self._check_open()
            for intent in self._open_intents.values():
                if intent.kind == kind and (not batch or intent.batch == batch):
                    return intent.record()
            return None

    def open_intents(self) -> list[Intent]:
        with self._lock:
            self._check_open()
            return [i.record() for i in self._open_intents.values()]

    def intent_step(self, intent: Intent | int, step: str, data: dict[str, Any] | None = None) -> Intent:
        intent_id = intent if isinstance(intent, int) else intent.id
        with self._lock:
            self._check_open()
            found = self._intent_at(intent_id)
            if found is None or not found.open:
                raise JournalError(f"journal {self.path}: intent {intent_id} is not open")
            merged = {**_thaw(found.data), **mask_value(dict(data or {}), keep=self._keep)}
            now = self._now()
            stored = _plain(merged)
            _not_null(self.path, "intent", step=step)
            found.step, found.data, found.updated_at = step, stored, now
        return Intent(intent_id, found.kind, found.batch, merged, step, found.created_at, now)

    def complete_intent(self, intent: Intent | int, outcome: str = "done") -> None:
        with self._lock:
            self._check_open()
            self._complete(intent if isinstance(intent, int) else intent.id, outcome, self._now())

    def _complete(self, intent_id: int, outcome: str, now: float) -> None:
        intent = self._intent_at(intent_id)
        if intent is None or not intent.open:
            return
        intent.open, intent.step, intent.outcome, intent.updated_at = False, "done", outcome, now
        del self._open_intents[intent.id]
        self._event(f"intent.{intent.kind}.{outcome}", {"batch": intent.batch})

    def record_settlement(self, batch: str, *, result: str, terminal_totals: str, host_totals: str | None,
                          uploaded: int, stan: str | None = None) -> None:
        six(batch, "batch")
        with self._lock:
            self._check_open()
            self._record_settlement(batch, result, terminal_totals, host_totals, uploaded, stan)

    def _record_settlement(self, batch: str, result: str, terminal_totals: str, host_totals: str | None,
                           uploaded: int, stan: str | None) -> None:
        now = self._now()
        _not_null(self.path, "settlement", result=result, terminal_totals=terminal_totals, uploaded=uploaded)
        count = int(uploaded) if isinstance(uploaded, bool) else uploaded  # SQLite keeps True as 1
        record = self._settlements.get(batch)
        if record is None:
            self._settlements[batch] = _Settlement(batch, stan, result, terminal_totals, host_totals, count, now)
            self._prune()  # a new settled batch: retention may let older ones go
        else:
            if stan is not None:
                record.stan = stan
            record.result, record.host_totals = result, host_totals
            record.uploaded = max(record.uploaded, count)
            record.answers += 1
        self._event("settled", {"batch": batch, "result": result, "uploaded": uploaded})

    def complete_settlement(self, intent: Intent, *, result: str, terminal_totals: str, host_totals: str | None,
                            uploaded: int, stan: str | None = None) -> str:
        """Settlement answered: the record, the move to the next batch and the intent's completion in one
        step. Returns the new batch. Safe to repeat."""
        settled, intent_id = intent.batch, intent.id
        with self._lock:
            self._check_open()
            current = self._ident["batch"]
            self._record_settlement(settled, result, terminal_totals, host_totals, uploaded, stan)
            if current == settled:
                current = next_batch(current)
                self._ident["batch"] = current
                self._ident["last_activity_at"] = self._now()
                self._event("batch.advanced", {"from": settled, "to": current})
            self._complete(intent_id, "done", self._now())
        return current

    def _settlement(self, record: _Settlement | None) -> SettlementRecord | None:
        if record is None:
            return None
        return SettlementRecord(record.batch, record.result, record.terminal_totals, record.host_totals,
                                record.uploaded, record.stan, record.settled_at, record.answers,
                                record.batch in self._vouchers)

    def settlement(self, batch: str) -> SettlementRecord | None:
        with self._lock:
            self._check_open()
            return self._settlement(self._settlements.get(batch))

    def last_settlement(self) -> SettlementRecord | None:
        with self._lock:
            self._check_open()
            return self._settlement(next(reversed(self._settlements.values()), None))

    def settlements(self) -> list[SettlementRecord]:
        with self._lock:
            self._check_open()
            return [s for s in map(self._settlement, self._settlements.values()) if s is not None]

    def settlement_report(self, batch: str | None = None) -> SettlementReport:
        with self._lock:
            batch = batch or self.batch
            debit, debit_n, credit, credit_n = self.batch_totals(batch)
            counts: dict[str, int] = {}
            for txn in self._by_batch.get(batch, ()):
                counts[txn.status] = counts.get(txn.status, 0) + 1
            owed = sum(1 for r in self._reversals.values() if r.txn.batch == batch)
            return SettlementReport(batch, debit, debit_n, credit, credit_n, self.settlement(batch),
                                    tuple(self.unsigned(batch)), dict(sorted(counts.items())), owed)

    # ------------------------------------------------------------------------------------------
    # events and summary
    # ------------------------------------------------------------------------------------------
    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        at = self._now()
        masked = mask_value(detail, keep=self._keep)
        keys = tuple(sorted(masked))
        values = tuple([v if type(v) in _SCALARS else _plain(v) for v in map(masked.__getitem__, keys)])
        shared = _KEY_SHAPES.get(keys)
        if shared is not None:
            keys = shared
        elif len(_KEY_SHAPES) < _MAX_KEY_SHAPES:
            _KEY_SHAPES[keys] = keys
        self._event_id += 1
        self._events.append((self._event_id, at, kind, keys, values))

    def event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        if not kind:
            raise ValueError("an event needs a kind")
        with self._lock:
            self._check_open()
            self._event(kind, dict(detail or {}))

    def events(self, kind: str | None = None, limit: int = 100, *, prefix: str | None = None,
               since: float | None = None) -> list[dict[str, Any]]:
        """As Journal.events, over the last MAX_EVENTS events exactly (the SQLite journal prunes in chunks)."""
        below = prefix + "\U0010ffff" if prefix else ""  # the SQLite journal's range on kind
        count = event_limit(limit)
        with self._lock:
            self._check_open()
            found = []
            for entry in reversed(self._events):
                if kind and entry[2] != kind:
                    continue
                if prefix and not prefix <= entry[2] < below:
                    continue
                if since is not None and not entry[1] >= since:
                    continue
                found.append(entry)
                if len(found) == count:
                    break
        return [event_out(event_id, at, what, dict(zip(keys, map(_thaw, values), strict=True)))
                for event_id, at, what, keys, values in reversed(found)]

    def _counts(self, batch: str) -> tuple[int, int, int]:
        return len(self._reversals), len(self._unprinted), len(self._by_batch.get(batch, ()))
