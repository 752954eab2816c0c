"""`possim load --processes N`: the fleet split across shard processes, one merged report, ledgers agree."""

from __future__ import annotations

import asyncio
import json
from array import array
from collections import Counter

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from terminal.load import LoadConfig, ShardError, generate_identities, run_sharded
from terminal.load.runner import LoadReport
from terminal.load.shards import merge, split

from .test_load import host_totals, possim_load_against_host


def test_split_shares_out_every_terminal_once_and_divides_the_load():
    identities = generate_identities(7)
    config = LoadConfig(url="tcp://127.0.0.1:1", identities=identities, rate=70.0, seed=4, max_transactions=10)
    shards = split(config, 3)
    assert [t for s in shards for t in s.identities] == identities  # each terminal in exactly one shard
    assert [len(s.identities) for s in shards] == [2, 3, 2]
    assert sum(s.rate for s in shards) == pytest.approx(70.0)
    assert sum(s.max_transactions for s in shards) == 10
    assert len({s.seed for s in shards}) == 3
    closed = split(LoadConfig(url="x", identities=identities[:2], concurrency=8), 5)
    assert len(closed) == 2 and [s.concurrency for s in closed] == [4, 4]  # no shard without a terminal
    with pytest.raises(ValueError, match="processes must be at least 1"):
        split(config, 0)


def test_merge_sums_the_counts_and_pools_the_latencies():
    a = LoadReport(terminals=2, signed_off=2, transactions=3, approved=3, tps=10.0,
                   latencies=array("d", [0.1, 0.3, 0.5]), rc=Counter({"00": 3}),
                   journal_totals=(300, 3, 0, 0), settlements=1)
    b = LoadReport(terminals=1, signed_off=1, transactions=1, approved=0, errors=1, tps=5.0,
                   latencies=array("d", [0.9]), rc=Counter({"51": 1}), journal_totals=(0, 0, 0, 0))
    merged = merge([a, b])
    counts = (merged.terminals, merged.signed_off, merged.transactions, merged.errors, merged.settlements)
    assert counts == (3, 3, 4, 1, 1)
    assert merged.tps == 15.0 and merged.rc == Counter({"00": 3, "51": 1})
    assert merged.latency_ms()["max"] == 900.0 and merged.journal_totals == (300, 3, 0, 0)


async def test_two_shards_sign_off_every_terminal_and_the_ledger_equals_their_journals(tmp_path):
    identities = generate_identities(6)
    config = HostConfig()
    for identity in identities:
        config.add_terminal(identity.tid, identity.mid, identity.tmk)
    async with HostServer(config, str(tmp_path / "host.sqlite")) as host:
        url = await host.listen("tcp://127.0.0.1:0")
        load = LoadConfig(url=url, identities=identities, duration=60.0, concurrency=6, max_transactions=40,
                          batch_capacity=3, mix={"sale": 4, "void": 1}, reply_timeout=5.0, seed=2)
        seen: list[LoadReport] = []
        report = await asyncio.to_thread(run_sharded, load, 2, on_progress=seen.append)
        totals = host_totals(host, identities)
        tids = {row["tid"] for row in host.admin.transactions()}
    assert (report.terminals, report.signed_in, report.signed_off, report.errors) == (6, 6, 6, 0)
    assert report.transactions == 40 == len(report.latencies) and report.settlements >= 6
    assert report.journal_totals == totals and tids == {i.tid for i in identities}  # both shards sold
    assert seen and seen[-1].transactions == 40  # the live table saw the merged progress


def test_a_shard_that_fails_is_reported_by_name():
    load = LoadConfig(url="carrier-pigeon://nowhere", identities=generate_identities(2), duration=1.0)
    with pytest.raises(ShardError, match=r"shard \d failed: .*carrier-pigeon"):
        run_sharded(load, 2)


def test_possim_load_processes_flag(tmp_path):
    """`possim load --processes 2` against `possim host`: one JSON report of the whole fleet."""
    load = possim_load_against_host(tmp_path, 4, "--concurrency", "4", "--duration", "1s", "--mix", "sale=1",
                                    "--processes", "2", "--report", str(tmp_path / "r.json"))
    assert load.returncode == 0, load.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["terminals"] == 4 and data["signed_off"] == 4 and data["errors"] == 0
    assert data["transactions"] == data["approved"] > 0 and data["latency_ms"]["max"] > 0


@pytest.mark.parametrize("url, says", [("carrier-pigeon://x", "unsupported link scheme 'carrier-pigeon'"),
                                       ("tcp://127.0.0.1", "tcp links need host and port")])
def test_a_bad_host_url_is_a_usage_error_before_any_terminal_starts(url, says, capsys):
    from terminal.cli import main

    assert main(["load", "--connect", url, "--terminals", "2", "--processes", "2", "--quiet"]) == 2
    assert says in capsys.readouterr().err
