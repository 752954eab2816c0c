"""`possim host admin ...` against a ledger file alone: no --config needed, JSON out, exit codes."""

from __future__ import annotations

import json

import pytest

from acquirer.cli import add_host_parser, register, run_admin, run_host
from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol import catalogue
from protocol.composite import SettlementTotals, Totals
from terminal.cli import main
from terminal.links import open_link

from .test_host_e2e import MID, TID, TMK, HandTerminal


@pytest.fixture
async def ledger_file(tmp_path):
    """A ledger with a frozen 60,000.00 sale, an ordinary sale and a balanced settlement, host stopped."""
    db = str(tmp_path / "host.sqlite")
    config = HostConfig.from_mapping({"merchants": [{"mid": MID, "name": "GOOD FOOD CAFE", "settlement_type": "T0"}],
                                      "terminals": [{"tid": TID, "mid": MID, "tmk": TMK}]})
    async with HostServer(config, db) as server:
        link = await open_link(await server.serve("tcp://127.0.0.1:0"))
        term = HandTerminal(link)
        await term.sign_in()
        big = await term.financial("sale", 6_000_000)
        small = await term.financial("sale", 1000)
        lost = catalogue.sale(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                              card=catalogue.CardData(pan="6222020000000015", expiry="3012"), amount_fen=700)
        await term.send(catalogue.reversal(lost, "98"))
        await term.send(catalogue.settlement(tid=TID, mid=MID, stan=term.next_stan(), batch=term.batch,
                                             totals=SettlementTotals(Totals(6_001_000, 2, 0, 0))))
        await link.close()
    return {"db": db, "big": big, "small": small, "lost": lost}


def admin(capsys, db: str, *args: str) -> tuple[int, object]:
    code = main(["host", "admin", "--db", db, "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


async def test_query_release_hold_by_stan_or_rrn_without_a_config(ledger_file, capsys):
    db, big, small = ledger_file["db"], ledger_file["big"], ledger_file["small"]
    code, row = admin(capsys, db, "query", MID, big[11].lstrip("0"))  # a STAN may drop its zeros
    assert code == 0 and row["status"] == "frozen" and "50,000.00" in row["reason"]
    assert row["pan_masked"] == "622202******0015" and "6222020000000015" not in json.dumps(row)
    code, row = admin(capsys, db, "query", MID, big[37])  # 12 digits: an RRN
    assert code == 0 and row["stan"] == big[11]
    assert admin(capsys, db, "query", MID, small[11])[1]["status"] == "credited"  # T0: at settlement
    assert admin(capsys, db, "release", MID, big[37]) == (0, {"released": True})  # T0 read from the ledger
    assert admin(capsys, db, "query", MID, big[11])[1]["status"] == "credited"
    assert admin(capsys, db, "release", MID, big[11]) == (1, {"released": False})  # nothing left to release
    assert admin(capsys, db, "hold", MID, small[11], "legal", "hold") == (0, {"held": True})
    assert admin(capsys, db, "query", MID, small[11])[1]["reason"] == "legal hold"
    assert admin(capsys, db, "fail", MID, small[11], "channel", "fault") == (0, {"held": True})
    assert admin(capsys, db, "query", MID, small[11])[1]["status"] == "failed"
    assert admin(capsys, db, "release", MID, small[11]) == (0, {"released": True})


async def test_inspection_commands(ledger_file, capsys):
    db, lost = ledger_file["db"], ledger_file["lost"]
    code, funds = admin(capsys, db, "funds", MID)
    assert code == 0 and [r["status"] for r in funds] == ["frozen", "credited"]
    code, reversals = admin(capsys, db, "reversals", TID)
    assert code == 0 and [(r["stan"], r["outcome"], r["reason"]) for r in reversals] == [(lost[11], "unknown", "98")]
    code, events = admin(capsys, db, "events", "risk.hold")
    assert code == 0 and events[0]["detail"]["rule"] == "single_limit"
    code, session = admin(capsys, db, "session", TID)
    assert code == 0 and session["batch"] == "000002" and "wrapped_keys" not in session
    assert admin(capsys, db, "session", "99999999") == (1, None)
    code, settlements = admin(capsys, db, "settlements", TID)
    assert code == 0 and settlements[0]["result"] == "balanced"


async def test_policy_commands_and_usage_errors(ledger_file, capsys):
    db = ledger_file["db"]
    assert admin(capsys, db, "maintenance", "daily", "01:00-01:30", "refuse")[0] == 0
    assert admin(capsys, db, "min-firmware", "3.0.2")[0] == 0
    server = HostServer(HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"]), db)
    try:
        assert server.config.min_firmware == "3.0.2"
        assert server.config.maintenance[0].daily == (60, 90) and server.config.maintenance[0].mode == "refuse"
    finally:
        server.ledger.close()
    assert admin(capsys, db, "query", MID, "1234567")[0] == 2  # neither a STAN nor an RRN
    assert admin(capsys, db, "min-firmware", "latest")[0] == 2
    assert admin(capsys, db, "maintenance", "daily", "soon")[0] == 2
    assert admin(capsys, db, "maintenance", "+10", "+5")[0] == 2  # ends before it starts
    assert admin(capsys, db, "query", MID)[0] == 2  # missing arguments
    assert admin(capsys, db, "query", MID, "999999") == (1, None)


def test_the_cli_entry_points_the_cli_owner_asked_for():
    assert add_host_parser is register and callable(run_host) and callable(run_admin)
    assert main(["host"]) == 2  # no --listen: usage
