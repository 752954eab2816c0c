"""The reference host against the rest of its contract (issue 3, cup-pos.md Clarifications).

Complements test_host_e2e.py: test-card declines, balance, void / reversal refusals, batch numbers,
A0 without keys, echo / status / e-signature uploads, funds arrival (T0, T1, calendar), the daily
count rule, refuse-mode maintenance, batch-upload differences, many terminals at once, sessions
across a restart, framing garbage, and `possim host` as a process. Every exchange is over real
loopback TCP from a terminal side built from protocol/ by hand; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import date, datetime

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from acquirer.testcards import card_by_name
from protocol import catalogue, security
from protocol.catalogue import CardData
from protocol.composite import BatchRecord, Field60, Field61, SettlementTotals, Totals, encode_device_info
from protocol.framing import Frame, Header, Tpdu
from protocol.message import Message
from terminal.links import LinkClosed, open_link

from .test_host_e2e import CARD, MID, TID, TMK, D, HandTerminal

T0_MID = "898100012340002"
T0_TID = "30000003"


def card(name: str) -> CardData:
    c = card_by_name(name)
    return CardData(pan=c.pan, expiry=c.expiry, track2=c.track2)


def config_with(**host: object) -> HostConfig:
    data = {
        "merchants": [{"mid": MID, "name": "GOOD FOOD CAFE", "settlement_type": "T1"},
                      {"mid": T0_MID, "name": "FAST MONEY SHOP", "settlement_type": "T0"}],
        "terminals": [{"tid": TID, "mid": MID, "tmk": TMK}, {"tid": "20000002", "mid": MID, "tmk": TMK},
                      {"tid": T0_TID, "mid": T0_MID, "tmk": TMK}],
        **host,
    }
    return HostConfig.from_mapping({"host": data})


class Clock:
    """An injected host clock the test moves by hand."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server(tmp_path):
    async with HostServer(config_with(), str(tmp_path / "host.sqlite")) as srv:
        srv.url = await srv.listen("tcp://127.0.0.1:0")
        yield srv


@pytest.fixture
async def term(server):
    link = await open_link(server.url)
    t = HandTerminal(link)
    assert (await asyncio.wait_for(t.sign_in(), 5)).response_code == "00"
    yield t
    await link.close()


async def settle(t: HandTerminal, totals: Totals) -> Message:
    return await t.send(catalogue.settlement(tid=t.tid, mid=t.mid, stan=t.next_stan(), batch=t.batch,
                                             totals=SettlementTotals(totals)))


async def network(t: HandTerminal, name: str, **kw) -> Message:
    return await t.send(catalogue.network(name, tid=t.tid, mid=t.mid, stan=t.next_stan(), batch=t.batch, **kw))


# ------------------------------------------------------------------------------------------------
# financial decisions
# ------------------------------------------------------------------------------------------------


async def test_test_cards_decline_with_their_code_and_charge_nothing(server, term):
    results = {name: (await term.financial("sale", 2000, card=card(name)))[39]
               for name in ("insufficient", "do-not-honour", "expired", "over-limit", "issuer-down",
                            "no-issuer-reply", "refer", "approved2")}
    assert results == {"insufficient": "51", "do-not-honour": "05", "expired": "54", "over-limit": "61",
                       "issuer-down": "96", "no-issuer-reply": "98", "refer": "01", "approved2": "00"}
    assert server.admin.totals(TID, term.batch) == (2000, 1, 0, 0)
    # a declined sale's STAN is spent: the retry with the same STAN is a duplicate, never a charge
    declined = await term.financial("sale", 100, card=card("do-not-honour"), stan="000200")
    retried = await term.financial("sale", 100, stan="000200")
    assert (declined[39], retried[39]) == ("05", "94")
    assert server.admin.totals(TID, term.batch) == (2000, 1, 0, 0)


async def test_balance_inquiry_carries_54(server, term):
    reply = await term.send(catalogue.balance(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD))
    assert reply[39] == "00" and reply[54] == "1002156C" + f"{card_by_name('approved').balance_fen:012d}"
    assert security.verify(D, reply, term.keys.mac_key)
    assert server.admin.totals(TID, term.batch) == (0, 0, 0, 0)


