"""The reference host end to end, from a hand-built terminal side over real loopback TCP.

The terminal side here is protocol/ and terminal.links only - no terminal model - so these tests
pin the host's behaviour to the wire contract of cup-pos.md.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol import catalogue, security
from protocol.catalogue import CardData
from protocol.composite import BatchRecord, Field60, Field61, SettlementTotals, Totals
from protocol.dialect import get_dialect
from protocol.framing import Frame, Header, Tpdu
from protocol.message import Message
from terminal.links import LinkClosed, open_link

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
CARD = CardData(pan="6222020000000015", expiry="3012", track2="6222020000000015D30122010000000000")
D = get_dialect()


class HandTerminal:
    """A terminal built from protocol/ by hand: frames, MACs, STANs."""

    def __init__(self, link, tid=TID, mid=MID, firmware="3.0.8"):
        self.link, self.tid, self.mid, self.firmware = link, tid, mid, firmware
        self.stan, self.batch, self.keys = 0, "000001", None

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    async def send(self, msg: Message, *, mac: bool | None = None) -> Message:
        if mac if mac is not None else msg.mti in catalogue.MAC_MTIS:
            security.sign(D, msg, self.keys.mac_key)
        await self.link.send(Frame(Tpdu(dest=6), Header.for_firmware(self.firmware), D.encode(msg)))
        frame = await asyncio.wait_for(self.link.receive(), 5)
        self.last_header = frame.header
        return D.decode(frame.payload)

    async def sign_in(self) -> Message:
        reply = await self.send(catalogue.sign_in(tid=self.tid, mid=self.mid, stan=self.next_stan(), batch=self.batch))
        if reply.response_code == "00":
            self.keys = security.unwrap_working_keys(bytes.fromhex(TMK), reply[62])
            self.batch = Field60.parse(reply[60]).batch
        return reply

    async def financial(self, name, amount=None, **kw) -> Message:
        stan = kw.pop("stan", None) or self.next_stan()
        msg = catalogue.financial(name, tid=self.tid, mid=self.mid, stan=stan, batch=self.batch,
                                  card=kw.pop("card", CARD), amount_fen=amount, **kw)
        reply = await self.send(msg)
        if reply.get(64) is not None:
            assert security.verify(D, reply, self.keys.mac_key), "reply MAC must verify"
        return reply


@pytest.fixture
async def server(tmp_path):
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}", f"20000002:{MID}:{TMK}"])
    async with HostServer(config, str(tmp_path / "host.sqlite")) as srv:
        srv.url = await srv.listen("tcp://127.0.0.1:0")
        srv.db_path = str(tmp_path / "host.sqlite")
        yield srv


@pytest.fixture
async def term(server):
    link = await open_link(server.url)
    t = HandTerminal(link)
    assert (await t.sign_in()).response_code == "00"
    yield t
    await link.close()


async def test_a_whole_day(server, term):
    sale1 = await term.financial("sale", 10000)
    sale2 = await term.financial("sale", 5000)
    declined = await term.financial("sale", 90051)  # magic amount 900.51 -> 51
    assert [sale1[39], sale2[39], declined[39]] == ["00", "00", "51"]
    assert len(sale1[37]) == 12 and len(sale1[38]) == 6 and sale1[37] != sale2[37]
    void = await term.financial("void", 10000, original=Field61(term.batch, sale1[11]), original_rrn=sale1[37])
    refund = await term.financial("refund", 2000, original=Field61(term.batch, sale2[11], sale2[13]))
    over = await term.financial("refund", 3001, original=Field61(term.batch, sale2[11], sale2[13]))
    assert [void[39], refund[39], over[39]] == ["00", "00", "61"]
    # a reversal of a sale the terminal never heard about
    lost = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=700)
    assert (await term.send(lost))[39] == "00"
    reversal = catalogue.reversal(lost, "98")
    assert (await term.send(reversal))[39] == "00"
    assert (await term.send(catalogue.reversal(lost, "98")))[39] == "00"  # idempotent
    assert server.admin.totals(TID, term.batch) == (15000, 2, 12000, 2)
    # settlement balanced
    totals = SettlementTotals(Totals(15000, 2, 12000, 2))
    settle = await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                  totals=totals))
    assert settle[39] == "00" and SettlementTotals.parse(settle[48]).result == "balanced"
    again = await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                 totals=totals))
    assert again[48] == settle[48]
    assert len(server.admin.settlements(TID)) == 1
    # sign-off twice counts once
    for _ in range(2):
        off = await term.send(catalogue.network("sign_off", tid=TID, mid=MID, stan=term.next_stan(),
                                                batch=term.batch))
        assert off[39] == "00"
    assert server.admin.sign_offs(TID) == 1
    report = server.admin.funds_report(MID)
    assert {r["stan"]: r["status"] for r in report} == {sale1[11]: "failed", sale2[11]: "pending",
                                                        refund[11]: "pending", lost[11]: "failed"}
    assert {r["stan"]: r["net_fen"] for r in report}[refund[11]] == -2000  # a refund is deducted


async def test_unknown_reversal_charges_nothing_and_blocks_a_late_original(server, term):
    ghost = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=300)
    assert (await term.send(catalogue.reversal(ghost, "98")))[39] == "00"
    assert (await term.send(ghost))[39] == "94"  # the original arriving after its own reversal
    assert server.admin.totals(TID, term.batch) == (0, 0, 0, 0)


async def test_duplicate_stan_is_94_and_never_a_second_charge(server, term):
    first = await term.financial("sale", 1000, stan="000050")
    dup = await term.financial("sale", 1000, stan="000050")
    assert (first[39], dup[39]) == ("00", "94")
    assert server.admin.totals(TID, term.batch) == (1000, 1, 0, 0)


async def test_unbalanced_settlement_then_batch_upload_reconciles(server, term):
    sale = await term.financial("sale", 4000)
    totals = SettlementTotals(Totals(1000, 1, 0, 0))  # the terminal's totals are wrong
    settle = await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                  totals=totals))
    assert SettlementTotals.parse(settle[48]).result == "unbalanced"
    up = await term.send(catalogue.batch_upload(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                records=[BatchRecord(sale[11], CARD.pan, 4000)]))
    end = await term.send(catalogue.batch_upload_end(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                                     total_records=1))
    assert (up[39], end[39]) == ("00", "00")
    (settlement,) = server.admin.settlements(TID)
    assert settlement["result"] == "reconciled" and json.loads(settlement["differences"]) == []


async def test_bad_mac_is_a0_without_a_mac(server, term):
    msg = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=100)
    security.sign(D, msg, term.keys.mac_key)
    msg[64] = b"\x00" * 8
    reply = await term.send(msg, mac=False)
    assert reply[39] == "A0" and 64 not in reply
    assert server.admin.totals(TID, term.batch) == (0, 0, 0, 0)


async def test_wrong_pin_is_55(server, term):
    block = security.encrypt_pin_block(term.keys.pin_key, "999999", CARD.pan)
    assert (await term.financial("sale", 100, pin_block=block))[39] == "55"
    block = security.encrypt_pin_block(term.keys.pin_key, "123456", CARD.pan)
    assert (await term.financial("sale", 100, pin_block=block))[39] == "00"


async def test_reversal_with_track_data_is_a_format_error(server, term):
    sale = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch, card=CARD, amount_fen=100)
    reversal = catalogue.reversal(sale, "98")
    reversal[35] = CARD.track2
    assert (await term.send(reversal))[39] == "30"


async def test_unknown_terminal_97_and_unknown_mti_30(server):
    link = await open_link(server.url)
    stranger = HandTerminal(link, tid="99999999")
    assert (await stranger.sign_in())[39] == "97"
    odd = Message("0600", {11: "000001", 41: TID, 42: MID, 60: "00000001000"})
    assert (await stranger.send(odd, mac=False))[39] == "30"
    await link.close()


async def test_a_flooding_terminal_is_dropped_while_a_good_one_is_served(server, term, caplog):
    caplog.set_level(logging.WARNING, logger="possim.host")
    reader, writer = await asyncio.open_connection(*server.url[6:].split(":"))
    writer.write(b"\x00\x20" + b"\x99" * 32 + b"\xff" * 500)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped: EOF, no reply
    reader2, writer2 = await asyncio.open_connection(*server.url[6:].split(":"))
    writer2.write(b"\x13\x88" + b"\x60" * 20)  # claims 5000 bytes: over the 4 KiB limit
    await writer2.drain()
    assert await asyncio.wait_for(reader2.read(), 5) == b""
    for _ in range(3):
        assert (await term.financial("sale", 100))[39] == "00"
    assert any("dropped" in r.message for r in caplog.records)


async def test_truncated_message_is_answered_30_and_served_on(server, term):
    good = catalogue.network("echo", tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch)
    payload = D.encode(good)[:-3]  # field 60 cut short: MTI, 11, 41 and 42 still readable
    await term.link.send(Frame(Tpdu(dest=6), Header(), payload))
    reply = D.decode((await asyncio.wait_for(term.link.receive(), 5)).payload)
    assert (reply.mti, reply[39], reply[11]) == ("0830", "30", good[11])
    assert (await term.financial("sale", 100))[39] == "00"  # the connection keeps serving


async def test_undecodable_request_without_an_address_is_dropped(server, term):
    await term.link.send(Frame(Tpdu(dest=6), Header(), b"\x08\x20" + b"\xff" * 8))
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(term.link.receive(), 5)


async def test_restart_keeps_every_committed_transaction(tmp_path):
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    db = str(tmp_path / "h.sqlite")
    async with HostServer(config, db) as srv:
        url = await srv.listen("tcp://127.0.0.1:0")
        link = await open_link(url)
        t = HandTerminal(link)
        await t.sign_in()
        await t.financial("sale", 4321)
        await link.close()
    async with HostServer(config, db) as srv:
        assert srv.admin.totals(TID, "000001") == (4321, 1, 0, 0)
        url = await srv.listen("tcp://127.0.0.1:0")
        link = await open_link(url)
        t = HandTerminal(link)
        t.stan = 10
        await t.sign_in()
        assert (await t.financial("sale", 1))[39] == "00"
        await link.close()


async def test_risk_hold_and_release(server, term):
    big = await term.financial("sale", 6_000_000)  # 60,000.00 CNY: over the 50,000 single limit
    assert big[39] == "00"  # approved at the terminal...
    held = server.admin.query_funds(MID, stan=big[11])
    assert held["status"] == "frozen" and "50,000.00" in held["reason"]  # ...but frozen, with the rule
    assert server.admin.release(MID, stan=big[11])
    assert server.admin.query_funds(MID, stan=big[11])["status"] == "pending"


async def test_maintenance_window_answers_96(server, term):
    now = server.ledger.clock()
    server.admin.set_maintenance(now - 1, now + 3600)
    assert (await term.financial("sale", 100))[39] == "96"
    server.admin.clear_maintenance()
    assert (await term.financial("sale", 100))[39] == "00"


async def test_firmware_below_minimum_is_refused_with_download_requirement(server):
    server.admin.set_min_firmware("3.0.2")
    link = await open_link(server.url)
    old = HandTerminal(link, firmware="2.3.6")
    assert (await old.sign_in())[39] == "58"
    assert old.last_header.requirement == 6
    await link.close()


async def test_merchant_change_then_parameter_download(server, term):
    server.admin.change_merchant(TID, new_mid="898100099990001", new_name="NEW NAME CAFE")
    off = await term.send(catalogue.network("sign_off", tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch))
    assert off[39] == "03"
    params = await term.send(catalogue.network("parameter_download", tid=TID, mid=MID, stan=term.next_stan(),
                                               batch=term.batch))
    assert params[39] == "00" and params[42] == "898100099990001" and b"NEW NAME CAFE" in params[62]
    term.mid = "898100099990001"
    off = await term.send(catalogue.network("sign_off", tid=TID, mid=term.mid, stan=term.next_stan(),
                                            batch=term.batch))
    assert off[39] == "00"


async def test_structured_log_line_per_message_with_pan_masked(server, term, caplog):
    caplog.set_level(logging.INFO, logger="possim.host")
    await term.financial("sale", 100)
    lines = [json.loads(r.message) for r in caplog.records if r.name == "possim.host" and r.message.startswith("{")]
    sale_line = next(line for line in lines if line.get("mti") == "0200")
    assert sale_line["tid"] == TID and sale_line["rc"] == "00" and "latency_ms" in sale_line
    assert sale_line["pan"] == "622202******0015"
    assert all("6222020000000015" not in r.message for r in caplog.records)


async def test_admin_cli_changes_reach_a_running_host(server, term):
    from terminal.cli import main

    assert await asyncio.to_thread(main, ["host", "admin", "--db", server.db_path, "maintenance", "+0", "+3600"]) == 0
    assert (await term.financial("sale", 100))[39] == "96"
    assert await asyncio.to_thread(main, ["host", "admin", "--db", server.db_path, "clear-maintenance"]) == 0
    assert (await term.financial("sale", 100))[39] == "00"
    assert await asyncio.to_thread(main, ["host", "admin", "--db", server.db_path, "merchant", TID,
                                          "898100077770001", "MOVED", "SHOP"]) == 0
    off = await term.send(catalogue.network("sign_off", tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch))
    assert off[39] == "03"
