"""The host's cached terminal facts (batch, sales today) stay exact: another connection's commit, a
failed transaction, a new day and a restart all show in the next decision."""

from __future__ import annotations

import pytest

from acquirer import funds
from acquirer.config import HostConfig
from acquirer.host import AcquirerHost
from acquirer.ledger import Ledger
from tests.acquirer.test_host_core import MID, TID, TMK, Clock, Side


def make_host(path: str, clock: Clock, **risk: int) -> AcquirerHost:
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    for name, value in risk.items():
        setattr(config.risk, name, value)
    return AcquirerHost(config, Ledger(path, clock=clock), clock=clock)


def frozen(host: AcquirerHost) -> list[str]:
    return [r["stan"] for r in host.ledger.query(
        "SELECT t.stan FROM funds f JOIN txn t ON t.id = f.txn_id WHERE f.status = 'frozen' ORDER BY t.id")]


def test_a_batch_moved_by_another_connection_is_seen_at_the_next_request(tmp_path):
    clock = Clock()
    host = make_host(str(tmp_path / "h.sqlite"), clock)
    side = Side(host)
    assert side.sign_in()[39] == "00" and side.fin("sale", 100)[39] == "00"  # batch 000001 now cached
    other = Ledger(str(tmp_path / "h.sqlite"), clock=clock)
    with other.tx() as db:
        db.execute("UPDATE session SET batch = '000002' WHERE tid = ?", (TID,))
    other.close()
    assert side.fin("sale", 100)[39] == "77"  # the host decided on the ledger's batch, not its copy
    side.batch = "000002"
    assert side.fin("sale", 100)[39] == "00"


def test_the_daily_count_is_kept_across_failures_days_and_restarts(tmp_path, monkeypatch):
    clock = Clock()
    path = str(tmp_path / "h.sqlite")
    host = make_host(path, clock, daily_count_limit=2)
    side = Side(host)
    side.sign_in()
    assert side.fin("sale", 100, stan="000010")[39] == "00"
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(funds, "open_row", broken)  # fails after the sale was recorded and counted
        assert side.fin("sale", 100, stan="000011")[39] == "96"  # rolled back: not a sale of today
    assert side.fin("sale", 100, stan="000012")[39] == "00"
    assert side.fin("sale", 100, stan="000013")[39] == "00" and frozen(host) == ["000013"]  # the third today
    restarted = make_host(path, clock, daily_count_limit=2)  # counts from the ledger
    again = Side(restarted)
    again.stan = 20
    again.sign_in()
    assert again.fin("sale", 100)[39] == "00" and len(frozen(restarted)) == 2
    clock.now += 86_400  # the next day starts at zero
    assert [again.fin("sale", 100)[39] for _ in range(3)] == ["00"] * 3 and len(frozen(restarted)) == 3


@pytest.mark.parametrize("settle_first", [False, True])
def test_settlement_moves_the_cached_batch(tmp_path, settle_first):
    from protocol.composite import Totals

    clock = Clock()
    host = make_host(str(tmp_path / "h.sqlite"), clock)
    side = Side(host)
    side.sign_in()
    totals = Totals()
    if not settle_first:
        assert side.fin("sale", 100)[39] == "00"
        totals = Totals(100, 1, 0, 0)
    assert side.settle(totals)[39] == "00"
    assert side.fin("sale", 100)[39] == "77"  # 000001 is settled: the host is on 000002
    side.batch = "000002"
    assert side.fin("sale", 100)[39] == "00"