async def test_void_refusals_25_64_12(server, term):
    sale = await term.financial("sale", 3000)
    nowhere = await term.financial("void", 3000, original=Field61(term.batch, "999999"), original_rrn=sale[37])
    wrong_amount = await term.financial("void", 2999, original=Field61(term.batch, sale[11]), original_rrn=sale[37])
    void = await term.financial("void", 3000, original=Field61(term.batch, sale[11]), original_rrn=sale[37])
    again = await term.financial("void", 3000, original=Field61(term.batch, sale[11]), original_rrn=sale[37])
    assert [nowhere[39], wrong_amount[39], void[39], again[39]] == ["25", "64", "00", "12"]
    refund = await term.financial("refund", 100, original=Field61(term.batch, sale[11], sale[13]))
    assert refund[39] == "12"  # a voided sale cannot be refunded
    rows = {r["stan"]: r["status"] for r in server.admin.transactions(TID)}
    assert rows[sale[11]] == "voided" and rows[void[11]] == "approved"
    assert server.admin.totals(TID, term.batch) == (3000, 1, 3000, 1)  # a voided sale still counts as a debit


async def test_partial_refunds_up_to_the_original(server, term):
    sale = await term.financial("sale", 5000)
    first = await term.financial("refund", 3000, original=Field61(term.batch, sale[11], sale[13]),
                                 original_rrn=sale[37])
    second = await term.financial("refund", 2000, original=Field61(term.batch, sale[11], sale[13]))
    third = await term.financial("refund", 1, original=Field61(term.batch, sale[11], sale[13]))
    assert [first[39], second[39], third[39]] == ["00", "00", "61"]
    assert server.admin.totals(TID, term.batch) == (5000, 1, 5000, 2)


async def test_reversal_of_a_sale_of_a_voided_sale_and_of_a_different_amount(server, term):
    sale = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=1500)
    assert (await term.send(sale))[39] == "00"
    reversal = catalogue.reversal(sale, "98")
    first = await term.send(reversal)
    assert first[39] == "00" and security.verify(D, first, term.keys.mac_key)
    second = await term.send(catalogue.reversal(sale, "98"))
    assert second[39] == "00"
    (row,) = [r for r in server.admin.transactions(TID) if r["stan"] == sale[11]]
    assert row["status"] == "reversed"
    assert server.admin.totals(TID, term.batch) == (0, 0, 0, 0)  # reversed counts nowhere
    assert server.admin.query_funds(MID, stan=sale[11])["status"] == "failed"

    kept = await term.financial("sale", 800)
    void = await term.financial("void", 800, original=Field61(term.batch, kept[11]), original_rrn=kept[37])
    assert void[39] == "00"
    voided_reversal = catalogue.reversal(
        catalogue.sale(tid=TID, mid=MID, stan=kept[11], batch=term.batch, card=CARD, amount_fen=800), "98")
    assert (await term.send(voided_reversal))[39] == "12"  # a voided sale is not reversed

    other = await term.financial("sale", 900)
    differs = catalogue.reversal(
        catalogue.sale(tid=TID, mid=MID, stan=other[11], batch=term.batch, card=CARD, amount_fen=901), "98")
    assert (await term.send(differs))[39] == "64"
    statuses = {r["stan"]: r["status"] for r in server.admin.transactions(TID)}
    assert statuses[kept[11]] == "voided" and statuses[other[11]] == "approved"


async def test_wrong_batch_is_77_with_sign_in_requirement(server, term):
    msg = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch="000042", card=CARD, amount_fen=100)
    reply = await term.send(msg)
    assert reply[39] == "77" and term.last_header.requirement == 3
    assert server.admin.totals(TID, "000042") == (0, 0, 0, 0)
    odd = await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch="000042",
                                               totals=SettlementTotals(Totals(0, 0, 0, 0))))
    assert odd[39] == "77"
    up = await term.send(catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch="000042",
                                                records=[BatchRecord("000001", CARD.pan, 100)]))
    assert up[39] == "77"


