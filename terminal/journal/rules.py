"""What both journal backends (the SQLite `Journal`, the in-memory `MemoryJournal`) check and decide alike:
argument validation, the reversal field rules, which reversal answers leave a reversal owed, receipt
masking, the batch counter's wrap, the event query bounds, opening's argument checks - and `JournalCommon`,
their base: the lifecycle around `close` and the calls made only of other calls.

Each check raises before anything is changed, with the message both backends give.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from protocol import codes
from protocol.message import mask_pan

from .records import INTENT_KINDS, REVERSAL_REASONS, SIGNATURE_STATUSES, TXN_KINDS, Intent, JournalError, StoredReceipt
from .schema import SCHEMA_VERSION
from .vault import Vault, mask_text

#: Binary fields of a stored reversal (hex while stored, bytes when handed out).
BINARY_FIELDS = frozenset({52, 55, 62, 64})
#: Fields a reversal must never carry (cup-pos: no track or PIN data; a host answers 30).
FORBIDDEN_REVERSAL_FIELDS = frozenset({35, 36, 52})
#: Reversal answers meaning the host did not process the 0400: it stays owed and is sent again.
NOT_PROCESSED = frozenset({codes.Action.RETRY_LATER, codes.Action.SIGN_IN, codes.Action.PARAMETERS,
                           codes.Action.STOP})
#: Reversal answers meaning nothing is (or stays) charged: 00, and 25 (the host never saw the original).
REVERSED = frozenset({"00", "25"})
#: Transaction statuses still waiting for an answer (a reply, a refusal or a reversal reason may follow).
LIVE_STATUSES = ("pending", "reversal_pending")
#: Signature statuses of an approved transaction still owed a signature.
OWED_SIGNATURES = ("unsigned", "pending")
IDENTITY_FIELDS = ("mid", "merchant_name", "firmware", "settlement_type", "operator")
#: Events kept; older ones are pruned (the log is for diagnosis, not the record of money).
MAX_EVENTS = 100_000
#: The most events (or receipts) one query returns.
MAX_EVENT_QUERY = 1_000

_SIX_DIGITS = re.compile(r"\d{6}")

#: json.dumps(..., sort_keys=True) builds a new encoder on every call; this one is built once and
#: writes the same text.
sorted_json = json.JSONEncoder(sort_keys=True).encode


def six(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SIX_DIGITS.fullmatch(value):
        raise ValueError(f"{what} must be 6 digits, got {value!r}")
    return value


def next_batch(batch: str) -> str:
    """The batch after `batch`: 000001 .. 999999, then 000001 again."""
    return f"{int(batch) % 999_999 + 1:06d}"


def advance(path: str, current: str, target: str, settled: bool, last_settled: str | None) -> str | None:
    """advance_batch's rule: the batch to move to from `current` (`settled`: it has a settlement record), None
    when it was already advanced past `last_settled` (the most recent settlement), else a JournalError."""
    if target == current and settled:
        return next_batch(current)
    if last_settled is not None and next_batch(last_settled) == current and target in (current, last_settled):
        return None  # already advanced past the last settled batch
    if target != current:
        raise JournalError(f"journal {path}: cannot advance from batch {target}: the current batch is {current}")
    raise JournalError(f"journal {path}: batch {target} has no settlement record; it cannot be advanced from")


def opening(tid: str, mid: str, pan_key: bytes) -> Vault:
    """Journal.open's argument checks (ValueError), and the card-data vault they allow."""
    if not tid or not isinstance(tid, str) or not mid or not isinstance(mid, str):
        raise ValueError("tid and mid must be non-empty strings")
    return Vault(pan_key, tid)


def check_identity(values: dict[str, Any]) -> None:
    unknown = set(values) - set(IDENTITY_FIELDS)
    if unknown:
        raise ValueError(f"unknown identity fields: {', '.join(sorted(unknown))}")


def check_signed_in(wrapped_keys: bytes, batch: str) -> None:
    if not isinstance(wrapped_keys, bytes | bytearray) or not wrapped_keys:
        raise ValueError("wrapped_keys must be the non-empty bytes of field 62")
    six(batch, "batch")


def check_reason(reason: str) -> None:
    if reason not in REVERSAL_REASONS:
        raise ValueError(f"reason must be one of {', '.join(REVERSAL_REASONS)}, got {reason!r}")


def check_pending(kind: str, stan: str, batch: str, amount_fen: int, pan: str, original_stan: str | None,
                  original_batch: str | None, reason: str) -> None:
    """record_pending's arguments (the reversal's fields are checked by `normalise_fields`)."""
    if kind not in TXN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TXN_KINDS)}, got {kind!r}")
    six(stan, "stan")
    six(batch, "batch")
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen < 0:
        raise ValueError(f"amount_fen must be a non-negative int, got {amount_fen!r}")
    if not isinstance(pan, str) or not pan.isdigit() or len(pan) > 19:
        raise ValueError("pan must be a string of at most 19 digits")
    if kind != "sale" and not original_stan:
        raise ValueError(f"a {kind} needs original_stan")
    if original_stan:
        six(original_stan, "original_stan")
    if original_batch:
        six(original_batch, "original_batch")
    check_reason(reason)


