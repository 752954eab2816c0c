"""Load mode: 1,000 terminals against the reference host; the same through a chaos proxy dropping 1%."""

from __future__ import annotations

import json

from acquirer.config import HostConfig
from acquirer.host import HostServer
from terminal.chaos import MessageFault
from terminal.cli import main
from terminal.load import LoadConfig, LoadRunner, generate_identities, read_identities
from terminal.proxy import ChaosProxy


def host_totals(host, identities) -> tuple[int, int, int, int]:
    total = [0, 0, 0, 0]
    for row in host.admin.transactions():
        if row["status"] in ("approved", "voided") and row["kind"] in ("sale", "void", "refund"):
            index = 0 if row["kind"] == "sale" else 2
            total[index] += row["amount_fen"]
            total[index + 1] += 1
    return tuple(total)


async def run_fleet(tmp_path, count, *, proxy_drop: float | None = None):
    identities = generate_identities(count)
    config = HostConfig()
    for identity in identities:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    async with HostServer(config, str(tmp_path / "host.sqlite")) as host:
        url = await host.listen("tcp://127.0.0.1:0")
        proxy = None
        if proxy_drop is not None:
            proxy = ChaosProxy(url)
            proxy.faults.rng.seed(5)
            proxy.faults.add(MessageFault("drop", direction="rx", mti="0210", processing_code="000000",
                                         probability=proxy_drop))
            url = await proxy.listen("tcp://127.0.0.1:0")
        load = LoadConfig(url=url, identities=identities, duration=1.5, concurrency=100, reply_timeout=2.0,
                          ramp_up=1.0, seed=3)
        report = await LoadRunner(load).run()
        if proxy is not None:
            await proxy.close()
        return report, host_totals(host, identities), proxy


async def test_a_thousand_terminals_all_signed_off_and_ledgers_agree(tmp_path):
    report, host, _ = await run_fleet(tmp_path, 1000)
    data = report.as_json()
    assert data["terminals"] == 1000 and data["signed_off"] == 1000 and data["errors"] == 0
    assert data["transactions"] > 0 and data["approved"] == data["transactions"]
    assert set(data["latency_ms"]) == {"p50", "p95", "p99", "max"} and data["tps"] > 0
    assert report.journal_totals == host


async def test_chaos_proxy_dropping_one_percent_every_drop_reversed(tmp_path):
    report, host, proxy = await run_fleet(tmp_path, 1000, proxy_drop=0.01)
    dropped = sum(1 for action, _, _ in proxy.faults.log if action == "drop")
    assert dropped > 0
    assert report.reversals == dropped  # every dropped reply became a reversal at its terminal
    assert report.signed_off == 1000
    assert report.journal_totals == host  # and the ledgers still agree


def test_identities_csv_round_trip_and_report_contract(tmp_path, capsys):
    path = tmp_path / "ids.csv"
    assert main(["load", "--emit-identities", str(path), "--terminals", "25"]) == 0
    ids = read_identities(path)
    assert len(ids) == 25 and len({i.tid for i in ids}) == 25
    assert main(["load", "--terminals", "3", "--mix", "sale=1,dance=2", "--connect", "tcp://127.0.0.1:9"]) == 2
    capsys.readouterr()
    # the report contract, from the runner's own JSON
    report = json.loads(json.dumps(LoadRunner(LoadConfig(url="tcp://x:1", identities=[])).report.as_json()))
    for key in ("terminals", "signed_off", "transactions", "approved", "reversals", "errors", "tps", "latency_ms"):
        assert key in report