async def test_mac_needs_working_keys_a0_otherwise(server, term):
    # a terminal that never signed in: the host has no keys to check a MAC with
    link = await open_link(server.url)
    stranger = HandTerminal(link, tid="20000002")
    stranger.keys = security.generate_working_keys("004")
    reply = await stranger.send(catalogue.sale(tid="20000002", mid=MID, stan="000001", batch="000001", card=CARD,
                                               amount_fen=100))
    assert reply[39] == "A0" and 64 not in reply
    await link.close()
    # after sign-off the old keys no longer work
    assert (await network(term, "sign_off"))[39] == "00"
    reply = await term.send(catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD,
                                           amount_fen=100))
    assert reply[39] == "A0" and 64 not in reply
    assert server.admin.totals(TID, term.batch) == (0, 0, 0, 0)


# ------------------------------------------------------------------------------------------------
# network management
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["004", "003", "001"])
async def test_sign_in_key_modes_and_reply_addressing(server, mode):
    link = await open_link(server.url)
    t = HandTerminal(link)
    msg = catalogue.sign_in(tid=TID, mid=MID, stan=t.next_stan(), batch="000001", mode=mode)
    await link.send(Frame(Tpdu(dest=6, src=0x1234), Header.for_firmware("3.0.8"), D.encode(msg)))
    frame = await asyncio.wait_for(link.receive(), 5)
    reply = D.decode(frame.payload)
    assert reply.mti == "0810" and reply[39] == "00" and reply[11] == msg[11]
    assert (frame.tpdu.dest, frame.tpdu.src) == (0x1234, 6)  # the TPDU swapped
    assert Field60.parse(reply[60]).batch == "000001" and Field60.parse(reply[60]).nmc == mode
    t.keys = security.unwrap_working_keys(bytes.fromhex(TMK), reply[62], mode)  # check values verify
    assert len(reply[62]) == {"004": 60, "003": 40, "001": 24}[mode]
    assert (await t.financial("sale", 100))[39] == "00"  # the MAC key from this mode works
    await link.close()


async def test_sign_in_with_another_merchant_is_03_and_asks_for_parameters(server):
    link = await open_link(server.url)
    t = HandTerminal(link, mid="898100099999999")
    reply = await t.sign_in()
    assert reply[39] == "03" and t.last_header.requirement == 1
    await link.close()


async def test_echo_status_upload_and_signature_upload(server, term):
    assert (await network(term, "echo"))[39] == "00"
    info = encode_device_info(SN="SN0001", FW="3.0.8", BAT="87")
    assert (await network(term, "status_upload", device_info=info))[39] == "00"
    session = server.admin.session(TID)
    assert json.loads(session["device_info"]) == {"SN": "SN0001", "FW": "3.0.8", "BAT": "87"}
    assert "wrapped_keys" not in session  # keys never leave the ledger
    sale = await term.financial("sale", 1200)
    image = b"\x89PNG-signature-strokes" * 4
    reply = await term.send(catalogue.signature_upload(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                       original=Field61(term.batch, sale[11], sale[13]), image=image))
    assert reply.mti == "0830" and reply[39] == "00"
    (stored,) = server.ledger.query("SELECT image FROM signature WHERE tid = ? AND stan = ?", (TID, sale[11]))
    assert stored["image"] == image


# ------------------------------------------------------------------------------------------------
# settlement, batch upload, funds
# ------------------------------------------------------------------------------------------------


async def test_batch_upload_reports_differences_both_ways(server, term):
    a = await term.financial("sale", 1000)
    b = await term.financial("sale", 2000)
    settled = await settle(term, Totals(3500, 2, 0, 0))
    assert SettlementTotals.parse(settled[48]).result == "unbalanced"
    assert settled[39] == "00"
    # the terminal uploads a and an amount the host never approved; b is missing from its journal
    records = [BatchRecord(a[11], CARD.pan, 1000), BatchRecord("000077", CARD.pan, 1500)]
    up = await term.send(catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                records=records))
    end = await term.send(catalogue.batch_upload_end(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                     total_records=2))
    assert (up[39], end[39]) == ("00", "00")
    (settlement,) = server.admin.settlements(TID)
    differences = {(d["side"], d["stan"]) for d in json.loads(settlement["differences"])}
    assert differences == {("host only", b[11]), ("terminal only", "000077")}


