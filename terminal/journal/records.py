"""What the journal hands out: plain frozen records, the status vocabularies, and its one error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class JournalError(Exception):
    """The journal cannot do what was asked: not a journal, a newer schema, another terminal's file,
    a wrong card-data key, a STAN already used, a closed journal. The message names the file."""


class JournalFull(JournalError):
    """The disk (or the database's size limit) is full: the step was not recorded, earlier ones are intact."""


#: Online financial transactions the journal keeps (balance inquiries move no money and are not kept).
TXN_KINDS = ("sale", "void", "refund")

#: Transaction statuses.
#: pending           journaled before the request left; outcome unknown (after a crash: unanswered)
#: approved          a verified reply approved it (a sale with `refunded_fen` > 0 is partly refunded)
#: declined          a verified reply declined it: nothing charged
#: reversal_pending  no usable reply: its reversal is owed to the host
#: reversed          the host answered the reversal: counts nowhere
#: reversal_refused  the host answered the reversal but refused to reverse (12, 64 ...): needs a person
#: voided            a sale cancelled by a later approved void (still a debit of its batch)
#: refunded          a sale refunded in full by later approved refunds
TXN_STATUSES = ("pending", "approved", "declined", "reversal_pending", "reversed", "reversal_refused", "voided",
                "refunded")

#: Statuses in which a transaction counts in its batch (settlement totals, batch upload).
COUNTED_STATUSES = ("approved", "voided", "refunded")

#: Signature statuses (FM-11).
SIGNATURE_STATUSES = ("not_required", "pending", "signed", "unsigned", "uploaded")

#: Reversal reasons (field 39 of the 0400): no reply, reply MAC failed, other.
REVERSAL_REASONS = ("98", "A0", "06")

#: Write-ahead intents for day-end work.
INTENT_KINDS = ("settlement", "sign_off", "batch_upload", "reboot")


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
    status: str
    rc: str | None
    rrn: str | None
    auth_code: str | None
    host_date: str | None
    host_time: str | None
    refunded_fen: int
    signature: str
    expiry: str | None = None
    original_batch: str | None = None
    reversal_rc: str | None = None
    #: None (no slip stored), "pending" (a slip not printed yet), "printed", or "reprinted".
    receipt: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def refundable_fen(self) -> int:
        """What a refund may still return: the amount less earlier approved refunds (0 unless a live sale)."""
        if self.kind != "sale" or self.status not in ("approved", "refunded"):
            return 0
        return max(0, self.amount_fen - self.refunded_fen)


@dataclass(frozen=True)
class PendingReversal:
    stan: str
    batch: str
    #: The 0400's fields: number -> str, binary fields (52, 55, 62, 64) as bytes; 39 is the reason.
    fields: dict[int, str | bytes]
    reason: str
    attempts: int
    last_attempt: float | None = None
    #: The response code of the last answer that did not clear it (e.g. 96 during maintenance).
    last_rc: str | None = None
    kind: str = ""
    amount_fen: int = 0


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
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class SettlementRecord:
    batch: str
    result: str
    terminal_totals: str
    host_totals: str | None
    uploaded: int
    stan: str | None = None
    settled_at: float = 0.0
    #: How many settlement replies were recorded for the batch (a resumed settlement is answered again).
    answers: int = 1
    voucher_printed: bool = False


@dataclass(frozen=True)
class BatchItem:
    stan: str
    pan: str
    amount_fen: int
    kind: str

    def __repr__(self) -> str:  # the clear PAN never reaches a log through a repr
        return f"BatchItem(stan={self.stan!r}, pan='<{len(self.pan)} digits>', amount_fen={self.amount_fen}, " \
               f"kind={self.kind!r})"


@dataclass(frozen=True)
class UnsignedItem:
    stan: str
    pan_masked: str
    amount_fen: int
    kind: str
    signature: str


@dataclass(frozen=True)
class SettlementReport:
    """A batch as the merchant's settlement report shows it (FM-11, FM-16)."""

    batch: str
    debit_amount: int
    debit_count: int
    credit_amount: int
    credit_count: int
    settlement: SettlementRecord | None
    unsigned: tuple[UnsignedItem, ...]
    by_status: dict[str, int] = field(default_factory=dict)
    pending_reversals: int = 0

    @property
    def totals(self) -> tuple[int, int, int, int]:
        return self.debit_amount, self.debit_count, self.credit_amount, self.credit_count
