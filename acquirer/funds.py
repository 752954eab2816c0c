"""Funds arrival: when a merchant's money for each transaction lands, and why it has not.

Statuses: credited, pending (awaiting settlement, or the T1 next business day), frozen (a risk rule
held it; an operator release unfreezes), failed (voided / reversed: nothing to pay). T0 merchants are
credited at settlement; T1 merchants at 09:00 on the next business day (weekends and configured
holidays skipped).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

CREDITED, PENDING, FROZEN, FAILED = "credited", "pending", "frozen", "failed"


def next_business_day(day: date, holidays: set[date]) -> date:
    candidate = day + timedelta(days=1)
    while candidate.weekday() >= 5 or candidate in holidays:
        candidate += timedelta(days=1)
    return candidate


def expected_arrival(settled_at: float, settlement_type: str, holidays: set[date]) -> float:
    """Epoch seconds when settled funds arrive: at once for T0, 09:00 next business day for T1."""
    if settlement_type == "T0":
        return settled_at
    day = next_business_day(datetime.fromtimestamp(settled_at).date(), holidays)
    return datetime.combine(day, time(9, 0)).timestamp()