async def test_settlement_moves_the_batch_and_a_repeat_has_no_side_effects(server, term):
    await term.financial("sale", 1000)
    first = await settle(term, Totals(1000, 1, 0, 0))
    assert SettlementTotals.parse(first[48]).result == "balanced"
    assert server.admin.session(TID)["batch"] == "000002"
    repeat = await settle(term, Totals(1000, 1, 0, 0))
    assert repeat[48] == first[48] and server.admin.session(TID)["batch"] == "000002"
    assert len(server.admin.settlements(TID)) == 1
    # the terminal follows: the next sale in batch 000001 is 77, in 000002 approved
    assert (await term.financial("sale", 100))[39] == "77"
    term.batch = "000002"
    assert (await term.financial("sale", 100))[39] == "00"


async def test_funds_t0_at_settlement_t1_next_business_day_skipping_holidays(tmp_path):
    clock = Clock(datetime(2026, 11, 20, 15, 0))  # a Friday afternoon
    config = config_with(calendar={"holidays": ["2026-11-23"]})  # the Monday is a holiday
    async with HostServer(config, str(tmp_path / "h.sqlite"), clock=clock) as srv:
        url = await srv.listen("tcp://127.0.0.1:0")
        t1, t0 = HandTerminal(await open_link(url)), HandTerminal(await open_link(url), tid=T0_TID, mid=T0_MID)
        for t in (t1, t0):
            assert (await t.sign_in())[39] == "00"
        s1 = await t1.financial("sale", 1000)
        s0 = await t0.financial("sale", 2000)
        assert srv.admin.query_funds(MID, stan=s1[11])["status"] == "pending"
        for t, total in ((t1, 1000), (t0, 2000)):
            assert SettlementTotals.parse((await settle(t, Totals(total, 1, 0, 0)))[48]).result == "balanced"
        assert srv.admin.query_funds(T0_MID, stan=s0[11])["status"] == "credited"
        pending = srv.admin.query_funds(MID, rrn=s1[37])
        assert pending["status"] == "pending"
        arrival = datetime.fromtimestamp(pending["expected_at"])
        assert (arrival.date(), arrival.hour) == (date(2026, 11, 24), 9)  # Tuesday 09:00: Sat, Sun, holiday
        assert srv.admin.run_funds(datetime(2026, 11, 23, 12, 0).timestamp()) == 0
        assert srv.admin.query_funds(MID, stan=s1[11])["status"] == "pending"
        assert srv.admin.run_funds(datetime(2026, 11, 24, 9, 0).timestamp()) == 1
        assert srv.admin.query_funds(MID, stan=s1[11])["status"] == "credited"
        report = srv.admin.funds_report(MID)
        assert [r["stan"] for r in report] == [s1[11]] and report[0]["pan_masked"] == "622202******0015"
        for t in (t1, t0):
            await t.link.close()


async def test_daily_count_rule_approves_but_freezes(tmp_path):
    config = config_with(risk={"daily_count_limit": 2})
    async with HostServer(config, str(tmp_path / "h.sqlite")) as srv:
        t = HandTerminal(await open_link(await srv.listen("tcp://127.0.0.1:0")))
        await t.sign_in()
        replies = [await t.financial("sale", 100) for _ in range(3)]
        assert [r[39] for r in replies] == ["00", "00", "00"]  # held, never declined
        statuses = [srv.admin.query_funds(MID, stan=r[11]) for r in replies]
        assert [s["status"] for s in statuses] == ["pending", "pending", "frozen"]
        assert "more than 2 transactions" in statuses[2]["reason"]
        assert srv.admin.release(MID, stan=replies[2][11])
        assert srv.admin.query_funds(MID, stan=replies[2][11])["status"] == "pending"
        await t.link.close()


