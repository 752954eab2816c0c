"""Parts of the Locust integration that need no Locust: naming and judging exchanges, sharing a fleet."""

from __future__ import annotations

from terminal.load import generate_identities
from terminal.load.exchanges import ExchangeRecorder
from terminal.load.identities import partition


async def test_exchange_recorder_against_the_reference_host(host, make_terminal):
    recorder = ExchangeRecorder()
    term = make_terminal(require_signature=False)
    term.channel.observer = recorder.observe
    await term.power_on()
    assert (await term.sign_in()).ok
    sale = await term.sale(1234)
    assert not (await term.sale(90051)).ok  # the host's magic amount 900.51: declined 51
    assert (await term.void(sale.stan)).ok
    await term.channel.close()
    host_down = term.channel.url
    term.channel.link_down = True
    assert not (await term.balance()).ok
    seen = recorder.drain()
    assert [e.name for e in seen] == ["0800 sign-in", "0200 sale", "0200 sale", "0200 void", "0200 balance"]
    assert [e.failure for e in seen[:4]] == [None, None, "rc 51 insufficient funds", None]
    assert not any(e.transport for e in seen[:4]) and all(e.response_ms > 0 for e in seen[:4])
    assert seen[4].transport and seen[4].failure.startswith("Offline: network down") and host_down in seen[4].failure
    assert recorder.drain() == []


def test_worker_shares_never_overlap_and_cover_the_fleet():
    fleet = generate_identities(11)
    shares = [partition(fleet, i, 3) for i in range(3)]
    tids = [i.tid for share in shares for i in share]
    assert len(tids) == len(set(tids)) == 11
    assert partition(fleet, 3, 3) == [] and partition(fleet, -1, 3) == []
