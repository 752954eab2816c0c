"""Two business days end to end over real loopback TCP, from a terminal side built from protocol/ by hand.

Day 1 (Friday): sign-in, sales, a void, a refund, a reversal, a balanced settlement, sign-off.
Day 2 (Monday): sign-in on the next batch, sales, one whose reply the terminal never heard (so its
totals are short), an unbalanced settlement fixed by a batch upload in two messages, sign-off.
The ledger, the reversals, the settlement records and the funds report (T1 arrival over a weekend,
frozen funds released) are checked after each step, on a host clock the test moves by hand.
"""

from __future__ import annotations

import json
from datetime import datetime

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol import catalogue
from protocol.composite import BatchRecord, Field61, SettlementTotals, Totals
from terminal.links import open_link

from .test_host_e2e import CARD, MID, TID, TMK, HandTerminal


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


async def _settle(term: HandTerminal, totals: Totals):
    return await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                totals=SettlementTotals(totals)))


async def _sign_off(term: HandTerminal):
    return await term.send(catalogue.network("sign_off", tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch))


async def test_two_business_days(tmp_path):
    clock = Clock(datetime(2026, 11, 20, 10, 0))  # Friday
    config = HostConfig.from_mapping({"host": {
        "merchants": [{"mid": MID, "name": "GOOD FOOD CAFE", "settlement_type": "T1"}],
        "terminals": [{"tid": TID, "mid": MID, "tmk": TMK}],
        "calendar": {"holidays": ["2026-11-23"]},  # Monday is a holiday: T1 arrives Tuesday
    }})
    async with HostServer(config, str(tmp_path / "host.sqlite"), clock=clock) as host:
        url = await host.serve("tcp://127.0.0.1:0")
        admin = host.admin

        # ---- day 1 -------------------------------------------------------------------------------
        term = HandTerminal(await open_link(url))
        signed = await term.sign_in()
        assert signed[39] == "00" and term.batch == "000001" and len(signed[62]) == 60  # three keys + KCVs
        coffee = await term.financial("sale", 3800)
        lunch = await term.financial("sale", 12_50)
        big = await term.financial("sale", 5_600_000)  # 56,000.00: approved, frozen for dual review
        assert [r[39] for r in (coffee, lunch, big)] == ["00"] * 3
        void = await term.financial("void", 12_50, original=Field61(term.batch, lunch[11]), original_rrn=lunch[37])
        refund = await term.financial("refund", 800, original=Field61(term.batch, coffee[11], coffee[13]),
                                      original_rrn=coffee[37])
        assert (void[39], refund[39]) == ("00", "00")
        unheard = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD,
                                 amount_fen=999)
        assert (await term.send(unheard))[39] == "00"  # the host approved; the terminal timed out ...
        assert (await term.send(catalogue.reversal(unheard, "98")))[39] == "00"  # ... and reversed it
        debit = 3800 + 12_50 + 5_600_000
        assert admin.totals(TID, "000001") == (debit, 3, 12_50 + 800, 2)

        clock.set(datetime(2026, 11, 20, 18, 0))
        settled = await _settle(term, Totals(debit, 3, 12_50 + 800, 2))
        assert settled[39] == "00" and SettlementTotals.parse(settled[48]).result == "balanced"
        assert (await _sign_off(term))[39] == "00"
        assert admin.sign_offs(TID) == 1 and admin.session(TID)["batch"] == "000002"

        report = {r["stan"]: r for r in admin.funds_report(MID)}
        assert {s: r["status"] for s, r in report.items()} == {
            coffee[11]: "pending", lunch[11]: "failed", big[11]: "frozen", refund[11]: "pending",
            unheard[11]: "failed"}
        assert report[coffee[11]]["reason"] == "settled T1: arrives 2026-11-24 09:00"  # weekend + holiday
        assert (report[lunch[11]]["reason"], report[unheard[11]]["reason"]) == ("voided", "reversed")
        assert "dual review" in report[big[11]]["reason"] and report[big[11]]["rule"] == "single_limit"
        assert [(r["stan"], r["outcome"]) for r in admin.reversals(TID)] == [(unheard[11], "reversed")]
        await term.link.close()

        # ---- day 2 -------------------------------------------------------------------------------
        clock.set(datetime(2026, 11, 23, 9, 30))
        term.link = await open_link(url)
        assert (await term.sign_in())[39] == "00" and term.batch == "000002"
        sales = [await term.financial("sale", 100 * (i + 1)) for i in range(9)]
        lost = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=777)
        assert (await term.send(lost))[39] == "00"  # approved, but this terminal never counts it (no reversal)
        terminal_debit = sum(100 * (i + 1) for i in range(9))

        clock.set(datetime(2026, 11, 23, 18, 0))
        unbalanced = await _settle(term, Totals(terminal_debit, 9, 0, 0))
        assert SettlementTotals.parse(unbalanced[48]).result == "unbalanced"
        assert admin.query_funds(MID, stan=sales[0][11])["reason"] == "settlement unbalanced: awaiting batch upload"
        records = [BatchRecord(s[11], CARD.pan, 100 * (i + 1)) for i, s in enumerate(sales)]
        for chunk in (records[:8], records[8:]):
            up = await term.send(catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch="000002",
                                                        records=chunk))
            assert up[39] == "00"
        end = await term.send(catalogue.batch_upload_end(tid=TID, mid=MID, stan=term.next_stan(), batch="000002",
                                                         total_records=9))
        assert end[39] == "00"
        (day2,) = [s for s in admin.settlements(TID) if s["batch"] == "000002"]
        assert day2["result"] == "reconciled" and day2["declared_records"] == 9
        assert json.loads(day2["differences"]) == [{"side": "host only", "stan": lost[11], "amount": 777}]
        assert (await _sign_off(term))[39] == "00" and admin.sign_offs(TID) == 2
        await term.link.close()

        # ---- funds arrive --------------------------------------------------------------------------
        assert admin.release(MID, stan=big[11])  # the dual review passed
        clock.set(datetime(2026, 11, 24, 9, 0))  # Tuesday 09:00: day 1 and day 2 arrive together
        report = admin.funds_report(MID)
        credited = {r["stan"] for r in report if r["status"] == "credited" and r["batch"] == "000002"}
        assert credited == {s[11] for s in sales} | {lost[11]}  # the host pays what it approved
        summary = admin.funds_summary(MID)
        assert summary["credited"]["net_fen"] == 3800 - 800 + 5_600_000 + terminal_debit + 777
        assert summary["failed"]["count"] == 2 and summary["frozen"]["count"] == 0 and summary["pending"]["count"] == 0
        row = admin.query_funds(MID, rrn=big[37])
        assert row["status"] == "credited" and row["credited_at"] == clock.now