def normalise_fields(fields: dict[Any, Any]) -> dict[str, str]:
    """The 0400's fields as JSON-able {"2": "...", ...}; binary values as upper-case hex; 39 kept apart."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"reversal field numbers must be integers, got {key!r}") from None
        if not 2 <= number <= 128:
            raise ValueError(f"reversal field {number} is not an ISO 8583 data field")
        if number in FORBIDDEN_REVERSAL_FIELDS:
            raise ValueError(f"a reversal must not carry field {number} (track or PIN data)")
        if number == 39:
            continue  # the reason is kept apart and can change (98 -> A0)
        if isinstance(value, bytes | bytearray):
            value = bytes(value).hex().upper()
        out[str(number)] = str(value)
    return out


def reversal_fields(stored: dict[str, str], reason: str) -> dict[int, str | bytes]:
    """A stored reversal's fields as handed out: numbers as ints, binary fields as bytes, 39 the reason,
    in field order."""
    fields: dict[int, str | bytes] = {
        int(k): (bytes.fromhex(v) if int(k) in BINARY_FIELDS else v) for k, v in stored.items()}
    fields[39] = reason
    return dict(sorted(fields.items()))


def not_processed(outcome: str) -> bool:
    """A verified answer to a reversal that leaves it owed (the host did not process it: send it again)."""
    return outcome not in REVERSED and (not outcome or outcome == "30"
                                        or codes.lookup(outcome).action in NOT_PROCESSED)


def check_signature(status: str) -> None:
    if status not in SIGNATURE_STATUSES:
        raise ValueError(f"signature status must be one of {', '.join(SIGNATURE_STATUSES)}, got {status!r}")


def check_slips(slips: list[tuple[str, str, str | None]]) -> None:
    for kind, text, _ in slips:
        if not kind or not isinstance(text, str):
            raise ValueError("a receipt needs a kind and its text")


def mask_receipt(text: str, pan: str | None, keep: frozenset[str]) -> str:
    """A slip's text with its transaction's card number and any other one masked (`keep`: the MID)."""
    if pan and len(pan) > 10:
        text = text.replace(pan, mask_pan(pan))
    return mask_text(text, keep=keep)


def check_intent(kind: str, batch: str) -> None:
    if kind not in INTENT_KINDS:
        raise ValueError(f"intent kind must be one of {', '.join(INTENT_KINDS)}, got {kind!r}")
    six(batch, "batch")


def event_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_EVENT_QUERY))


def receipt_limit(limit: int) -> int:
    return max(1, min(limit, MAX_EVENT_QUERY))


def event_out(event_id: int, at: float, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
    """An event as `events()` hands it out: the detail's keys, then id, at, kind and the detail itself."""
    return {**detail, "id": event_id, "at": at, "kind": kind, "detail": detail}


class JournalCommon:
    """The base of both backends. A backend provides `path`, `tid`, `_closed`, `_lock` (an RLock), `close()`,
    the calls used here (identity, open_intents, unsigned, store_receipts, set_signed_out) and
    `_counts(batch)`: (reversals owed, receipts not printed, transactions in `batch`)."""

    path: str
    tid: str
    _closed: bool
    _lock: threading.RLock

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} tid={self.tid}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")

    def complete_sign_off(self, intent: Intent) -> None:
        """The 0830 approved the sign-off: signed out and the intent closed, atomically."""
        self.set_signed_out(completing=intent)  # type: ignore[attr-defined]

    def unsigned_stans(self, batch: str) -> list[str]:
        return [u.stan for u in self.unsigned(batch)]  # type: ignore[attr-defined]

    def store_receipt(self, kind: str, text: str, *, stan: str | None = None, batch: str | None = None,
                      copy: str | None = None, printed: bool = False) -> StoredReceipt:
        """Keep a rendered slip (transaction merchant/customer copy, declined, settlement, signoff) before
        printing it. A card number in the text is masked on the way in."""
        return self.store_receipts([(kind, text, copy)], stan=stan, batch=batch,  # type: ignore[attr-defined]
                                   printed=printed)[0]

    def summary(self) -> dict[str, Any]:
        """Counts for the CLI and the daemon: signed_in, batch, stan, pending_reversals, open_intents (kinds),
        unsigned (current batch), pending_receipts, transactions (rows in the current batch)."""
        with self._lock:
            ident = self.identity()  # type: ignore[attr-defined]
            batch = ident["batch"]
            reversals, unprinted, transactions = self._counts(batch)  # type: ignore[attr-defined]
            return {
                "signed_in": bool(ident["signed_in"]),
                "batch": batch,
                "stan": f"{ident['stan']:06d}",
                "pending_reversals": reversals,
                "open_intents": [i.kind for i in self.open_intents()],  # type: ignore[attr-defined]
                "unsigned": len(self.unsigned(batch)),  # type: ignore[attr-defined]
                "pending_receipts": unprinted,
                "transactions": transactions,
            }

    def status(self) -> dict[str, Any]:
        """`summary()` plus the identity a status screen shows (never the keys)."""
        with self._lock:
            ident = self.identity()  # type: ignore[attr-defined]
            return {
                "tid": ident["tid"], "mid": ident["mid"], "merchant_name": ident["merchant_name"],
                "firmware": ident["firmware"], "operator": ident["operator"], "key_mode": ident["key_mode"],
                "signed_in_at": ident["signed_in_at"], "signed_out_at": ident["signed_out_at"],
                "last_activity_at": ident["last_activity_at"], "journal": self.path,
                "schema_version": SCHEMA_VERSION, **self.summary(),
            }
