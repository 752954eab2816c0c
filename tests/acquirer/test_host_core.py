"""The host's sans-I/O core: `AcquirerHost.handle(frame) -> frame | None`, no sockets, a hand-moved clock.

Covers the decisions test_host_e2e / test_host_contract do not: refusals carrying 37, balance duplicates,
card checks (Luhn 14, field-14 expiry 54, amount 13), voids across batches, refunds' 37 / 61.3, which
0500 is replayed and which is 77, 03 on settlement, unbalanced funds waiting for the upload, uploads
sent twice, reversals of voids of frozen sales, maintenance replies (MAC'd when verifiable, 44 says
until when), responses and internal failures, and one JSON log line per message.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest

from acquirer.config import HostConfig, MaintenanceWindow
from acquirer.host import AcquirerHost
from acquirer.ledger import Ledger
from protocol import catalogue, security
from protocol.catalogue import CardData
from protocol.composite import BatchRecord, Field60, Field61, SettlementTotals, Totals
from protocol.dialect import get_dialect
from protocol.framing import Frame, Header, Tpdu
from protocol.message import Message

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
CARD = CardData(pan="6222020000000015", expiry="3012", track2="6222020000000015D30122010000000000")
D = get_dialect()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0).timestamp()  # a Friday afternoon

    def __call__(self) -> float:
        return self.now


class Side:
    """The terminal side: builds, MACs, frames; the host answers synchronously."""

    def __init__(self, host: AcquirerHost, tid: str = TID, mid: str = MID) -> None:
        self.host, self.tid, self.mid = host, tid, mid
        self.stan, self.batch, self.keys = 0, "000001", None
        self.header: Header | None = None

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    def raw(self, payload: bytes) -> Message | None:
        frame = self.host.handle(Frame(Tpdu(dest=6), Header.for_firmware("3.0.8"), payload))
        if frame is None:
            return None
        self.header = frame.header
        return D.decode(frame.payload)

    def send(self, msg: Message, *, mac: bool | None = None) -> Message:
        if (mac if mac is not None else msg.mti in catalogue.MAC_MTIS) and self.keys is not None:
            security.sign(D, msg, self.keys.mac_key)
        reply = self.raw(D.encode(msg))
        assert reply is not None
        return reply

    def sign_in(self) -> Message:
        reply = self.send(catalogue.sign_in(tid=self.tid, mid=self.mid, stan=self.next_stan(), batch=self.batch))
        if reply[39] == "00":
            self.keys = security.unwrap_working_keys(bytes.fromhex(TMK), reply[62])
            self.batch = Field60.parse(reply[60]).batch
        return reply

    def fin(self, name: str, amount: int | None = None, **kw) -> Message:
        stan = kw.pop("stan", None) or self.next_stan()
        overrides = kw.pop("fields", {})
        msg = catalogue.financial(name, tid=self.tid, mid=self.mid, stan=stan, batch=kw.pop("batch", self.batch),
                                  card=kw.pop("card", CARD), amount_fen=amount, **kw)
        for number, value in overrides.items():  # what the builders refuse to make (a zero amount...)
            msg[number] = value
        reply = self.send(msg)
        if 64 in reply:
            assert security.verify(D, reply, self.keys.mac_key)
        return reply

    def settle(self, totals: Totals, batch: str | None = None, mid: str | None = None) -> Message:
        return self.send(catalogue.settlement(tid=self.tid, mid=mid or self.mid, stan=self.next_stan(),
                                              batch=batch or self.batch, totals=SettlementTotals(totals)))

    def upload(self, records: list[BatchRecord], batch: str) -> Message:
        return self.send(catalogue.batch_upload(tid=self.tid, mid=self.mid, stan=self.next_stan(), batch=batch,
                                                records=records))

    def upload_end(self, total: int, batch: str) -> Message:
        return self.send(catalogue.batch_upload_end(tid=self.tid, mid=self.mid, stan=self.next_stan(), batch=batch,
                                                    total_records=total))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def host(clock):
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}", f"20000002:{MID}:{TMK}"])
    config.add_terminal("30000003", MID, TMK, status="disabled")
    ledger = Ledger(":memory:", clock=clock)
    yield AcquirerHost(config, ledger, clock=clock)
    ledger.close()


@pytest.fixture
def side(host):
    s = Side(host)
    assert s.sign_in()[39] == "00"
    return s


def funds_of(host: AcquirerHost, stan: str) -> tuple[str, str]:
    row = host.ledger.one("SELECT f.status, f.reason FROM funds f JOIN txn t ON t.id = f.txn_id WHERE t.stan = ?",
                          (stan,))
    return row["status"], row["reason"]


# financial refusals and card checks ---------------------------------------------------------------


def test_a_duplicate_carries_the_original_rrn_and_charges_nothing(host, side):
    first = side.fin("sale", 1000, stan="000050")
    dup = side.fin("sale", 1000, stan="000050")
    assert (first[39], dup[39]) == ("00", "94") and dup[37] == first[37] and 38 not in dup
    assert host.ledger.totals(TID, side.batch) == (1000, 1, 0, 0)


def test_wrong_batch_77_carries_a_fresh_rrn_and_asks_for_sign_in(host, side):
    reply = side.fin("sale", 1000, batch="000009")
    assert reply[39] == "77" and len(reply[37]) == 12 and side.header.requirement == 3
    assert host.ledger.query("SELECT * FROM txn WHERE kind = 'sale'") == []


def test_balance_inquiries_are_recorded_so_a_repeat_is_a_duplicate(host, side):
    first = side.fin("balance", stan="000007")
    again = side.fin("balance", stan="000007")
    assert (first[39], again[39]) == ("00", "94") and 54 in first and 37 not in again
    assert host.ledger.totals(TID, side.batch) == (0, 0, 0, 0)  # never in the totals


@pytest.mark.parametrize(("card", "amount", "rc"), [
    (CardData(pan="6222020000000016", expiry="3012"), 100, "14"),  # Luhn check digit wrong
    (CardData(pan="62220200015", expiry="3012"), 100, "14"),  # too short
    (CardData(pan="6222020000000098", expiry="2610"), 100, "54"),  # expired by field 14 (host date 2026-11)
    (CardData(pan="6222020000000098", expiry="2611"), 100, "00"),  # good through this month
    (CARD, 0, "13"),  # nothing to charge
])
def test_card_number_expiry_and_amount_checks(host, side, card, amount, rc):
    fields = {4: f"{amount:012d}"}
    assert side.fin("sale", amount or 1, card=card, fields=fields)[39] == rc


def test_void_of_a_sale_from_a_settled_batch_is_12_refund_it_instead(host, side):
    sale = side.fin("sale", 1000)
    old = side.batch
    assert side.settle(Totals(1000, 1, 0, 0))[39] == "00"
    side.batch = Field60.parse(side.sign_in()[60]).batch
    assert side.batch != old
    void = side.fin("void", 1000, original=Field61(old, sale[11]), original_rrn=sale[37])
    assert void[39] == "12"
    refund = side.fin("refund", 1000, original=Field61(old, sale[11], sale[13]), original_rrn=sale[37])
    assert refund[39] == "00"


def test_refund_checks_37_and_61_3_against_the_original(host, side):
    sale = side.fin("sale", 1000)
    wrong_rrn = side.fin("refund", 100, original=Field61(side.batch, sale[11], sale[13]), original_rrn="9" * 12)
    wrong_date = side.fin("refund", 100, original=Field61(side.batch, sale[11], "0101"))
    no_date = side.fin("refund", 100, original=Field61(side.batch, sale[11]))
    assert (wrong_rrn[39], wrong_date[39], no_date[39]) == ("25", "25", "00")


# reversals -----------------------------------------------------------------------------------------


def test_reversal_of_the_void_of_a_frozen_sale_freezes_it_again(host, side):
    big = side.fin("sale", 6_000_000)
    assert funds_of(host, big[11])[0] == "frozen"
    void_msg = catalogue.void(tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch, card=CARD,
                              amount_fen=6_000_000, original=Field61(side.batch, big[11]), original_rrn=big[37])
    assert side.send(void_msg)[39] == "00"
    assert funds_of(host, big[11]) == ("failed", "voided")
    assert side.send(catalogue.reversal(void_msg, "98"))[39] == "00"
    assert funds_of(host, big[11])[0] == "frozen"  # the risk rule still holds it
    assert host.ledger.txn(TID, side.batch, big[11])["status"] == "approved"


def test_reversals_are_recorded_with_reason_and_count(host, side):
    sale_msg = catalogue.sale(tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch, card=CARD, amount_fen=500)
    assert side.send(sale_msg)[39] == "00"
    for _ in range(2):
        assert side.send(catalogue.reversal(sale_msg, "A0"))[39] == "00"
    (row,) = host.ledger.reversals(TID)
    assert (row["reason"], row["outcome"], row["received"]) == ("A0", "reversed", 2)
    assert funds_of(host, sale_msg[11]) == ("failed", "reversed")


# settlement and batch upload ----------------------------------------------------------------------


def test_only_the_just_settled_batch_is_replayed(host, side):
    assert side.settle(Totals())[39] == "00"  # batch 1 -> host on 2
    assert side.settle(Totals(), batch="000002")[39] == "00"  # batch 2 -> host on 3
    replay = side.settle(Totals(), batch="000002")
    assert replay[39] == "00" and SettlementTotals.parse(replay[48]).result == "balanced"
    stale = side.settle(Totals(), batch="000001")
    assert stale[39] == "77" and side.header.requirement == 3
    assert side.settle(Totals(), batch="000007")[39] == "77"


def test_settlement_with_a_stale_merchant_is_03(host, side):
    assert side.settle(Totals(), mid="898100099990001")[39] == "03" and side.header.requirement == 1
    assert host.ledger.settlement(TID, "000001") is None


def test_a_non_zero_foreign_half_is_accepted_and_unbalanced(host, side):
    msg = catalogue.settlement(tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch,
                               totals=SettlementTotals(Totals(), Totals(100, 1, 0, 0)))
    reply = side.send(msg)
    assert reply[39] == "00" and SettlementTotals.parse(reply[48]).result == "unbalanced"
    assert SettlementTotals.parse(reply[48]).foreign.debit_amount == 100  # echoed


def test_unbalanced_funds_wait_for_the_upload_and_a_resent_record_counts_once(host, side, clock):
    sale = side.fin("sale", 4000)
    batch = side.batch
    assert SettlementTotals.parse(side.settle(Totals(1000, 1, 0, 0))[48]).result == "unbalanced"
    assert funds_of(host, sale[11]) == ("pending", "settlement unbalanced: awaiting batch upload")
    record = BatchRecord(sale[11], CARD.pan, 4000)
    assert side.upload([record], batch)[39] == "00"
    assert side.upload([record], batch)[39] == "00"  # the terminal timed out and sent it again
    assert side.upload_end(1, batch)[39] == "00"
    settlement = host.ledger.settlement(TID, batch)
    assert settlement["result"] == "reconciled" and json.loads(settlement["differences"]) == []
    assert settlement["declared_records"] == 1 and len(host.ledger.uploads(TID, batch)) == 1
    status, reason = funds_of(host, sale[11])
    assert status == "pending" and reason == "settled T1: arrives 2026-11-23 09:00"


def test_an_upload_with_another_card_or_amount_is_a_difference(host, side):
    sale = side.fin("sale", 4000)
    batch = side.batch
    side.settle(Totals(4000, 1, 0, 0))
    side.upload([BatchRecord(sale[11], "6217000000000097", 4000)], batch)
    side.upload_end(1, batch)
    differences = json.loads(host.ledger.settlement(TID, batch)["differences"])
    assert differences == [{"side": "host only", "stan": sale[11], "amount": 4000},
                           {"side": "terminal only", "stan": sale[11], "amount": 4000}]


# maintenance, terminals, malformed, failures -------------------------------------------------------


def test_maintenance_96_is_maced_when_verifiable_and_says_until_when(host, side, clock):
    host.config.maintenance.append(MaintenanceWindow(clock.now - 60, clock.now + 1800))
    reply = side.fin("sale", 100)
    assert reply[39] == "96" and reply[44] == "MAINTENANCE UNTIL 1530" and 64 in reply  # verified by fin()
    assert 37 not in reply and 12 in reply and 13 in reply
    echo = side.send(catalogue.network("echo", tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch))
    assert echo[39] == "96"
    unknown = Side(host, tid="99999999")
    assert unknown.sign_in()[39] == "96"  # during maintenance everyone hears 96
    clock.now += 1800
    assert side.fin("sale", 100)[39] == "00"


def test_disabled_and_unknown_terminals_are_97(host):
    assert Side(host, tid="30000003").sign_in()[39] == "97"
    assert Side(host, tid="99999999").sign_in()[39] == "97"


def test_a_response_mti_is_dropped_not_answered(host, side):
    reply = Message("0210", {11: "000001", 41: TID, 42: MID, 39: "00"})
    assert side.raw(D.encode(reply)) is None


def test_an_internal_failure_is_96_and_the_host_serves_on(host, side, monkeypatch, caplog):
    def broken(*args, **kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(host, "_on_sale", broken)
    with caplog.at_level(logging.ERROR, logger="possim.host"):
        assert side.fin("sale", 100)[39] == "96"
    assert any("disk on fire" in r.message and "internal_error" in r.message for r in caplog.records)
    monkeypatch.undo()
    assert side.fin("sale", 100)[39] == "00"


def test_one_json_line_per_message_including_format_errors(host, side, caplog):
    caplog.set_level(logging.INFO, logger="possim.host")
    side.fin("sale", 100)
    truncated = D.encode(catalogue.network("echo", tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch))[:-3]
    assert side.raw(truncated)[39] == "30"
    assert side.raw(b"\x08\x20" + b"\xff" * 8) is None
    lines = [json.loads(r.message) for r in caplog.records if r.name == "possim.host"]
    sale = next(line for line in lines if line.get("mti") == "0200")
    assert {"tid", "mti", "stan", "rc", "latency_ms", "pan"} <= set(sale) and sale["pan"] == "622202******0015"
    bad = [line for line in lines if line.get("event") == "malformed"]
    assert bad[0]["rc"] == "30" and bad[0]["tid"] == TID and "latency_ms" in bad[0]
    assert bad[1]["action"] == "drop"
    text = " ".join(r.message for r in caplog.records)
    assert CARD.pan not in text and TMK not in text


def test_respond_is_the_same_core_at_message_level(host, side):
    echo = catalogue.network("echo", tid=TID, mid=MID, stan=side.next_stan(), batch=side.batch)
    reply, requirement = host.respond(echo, Header())
    assert (reply.mti, reply[39], reply[11], requirement) == ("0830", "00", echo[11], 0)
    stale = catalogue.network("sign_off", tid=TID, mid="898100099990001", stan=side.next_stan(), batch=side.batch)
    assert host.respond(stale)[0][39] == "03" and host.respond(stale)[1] == 1
    assert host.respond(Message("0830", {11: "000001", 41: TID, 39: "00"})) is None
