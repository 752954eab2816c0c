"""Every terminal flow end to end against the reference host over real loopback TCP."""

from __future__ import annotations

import pytest

from terminal.chaos import MessageFault

from .conftest import TID


async def test_sign_in_delivers_keys_and_the_host_batch(terminal, host):
    assert terminal.state == "ready"
    assert terminal.keys is not None
    assert terminal.journal.identity()["signed_in"] == 1


async def test_sale_is_approved_printed_and_in_the_ledger(terminal, host):
    result = await terminal.sale(1234)
    assert result.ok and result.rc == "00" and result.amount == 1234
    assert "622202******0015" in result.receipt and "6222020000000015" not in result.receipt
    assert [r.copy for r in terminal.hw.printer.printed[-2:]] == ["merchant", "customer"]
    assert host.admin.totals(TID, terminal.journal.batch) == (1234, 1, 0, 0)
    assert terminal.state == "ready"


async def test_decline_prints_a_declined_slip_and_charges_nothing(terminal, host):
    result = await terminal.sale(5000, card="insufficient")
    assert not result.ok and result.rc == "51"
    assert "NOT CHARGED" in terminal.hw.printer.printed[-1].text
    assert host.admin.totals(TID, terminal.journal.batch) == (0, 0, 0, 0)


async def test_void_and_refund(terminal, host):
    sale = await terminal.sale(3000)
    void = await terminal.void(sale.stan)
    assert void.ok, void.message
    second = await terminal.sale(2000)
    refund = await terminal.refund(second.stan, 500)
    assert refund.ok, refund.message
    assert terminal.journal.batch_totals(terminal.journal.batch) == (5000, 2, 3500, 2)
    assert host.admin.totals(TID, terminal.journal.batch) == (5000, 2, 3500, 2)
    again = await terminal.void(sale.stan)
    assert not again.ok


async def test_balance_shows_the_card_balance(terminal):
    result = await terminal.balance()
    assert result.ok and result.detail["balance"] > 0
    assert any("RMB" in line for line in result.display)


async def test_lost_reply_is_reversed_automatically(terminal, host):
    terminal.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    terminal.config = terminal.config.with_overrides(reply_timeout=0.5)
    result = await terminal.sale(6660)
    assert not result.ok and result.detail["reversal"] == "sent"
    assert terminal.journal.pending_reversals() == []
    assert terminal.journal.transaction(result.stan, terminal.journal.batch).status == "reversed"
    assert host.admin.totals(TID, terminal.journal.batch) == (0, 0, 0, 0)


async def test_reversal_left_pending_offline_is_sent_before_the_next_sale(terminal, host):
    terminal.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    terminal.channel.faults.add(MessageFault("drop", direction="tx", mti="0400", count=1))
    terminal.config = terminal.config.with_overrides(reply_timeout=0.5)
    lost = await terminal.sale(4200)
    assert lost.detail["reversal"] == "pending"
    assert len(terminal.journal.pending_reversals()) == 1
    nxt = await terminal.sale(100)
    assert nxt.ok
    assert terminal.journal.pending_reversals() == []
    assert host.admin.totals(TID, terminal.journal.batch) == (100, 1, 0, 0)


async def test_printer_out_of_paper_then_reprint_marked_reprint_no_second_charge(terminal, host):
    terminal.hw.printer.faults["out_of_paper"].arm(count=1)
    sale = await terminal.sale(2500)
    assert sale.ok and sale.receipt is None and sale.detail["receipt_pending"]
    assert any("PRINT" in line for line in sale.display)
    terminal.hw.printer.load_paper()
    reprint = await terminal.reprint(sale.stan)
    assert reprint.ok and "REPRINT" in reprint.receipt
    assert host.admin.totals(TID, terminal.journal.batch) == (2500, 1, 0, 0)


async def test_settlement_balanced_then_sign_off_with_vouchers(terminal, host):
    await terminal.sale(1000)
    await terminal.sale(2000)
    batch = terminal.journal.batch
    result = await terminal.settle()
    assert result.ok and result.detail["result"] == "balanced"
    assert result.detail["sign_off"] is True and terminal.state == "signed_out"
    assert terminal.journal.batch == f"{int(batch) + 1:06d}"
    kinds = [r.kind for r in terminal.hw.printer.printed]
    assert kinds[-2:] == ["settlement", "signoff"]


