"""Risk rules and funds arrival as functions: holds, calendar, scheduling, report, query, release."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from acquirer import funds, risk
from acquirer.admin import Admin
from acquirer.config import HostConfig, Merchant, RiskRules
from acquirer.ledger import Ledger

MID = "898100012340001"
TID = "10000001"


# risk -------------------------------------------------------------------------------------------


def test_single_limit_is_strictly_over_and_says_dual_review():
    rules = RiskRules()
    assert risk.assess(rules, kind="sale", amount_fen=5_000_000, sales_today=lambda: 0) is None
    hold = risk.assess(rules, kind="sale", amount_fen=5_000_001, sales_today=lambda: 0)
    assert hold == risk.RiskHold("single_limit", "single transaction over 50,000.00: dual review")


def test_daily_count_flags_the_501st_sale():
    rules = RiskRules(daily_count_limit=500)
    assert risk.assess(rules, kind="sale", amount_fen=100, sales_today=lambda: 499) is None
    hold = risk.assess(rules, kind="sale", amount_fen=100, sales_today=lambda: 500)
    assert hold is not None and hold.rule == "daily_count" and "500" in hold.reason


def test_only_sales_are_assessed_and_the_count_is_lazy():
    def boom() -> int:
        raise AssertionError("not needed")

    assert risk.assess(RiskRules(), kind="refund", amount_fen=10**9, sales_today=boom) is None
    assert risk.assess(RiskRules(), kind="sale", amount_fen=10**9, sales_today=boom).rule == "single_limit"


def test_start_of_day_is_local_midnight():
    noon = datetime(2026, 11, 22, 12, 30, 15, 500).timestamp()
    assert risk.start_of_day(noon) == datetime(2026, 11, 22).timestamp()
    assert risk.yuan(5_600_000) == "56,000.00" and risk.yuan(5) == "0.05"


# calendar ---------------------------------------------------------------------------------------


def test_t0_same_day_t1_next_business_day_at_nine():
    cal = funds.Calendar(holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}),
                         workdays=frozenset({date(2026, 10, 10)}))
    friday_evening = datetime(2026, 11, 20, 18, 0).timestamp()
    assert cal.expected_arrival(friday_evening, "T0") == friday_evening
    assert cal.expected_arrival(friday_evening, "T1") == datetime(2026, 11, 23, 9, 0).timestamp()  # Monday
    wednesday = datetime(2026, 9, 30, 20, 0).timestamp()  # then two holidays, a weekend...
    assert cal.expected_arrival(wednesday, "T1") == datetime(2026, 10, 5, 9, 0).timestamp()
    friday = datetime(2026, 10, 9, 20, 0).timestamp()  # ... and a Saturday that is a make-up workday
    assert cal.expected_arrival(friday, "T1") == datetime(2026, 10, 10, 9, 0).timestamp()
    assert funds.next_business_day(date(2026, 9, 30), {date(2026, 10, 1)}) == date(2026, 10, 2)


def test_calendar_of_config():
    config = HostConfig(holidays={date(2026, 1, 1)}, workdays={date(2026, 1, 4)})
    cal = funds.Calendar.of(config)
    assert not cal.is_business_day(date(2026, 1, 1)) and cal.is_business_day(date(2026, 1, 4))


# the funds rows through a ledger -----------------------------------------------------------------


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def book(tmp_path):
    clock = Clock(datetime(2026, 11, 20, 15, 0))  # a Friday afternoon
    ledger = Ledger(str(tmp_path / "host.sqlite"), clock=clock)
    config = HostConfig(merchants={MID: Merchant(MID, "GOOD FOOD CAFE", "T1")})
    ledger.sync_merchants(config.merchants.values())

    def sale(stan: str, amount: int = 1000, *, kind: str = "sale", rule: str | None = None) -> int:
        rrn = ledger.next_rrn()
        with ledger.tx() as db:
            txn_id = ledger.insert_txn(db, tid=TID, mid=MID, batch="000001", stan=stan, kind=kind, amount_fen=amount,
                                       pan="6222020000000015", rc="00", status="approved", rrn=rrn,
                                       risk_reason=f"{rule}: review" if rule else None)
            funds.open_row(db, txn_id=txn_id, mid=MID, kind=kind, rule=rule, reason=f"{rule}: review")
        return txn_id

    def settle(result: str = "balanced", defect: str | None = None) -> None:
        with ledger.tx() as db:
            db.execute("INSERT OR REPLACE INTO settlement (tid, batch, terminal_totals, host_totals, result, "
                       "reply_48, defect, at) VALUES (?, '000001', '', '', ?, '', ?, ?)", (TID, result, defect,
                                                                                          clock.now))
            funds.settle_batch(db, tid=TID, batch="000001", settlement_type="T1", now=clock.now,
                               calendar=funds.Calendar())

    admin = Admin.open(str(tmp_path / "host.sqlite"), clock=clock)
    yield ledger, clock, sale, settle, admin
    admin.close()
    ledger.close()


def status(admin: Admin, stan: str) -> tuple[str, str]:
    row = admin.query_funds(MID, stan=stan)
    return row["status"], row["reason"]


def test_a_t1_batch_from_sale_to_credit(book):
    _ledger, clock, sale, settle, admin = book
    sale("000001")
    sale("000002", 300, kind="refund")
    assert status(admin, "000001") == ("pending", "awaiting settlement")
    settle()
    state, reason = status(admin, "000001")
    assert state == "pending" and reason == "settled T1: arrives 2026-11-23 09:00"
    clock.now = datetime(2026, 11, 23, 9, 0).timestamp()  # Monday 09:00: the report applies the arrival
    rows = admin.funds_report(MID)
    assert [(r["stan"], r["status"], r["net_fen"]) for r in rows] == [("000001", "credited", 1000),
                                                                    ("000002", "credited", -300)]
    assert rows[0]["credited_at"] == clock.now
    assert admin.funds_summary(MID)["credited"] == {"count": 2, "net_fen": 700}


def test_unbalanced_batch_waits_for_the_upload(book):
    _ledger, _clock, sale, settle, admin = book
    sale("000001")
    settle("unbalanced")
    assert status(admin, "000001") == ("pending", funds.AWAITING_UPLOAD)
    assert admin.query_funds(MID, stan="000001")["expected_at"] is None
    settle("reconciled")
    assert status(admin, "000001")[1].startswith("settled T1")


def test_defective_settlement_holds_funds_with_the_reason(book):
    _ledger, _clock, sale, settle, admin = book
    sale("000001")
    settle(defect="settlement from firmware 2.1.5 lacks currency data")
    assert status(admin, "000001") == ("pending", "settlement from firmware 2.1.5 lacks currency data: "
                                                  "re-settle with updated firmware")


def test_frozen_stays_frozen_until_released_and_release_follows_the_batch(book):
    _ledger, _clock, sale, settle, admin = book
    sale("000001", rule="single_limit")
    assert status(admin, "000001") == ("frozen", "single_limit: review")
    assert admin.release(MID, stan="000001")
    assert status(admin, "000001") == ("pending", "released after review: awaiting settlement")
    assert not admin.release(MID, stan="000001")  # nothing frozen any more
    sale("000002", rule="daily_count")
    settle()
    assert status(admin, "000002")[0] == "frozen"  # settlement does not pay frozen funds
    assert status(admin, "000001")[0] == "pending"
    assert admin.release(MID, stan="000002")
    state, reason = status(admin, "000002")
    assert state == "pending" and reason.startswith("released after review T1: arrives")


def test_operator_hold_and_channel_fault_then_release(book):
    ledger, _clock, sale, settle, admin = book
    txn = sale("000001")
    settle()
    assert admin.hold(MID, stan="000001", reason="legal hold: court order")
    assert status(admin, "000001") == ("frozen", "legal hold: court order")
    assert admin.release(MID, stan="000001")
    assert admin.hold(MID, stan="000001", reason="payment channel fault", failed=True)
    assert status(admin, "000001") == ("failed", "payment channel fault")
    rrn = ledger.one("SELECT rrn FROM txn WHERE id = ?", (txn,))[0]
    assert admin.release(MID, rrn=rrn)  # fault cleared: by RRN this time
    assert status(admin, "000001")[0] == "pending"


def test_voided_funds_cannot_be_held_or_released(book):
    ledger, _clock, sale, _settle, admin = book
    txn = sale("000001")
    with ledger.tx() as db:
        funds.fail(db, txn, "voided")
    assert not admin.hold(MID, stan="000001", reason="x") and not admin.release(MID, stan="000001")
    assert admin.query_funds(MID, stan="999999") is None


def test_query_needs_exactly_one_key(book):
    ledger, _clock, _sale, _settle, _admin = book
    with pytest.raises(ValueError):
        funds.query(ledger.connection, MID)
    with pytest.raises(ValueError):
        funds.query(ledger.connection, MID, stan="000001", rrn="1" * 12)