async def test_frozen_funds_stay_frozen_through_settlement_until_released(tmp_path):
    clock = Clock(datetime(2026, 11, 18, 15, 0))  # a Wednesday
    async with HostServer(config_with(), str(tmp_path / "h.sqlite"), clock=clock) as srv:
        t = HandTerminal(await open_link(await srv.listen("tcp://127.0.0.1:0")))
        await t.sign_in()
        big = await t.financial("sale", 5_600_000)  # 56,000.00 CNY (FM-06)
        assert big[39] == "00"
        await settle(t, Totals(5_600_000, 1, 0, 0))
        assert srv.admin.run_funds(datetime(2026, 11, 20, 12, 0).timestamp()) == 0
        held = srv.admin.query_funds(MID, stan=big[11])
        assert held["status"] == "frozen" and "dual review" in held["reason"]
        assert srv.admin.release(MID, stan=big[11])
        assert not srv.admin.release(MID, stan=big[11])  # nothing left to release
        assert srv.admin.run_funds(datetime(2026, 11, 30, 12, 0).timestamp()) == 1
        assert srv.admin.query_funds(MID, stan=big[11])["status"] == "credited"
        await t.link.close()


# ------------------------------------------------------------------------------------------------
# maintenance, concurrency, restart, garbage
# ------------------------------------------------------------------------------------------------


async def test_maintenance_refuse_mode_closes_new_connections(server, term):
    now = server.ledger.clock()
    server.admin.set_maintenance(now - 1, now + 3600, "refuse")
    link = await open_link(server.url)
    with pytest.raises((LinkClosed, ConnectionError)):
        await link.send(Frame(Tpdu(dest=6), Header(), D.encode(catalogue.network(
            "echo", tid=TID, mid=MID, stan="000001", batch="000001"))))
        await asyncio.wait_for(link.receive(), 5)
    await link.close()
    server.admin.clear_maintenance()
    assert (await term.financial("sale", 100))[39] == "00"


async def test_many_terminals_at_once_on_two_listeners(tmp_path):
    specs = [f"{40000000 + i}:{MID}:{TMK}" for i in range(20)]
    async with HostServer(HostConfig.from_terminal_specs(specs), str(tmp_path / "h.sqlite")) as srv:
        urls = [await srv.listen("tcp://127.0.0.1:0"), await srv.listen("tcp://127.0.0.1:0")]
        assert urls[0] != urls[1] and srv.urls == urls

        async def day(i: int) -> list[str]:
            t = HandTerminal(await open_link(urls[i % 2]), tid=f"{40000000 + i}")
            try:
                codes = [(await t.sign_in())[39]]
                for _ in range(3):
                    codes.append((await t.financial("sale", 100 + i))[39])
                return codes
            finally:
                await t.link.close()

        results = await asyncio.wait_for(asyncio.gather(*(day(i) for i in range(20))), 30)
        assert all(codes == ["00"] * 4 for codes in results)
        rrns = [r["rrn"] for r in srv.admin.transactions()]
        assert len(rrns) == 60 and len(set(rrns)) == 60 and all(len(r) == 12 and r.isdigit() for r in rrns)


async def test_restart_keeps_sessions_sign_offs_and_settlements(tmp_path):
    db = str(tmp_path / "h.sqlite")
    config = config_with()
    async with HostServer(config, db) as srv:
        t = HandTerminal(await open_link(await srv.listen("tcp://127.0.0.1:0")))
        await t.sign_in()
        sale = await t.financial("sale", 2500)
        await settle(t, Totals(2500, 1, 0, 0))
        await t.link.close()
    async with HostServer(config_with(), db) as srv:
        t.link = await open_link(await srv.listen("tcp://127.0.0.1:0"))
        # still signed in with the same keys: a MAC'd request verifies without a new sign-in
        t.batch = "000002"
        assert (await t.financial("sale", 100))[39] == "00"
        assert (await t.financial("sale", 100, stan=sale[11]))[39] == "00"  # same STAN, new batch: not a duplicate
        assert len(srv.admin.settlements(TID)) == 1 and srv.admin.session(TID)["batch"] == "000002"
        assert (await network(t, "sign_off"))[39] == "00"
        await t.link.close()
    async with HostServer(config_with(), db) as srv:
        t.link = await open_link(await srv.listen("tcp://127.0.0.1:0"))
        assert (await network(t, "sign_off"))[39] == "00"  # a duplicate, after a restart
        assert srv.admin.sign_offs(TID) == 1
        assert srv.admin.query_funds(MID, stan=sale[11])["status"] == "pending"
        await t.link.close()