async def test_unbalanced_settlement_is_reconciled_by_batch_upload(terminal, host):
    await terminal.sale(1000)
    # the terminal lost track of a sale the host approved: totals differ
    terminal.channel.faults.add(MessageFault("drop", direction="tx", mti="0400", count=5))
    terminal.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    terminal.config = terminal.config.with_overrides(reply_timeout=0.3, sign_off_after_settlement=False)
    await terminal.sale(777)
    terminal.journal._db.execute("DELETE FROM reversal")  # the merchant's terminal forgot the reversal
    result = await terminal.settle()
    assert result.ok and result.detail["result"] == "unbalanced" and result.detail["uploaded"] == 1


async def test_sign_off_is_idempotent_at_the_host(terminal, host):
    first = await terminal.sign_off()
    assert first.ok and terminal.state == "signed_out"
    again = await terminal.sign_off()
    assert again.ok
    assert host.admin.sign_offs(TID) == 1


async def test_echo_status_upload_and_diagnostics(terminal):
    assert (await terminal.echo()).ok
    assert (await terminal.status_upload()).ok
    diag = await terminal.diagnostics()
    assert diag.ok and diag.detail["host_reachable"] and terminal.state == "ready"


async def test_offline_terminal_refuses_with_a_clear_message_and_recovers(terminal):
    terminal.channel.link_down = True
    await terminal.channel.close()
    result = await terminal.sale(1000)
    assert not result.ok
    assert any("OFFLINE" in line for line in result.display)
    diag = await terminal.diagnostics()
    assert not diag.ok and diag.detail["link"] == "down"
    terminal.channel.link_down = False
    assert (await terminal.sale(1000)).ok  # no restart needed


async def test_card_read_error_sends_nothing(terminal, host):
    terminal.hw.reader.faults["read_error"].arm(count=1)
    result = await terminal.sale(1000)
    assert not result.ok and "swipe again" in result.message
    assert terminal.hw.reader.errors == 1
    assert host.admin.totals(TID, terminal.journal.batch) == (0, 0, 0, 0)
    assert (await terminal.sale(1000)).ok


async def test_unsigned_transaction_and_supplementary_signature(make_terminal, host):
    term = make_terminal(hardware={"signature_behaviour": "ignore"}, signature_timeout=0.05)
    await term.power_on()
    await term.sign_in()
    sale = await term.sale(1500)
    assert sale.ok and sale.detail["signature"] == "unsigned"
    assert term.journal.unsigned_stans(term.journal.batch) == [sale.stan]
    term.hw.signature_pad.behaviour = "sign"
    upload = await term.upload_signature(sale.stan)
    assert upload.ok
    assert term.journal.unsigned_stans(term.journal.batch) == []
    await term.shut_down()


@pytest.mark.parametrize("op", ["sale", "settle", "sign_off"])
async def test_operations_need_sign_in(make_terminal, op):
    term = make_terminal()
    await term.power_on()
    result = await (term.sale(100) if op == "sale" else getattr(term, op)())
    assert result.ok is (op == "sign_off") or not result.ok
    await term.shut_down()


async def test_journal_persists_between_runs(make_terminal, host, tmp_path):
    journal = str(tmp_path / "shared.sqlite")
    first = make_terminal(journal=journal)
    await first.power_on()
    await first.sign_in()
    sale = await first.sale(900)
    await first.shut_down()
    first.journal.close()
    second = make_terminal(journal=journal)
    boot = await second.power_on()
    assert boot.ok and second.state == "ready"
    assert (await second.void(sale.stan)).ok
    await second.shut_down()


async def test_sign_in_refused_as_another_merchant_downloads_parameters_before_the_retry(make_terminal, host):
    """FM-07 at sign-in: 03 with a parameter request; the next sign-in fetches parameters first, then succeeds."""
    term = make_terminal()
    await term.power_on()
    host.admin.change_merchant(TID, new_mid="898100099990001", new_name="RENAMED CAFE")
    refused = await term.sign_in()
    assert (refused.ok, refused.rc) == (False, "03")
    retried = await term.sign_in()
    assert retried.ok, retried.message
    assert (term.mid, term.merchant_name) == ("898100099990001", "RENAMED CAFE")
    assert term.journal.identity()["mid"] == "898100099990001"  # kept for the next boot
