"""Batch capacity: a terminal whose batch holds `batch_capacity` records refuses sales, voids and refunds with
BATCH FULL / PLS SETTLE, before reading the card and without a message to the host, until it is settled;
balance enquiries go on. Against the reference host over loopback TCP."""

from __future__ import annotations

import pytest

from terminal.config import ConfigError, TerminalConfig, load_config

from .conftest import TID


@pytest.fixture
def host_requests(host, monkeypatch):
    """Every request frame the host receives, in order (the host's own view of the wire)."""
    seen: list[bytes] = []
    handle = host.host.handle

    def counting(frame):
        seen.append(frame)
        return handle(frame)

    monkeypatch.setattr(host.host, "handle", counting)
    return seen


async def test_the_sale_past_capacity_is_refused_on_the_display_and_never_sent(make_terminal, host, host_requests):
    term = make_terminal(batch_capacity=3)
    await term.power_on()
    assert (await term.sign_in()).ok
    sales = [await term.sale(1000 * (i + 1)) for i in range(3)]
    assert all(s.ok for s in sales) and term.journal.batch_count(term.journal.batch) == 3
    sent, printed, reads = len(host_requests), len(term.hw.printer.printed), term.hw.reader.reads
    refused = await term.sale(500)
    assert not refused.ok and refused.rc is None and refused.stan is None
    assert refused.message == "batch full: settle first" and refused.detail["batch_full"] is True
    assert refused.display[:2] == ["BATCH FULL", "PLS SETTLE"] == list(term.hw.display.lines[:2])
    assert len(host_requests) == sent  # the host saw nothing
    assert len(term.hw.printer.printed) == printed and term.hw.reader.reads == reads  # no card read, no slip
    assert term.state == "ready" and term.journal.batch_count(term.journal.batch) == 3
    event = term.journal.events("batch.full", limit=1)[0]
    assert (event["batch"], event["records"], event["capacity"], event["op"]) == (term.journal.batch, 3, 3, "sale")
    # a void and a refund would add a record too: refused alike; nothing reached the host
    for result in (await term.void(sales[0].stan), await term.refund(sales[1].stan, 100)):
        assert not result.ok and result.detail["batch_full"] and result.display[0] == "BATCH FULL"
    assert len(host_requests) == sent
    assert host.admin.totals(TID, term.journal.batch) == (6000, 3, 0, 0)
    # a balance enquiry adds nothing to the batch: it still goes
    balance = await term.balance()
    assert balance.ok and balance.detail["balance"] > 0 and len(host_requests) == sent + 1


async def test_after_settlement_the_next_batch_accepts_sales_again(make_terminal, host):
    term = make_terminal(batch_capacity=2)
    await term.power_on()
    assert (await term.sign_in()).ok
    first = term.journal.batch
    for amount in (100, 200):
        assert (await term.sale(amount)).ok
    assert (await term.sale(300)).detail.get("batch_full")
    settled = await term.settle()  # settles, then signs off (sign_off_after_settlement, the default)
    assert settled.ok and settled.detail["result"] == "balanced" and term.state == "signed_out"
    assert (await term.sign_in()).ok
    assert term.journal.batch != first and term.journal.batch_count(term.journal.batch) == 0
    again = await term.sale(300)
    assert again.ok and again.batch == term.journal.batch
    assert host.admin.totals(TID, first) == (300, 2, 0, 0) and host.admin.totals(TID, again.batch) == (300, 1, 0, 0)


async def test_only_what_the_settlement_counts_fills_the_batch(make_terminal):
    """Declined sales are not in the batch's log (a real terminal logs successes only); a void is."""
    term = make_terminal(batch_capacity=2)
    await term.power_on()
    assert (await term.sign_in()).ok
    declined = await term.sale(5000, card="insufficient")
    assert not declined.ok and declined.rc == "51"
    sale = await term.sale(1000)
    assert sale.ok and term.journal.batch_count(term.journal.batch) == 1
    void = await term.void(sale.stan)
    assert void.ok and term.journal.batch_count(term.journal.batch) == 2  # the voided sale and the void
    assert (await term.sale(1000)).detail.get("batch_full")


def test_batch_capacity_is_configured_and_checked(tmp_path):
    assert TerminalConfig().batch_capacity == 500
    for bad in (0, -5, 2.5, "100", True):
        with pytest.raises(ConfigError, match=r"^terminal\.batch_capacity: expected a positive whole number"):
            TerminalConfig(batch_capacity=bad)
    path = tmp_path / "terminal.toml"
    path.write_text('[terminal]\ntid = "10000001"\nbatch_capacity = 40\n')
    assert load_config(path).batch_capacity == 40
    assert load_config(path, batch_capacity=7).batch_capacity == 7
    path.write_text('[terminal]\nbatch_capacity = "many"\n')
    with pytest.raises(ConfigError, match=r"terminal\.batch_capacity: .*'many'"):
        load_config(path)
