"""Risk control: rules that approve a sale at the terminal but hold its funds (FM-06).

Defaults from the source documents: a single transaction over 50,000.00 CNY is held for dual review;
a terminal's sales beyond 500 in one (local) day are flagged. A hold never declines: the customer
pays, the terminal prints, and the merchant's funds stay frozen with the rule recorded until an
operator releases them (`Admin.release`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .config import RiskRules

SINGLE_LIMIT = "single_limit"
DAILY_COUNT = "daily_count"


@dataclass(frozen=True)
class RiskHold:
    rule: str  # SINGLE_LIMIT | DAILY_COUNT
    reason: str  # what the funds report shows


def yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d}"


def start_of_day(now: float) -> float:
    """Local midnight before `now` (the day a daily count runs over)."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def assess(rules: RiskRules, *, kind: str, amount_fen: int, sales_today: Callable[[], int]) -> RiskHold | None:
    """The hold a new approved transaction gets, or None. Only sales are assessed.

    `sales_today` counts the terminal's approved sales so far today (not this one); it is called only
    when the single-transaction rule did not already fire.
    """
    if kind != "sale":
        return None
    if amount_fen > rules.single_limit_fen:
        return RiskHold(SINGLE_LIMIT, f"single transaction over {yuan(rules.single_limit_fen)}: dual review")
    if sales_today() >= rules.daily_count_limit:
        return RiskHold(DAILY_COUNT, f"more than {rules.daily_count_limit} transactions today: review")
    return None