async def test_truncated_frame_and_eof_mid_frame_leave_the_host_serving(server, term):
    host, port = server.url[6:].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x40" + b"\x60\x00\x06\x00\x00")  # promises 64 bytes, sends 5, then hangs up
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00")  # half a length prefix
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert (await term.financial("sale", 100))[39] == "00"


async def test_a_flood_of_bad_mac_and_unknown_mti_while_others_are_served(server, term):
    bad = HandTerminal(await open_link(server.url), tid="20000002")
    await bad.sign_in()

    async def flood() -> list[str]:
        out = []
        for i in range(30):
            if i % 2:
                msg = Message("0600", {11: f"{i:06d}", 41: "20000002", 42: MID, 60: "00000001000"})
                out.append((await bad.send(msg, mac=False))[39])
            else:
                msg = catalogue.sale(tid="20000002", mid=MID, stan=f"{i + 100:06d}", batch=bad.batch, card=CARD,
                                     amount_fen=100)
                security.sign(D, msg, bad.keys.mac_key)
                msg[64] = bytes(8)
                out.append((await bad.send(msg, mac=False))[39])
        return out

    async def served() -> list[str]:
        return [(await term.financial("sale", 100))[39] for _ in range(10)]

    flooded, good = await asyncio.wait_for(asyncio.gather(flood(), served()), 30)
    assert set(flooded) == {"A0", "30"} and good == ["00"] * 10
    assert server.admin.totals("20000002", bad.batch) == (0, 0, 0, 0)
    await bad.link.close()


# ------------------------------------------------------------------------------------------------
# the process
# ------------------------------------------------------------------------------------------------


async def test_possim_host_process_serves_then_exits_0_on_sigterm(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "terminal", "host", "--listen", "tcp://127.0.0.1:0", "--db",
        str(tmp_path / "p.sqlite"), "--terminal", f"{TID}:{MID}:{TMK}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
        t = HandTerminal(await open_link(url))
        assert (await t.sign_in())[39] == "00"
        assert (await t.financial("sale", 100))[39] == "00"
        await t.link.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    admin = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "terminal", "host", "admin", "--db", str(tmp_path / "p.sqlite"), "--json", "ledger",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(admin.communicate(), 30)
    rows = json.loads(out)
    assert admin.returncode == 0 and [(r["kind"], r["amount_fen"]) for r in rows] == [("sale", 100)]
    assert "6222020000000015" not in out.decode()


async def test_batch_upload_over_several_messages_and_a_miscounted_one_is_30(server, term):
    sales = [await term.financial("sale", 100 + i) for i in range(10)]
    settled = await settle(term, Totals(1, 1, 0, 0))
    assert SettlementTotals.parse(settled[48]).result == "unbalanced"
    records = [BatchRecord(s[11], CARD.pan, 100 + i) for i, s in enumerate(sales)]
    nine = catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, records=records[:8])
    nine[48] = "09" + nine[48][2:]  # declares 9 records (field 48 cannot hold more than 8)
    assert (await term.send(nine))[39] == "30"
    for chunk in (records[:8], records[8:]):
        up = await term.send(catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                    records=chunk))
        assert up[39] == "00"
    end = await term.send(catalogue.batch_upload_end(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                     total_records=10))
    assert end[39] == "00"
    (settlement,) = server.admin.settlements(TID)
    assert json.loads(settlement["differences"]) == []
