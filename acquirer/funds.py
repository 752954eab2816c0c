"""Funds arrival: when a merchant's money for each transaction lands, and why it has not.

One row per approved sale or refund (`funds` in the ledger), with a status and a reason:

- **pending**: awaiting settlement; settled T1 (arrives 09:00 on the next business day); settled but
  unbalanced and awaiting the batch upload; settled by defective firmware (re-settle).
- **frozen**: a risk rule (or an operator's hold: legal hold, fraud review) holds it; the rule or
  reason is recorded; an operator release unfreezes it.
- **credited**: the money arrived (T0 at settlement; T1 once its arrival time has come).
- **failed**: nothing to pay: the sale was voided or reversed (or an operator marked a channel fault).

A refund's row is money going back to the cardholder: it is deducted from the merchant's payout
(`net_fen` is negative in the report). T0 merchants are credited at settlement; T1 merchants at 09:00
on the next business day: weekends and configured holidays are skipped, make-up workdays count.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

CREDITED, PENDING, FROZEN, FAILED = "credited", "pending", "frozen", "failed"
STATUSES = (CREDITED, PENDING, FROZEN, FAILED)
ARRIVAL_TIME = time(9, 0)

AWAITING_SETTLEMENT = "awaiting settlement"
AWAITING_UPLOAD = "settlement unbalanced: awaiting batch upload"


@dataclass(frozen=True)
class Calendar:
    """Business days for T1 arrival: Monday to Friday, less holidays, plus make-up workdays."""

    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)
    arrival: time = ARRIVAL_TIME

    @classmethod
    def of(cls, config: Any) -> Calendar:
        return cls(frozenset(getattr(config, "holidays", ())), frozenset(getattr(config, "workdays", ())))

    def is_business_day(self, day: date) -> bool:
        return day in self.workdays or (day.weekday() < 5 and day not in self.holidays)

    def next_business_day(self, day: date) -> date:
        candidate = day + timedelta(days=1)
        while not self.is_business_day(candidate):
            candidate += timedelta(days=1)
        return candidate

    def expected_arrival(self, settled_at: float, settlement_type: str) -> float:
        """Epoch seconds when settled funds arrive: at once for T0, 09:00 next business day for T1."""
        if settlement_type == "T0":
            return settled_at
        day = self.next_business_day(datetime.fromtimestamp(settled_at).date())
        return datetime.combine(day, self.arrival).timestamp()


def next_business_day(day: date, holidays: Iterable[date], workdays: Iterable[date] = ()) -> date:
    return Calendar(frozenset(holidays), frozenset(workdays)).next_business_day(day)


def expected_arrival(settled_at: float, settlement_type: str, holidays: Iterable[date],
                     workdays: Iterable[date] = ()) -> float:
    return Calendar(frozenset(holidays), frozenset(workdays)).expected_arrival(settled_at, settlement_type)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


# ------------------------------------------------------------------------------------------------
# state changes (inside the caller's ledger transaction)
# ------------------------------------------------------------------------------------------------


def open_row(db: sqlite3.Connection, *, txn_id: int, mid: str, kind: str, rule: str | None = None,
             reason: str | None = None) -> str:
    """A new approved sale or refund: pending until settlement, or frozen by a risk rule."""
    status = FROZEN if rule else PENDING
    db.execute("INSERT OR REPLACE INTO funds (txn_id, mid, status, reason, kind, rule) VALUES (?, ?, ?, ?, ?, ?)",
               (txn_id, mid, status, reason if rule else AWAITING_SETTLEMENT, kind, rule))
    return status


def fail(db: sqlite3.Connection, txn_id: int, reason: str) -> None:
    db.execute("UPDATE funds SET status = ?, reason = ?, expected_at = NULL WHERE txn_id = ?", (FAILED, reason, txn_id))


def batch_blocker(db: sqlite3.Connection, tid: str, batch: str) -> str | None:
    """Why a batch's funds cannot be scheduled yet (None: settled and clear to pay)."""
    row = db.execute("SELECT result, defect FROM settlement WHERE tid = ? AND batch = ?", (tid, batch)).fetchone()
    if row is None:
        return AWAITING_SETTLEMENT
    if row["defect"]:
        return f"{row['defect']}: re-settle with updated firmware"
    if row["result"] == "unbalanced":
        return AWAITING_UPLOAD
    return None


def _schedule(db: sqlite3.Connection, txn_id: int, settlement_type: str, now: float, calendar: Calendar,
              reason_prefix: str = "settled") -> None:
    expected = calendar.expected_arrival(now, settlement_type)
    if settlement_type == "T0":
        db.execute("UPDATE funds SET status = ?, reason = ?, expected_at = ?, credited_at = ? WHERE txn_id = ?",
                   (CREDITED, f"{reason_prefix} T0", expected, now, txn_id))
    else:
        db.execute("UPDATE funds SET status = ?, reason = ?, expected_at = ?, credited_at = NULL WHERE txn_id = ?",
                   (PENDING, f"{reason_prefix} T1: arrives {_when(expected)}", expected, txn_id))


def settle_batch(db: sqlite3.Connection, *, tid: str, batch: str, settlement_type: str, now: float,
                 calendar: Calendar) -> int:
    """Settlement, batch upload or re-settlement: schedule the batch's pending funds (or say why not).

    Frozen funds stay frozen (a release schedules them later); failed ones stay failed.
    """
    blocker = batch_blocker(db, tid, batch)
    rows = db.execute("SELECT f.txn_id FROM funds f JOIN txn t ON t.id = f.txn_id WHERE t.tid = ? AND t.batch = ? "
                      "AND f.status = ? AND f.credited_at IS NULL", (tid, batch, PENDING)).fetchall()
    db.execute("UPDATE funds SET settled_at = COALESCE(settled_at, ?) WHERE txn_id IN "
               "(SELECT id FROM txn WHERE tid = ? AND batch = ?)", (now, tid, batch))
    for row in rows:
        if blocker is None:
            _schedule(db, row[0], settlement_type, now, calendar)
        else:
            db.execute("UPDATE funds SET reason = ?, expected_at = NULL WHERE txn_id = ?", (blocker, row[0]))
    return len(rows)


def reopen(db: sqlite3.Connection, txn_id: int, *, settlement_type: str, now: float, calendar: Calendar,
           reason_prefix: str = "settled") -> str:
    """Put a row back in play: its void was reversed, or an operator released it.

    A row whose risk rule still holds it (`rule` set) goes back to frozen; otherwise it is pending or
    scheduled as its batch allows. An operator release clears the rule first (see `release`).
    """
    row = db.execute("SELECT f.rule, t.tid, t.batch, t.risk_reason FROM funds f JOIN txn t ON t.id = f.txn_id "
                     "WHERE f.txn_id = ?", (txn_id,)).fetchone()
    if row is None:
        return FAILED
    if row["rule"]:
        db.execute("UPDATE funds SET status = ?, reason = ?, expected_at = NULL, credited_at = NULL WHERE txn_id = ?",
                   (FROZEN, row["risk_reason"] or row["rule"], txn_id))
        return FROZEN
    blocker = batch_blocker(db, row["tid"], row["batch"])
    if blocker is None:
        _schedule(db, txn_id, settlement_type, now, calendar, reason_prefix)
        return CREDITED if settlement_type == "T0" else PENDING
    reason = blocker if reason_prefix == "settled" else f"{reason_prefix}: {blocker}"
    db.execute("UPDATE funds SET status = ?, reason = ?, expected_at = NULL, credited_at = NULL WHERE txn_id = ?",
               (PENDING, reason, txn_id))
    return PENDING


def release(db: sqlite3.Connection, txn_id: int, *, settlement_type: str, now: float, calendar: Calendar) -> str:
    """An operator's release of frozen (or failed-by-fault) funds: the rule no longer holds them."""
    db.execute("UPDATE funds SET rule = NULL WHERE txn_id = ?", (txn_id,))
    return reopen(db, txn_id, settlement_type=settlement_type, now=now, calendar=calendar,
                  reason_prefix="released after review")


def hold(db: sqlite3.Connection, txn_id: int, reason: str, *, status: str = FROZEN) -> None:
    """An operator's hold (frozen: legal hold, fraud review) or channel fault (failed), with its reason."""
    if status not in (FROZEN, FAILED):
        raise ValueError("an operator hold is frozen or failed")
    db.execute("UPDATE funds SET status = ?, reason = ?, rule = ?, expected_at = NULL, credited_at = NULL "
               "WHERE txn_id = ?", (status, reason, "operator", txn_id))


def apply_arrivals(db: sqlite3.Connection, now: float) -> int:
    """Credit every pending, scheduled row whose arrival time has come. Returns how many."""
    cur = db.execute("UPDATE funds SET status = ?, credited_at = expected_at, reason = 'credited' "
                     "WHERE status = ? AND expected_at IS NOT NULL AND expected_at <= ?", (CREDITED, PENDING, now))
    return cur.rowcount


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

_REPORT = ("SELECT t.tid, t.batch, t.stan, t.rrn, t.kind, t.amount_fen, t.pan_masked, t.created_at, f.status, "
           "f.reason, f.rule, f.settled_at, f.expected_at, f.credited_at FROM funds f JOIN txn t ON t.id = f.txn_id ")


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["net_fen"] = -out["amount_fen"] if out["kind"] == "refund" else out["amount_fen"]
    return out


def report(db: sqlite3.Connection, mid: str) -> list[dict[str, Any]]:
    """Every sale and refund of a merchant with its funds status, reason and times (PANs masked)."""
    return [_row(r) for r in db.execute(_REPORT + "WHERE f.mid = ? ORDER BY t.id", (mid,)).fetchall()]


def query(db: sqlite3.Connection, mid: str, *, stan: str | None = None, rrn: str | None = None,
          tid: str | None = None) -> dict[str, Any] | None:
    """One transaction's funds by merchant id + STAN (the latest with that STAN) or + RRN."""
    if (stan is None) == (rrn is None):
        raise ValueError("query by stan or by rrn (one of them)")
    if rrn is not None:
        row = db.execute(_REPORT + "WHERE f.mid = ? AND t.rrn = ?", (mid, rrn)).fetchone()
    else:
        where, params = "WHERE f.mid = ? AND t.stan = ?", [mid, stan]
        if tid is not None:
            where, params = where + " AND t.tid = ?", [*params, tid]
        row = db.execute(_REPORT + where + " ORDER BY t.id DESC LIMIT 1", tuple(params)).fetchone()
    return _row(row) if row is not None else None


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per status: count and net amount (refunds negative), for the per-merchant report's footer."""
    out = {status: {"count": 0, "net_fen": 0} for status in STATUSES}
    for row in rows:
        out[row["status"]]["count"] += 1
        out[row["status"]]["net_fen"] += row["net_fen"]
    return out
