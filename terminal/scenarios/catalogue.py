"""The built-in failure-mode scenarios FM-01 .. FM-18 (shared/failure-modes.md).

Each one injects its fault at the precise point the table names, checks the documented symptom on
what a merchant or QA engineer can observe, then applies the documented remedy and checks that it
works. With `ctx.remedy` off the remedy mechanism itself is switched off, and the scenario fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from ..chaos import MessageFault
from ..core import PowerLost
from ..dayend import Backoff, close_day, retry, sign_off_when_idle
from .engine import MID, TID, ScenarioContext, contains, scenario

FAST = Backoff(base=0.05, cap=0.5, attempts=20, jitter=0.5)


def _retry_budget(ctx: ScenarioContext) -> Backoff:
    """The daemon's retry policy, or none at all when the scenario runs with its remedy off."""
    return FAST if ctx.remedy else Backoff(base=0.05, cap=0.05, attempts=0)


@scenario("FM-01", "Card swipe fails: read error, nothing sent, retry after cleaning succeeds", "000")
async def fm01(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    handled = ctx.host.host.handled
    term.hw.reader.faults["read_error"].arm(always=True)  # oxidised contacts: every swipe fails
    result = await term.sale(1000)
    ctx.check("sale fails at the reader", False, result.ok)
    ctx.check("display tells the merchant to swipe again", contains("SWIPE AGAIN"), result.display)
    ctx.check("no message reached the host", handled, ctx.host.host.handled)
    ctx.check("nothing charged", (0, 0, 0, 0), ctx.totals(term))
    ctx.check("reader error counter rose", 1, term.hw.reader.errors)
    if ctx.remedy:
        term.hw.reader.faults["read_error"].disarm()  # clean the contacts
        term.hw.reader.clean()
    retry_result = await term.sale(1000)
    ctx.check("retry after cleaning is approved", True, retry_result.ok)
    ctx.check("charged once", (1000, 1, 0, 0), ctx.totals(term))


@scenario("FM-02", "Sign-off timeout: stays signed in with sign-off pending; retried, counted once", "000")
async def fm02(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.3)
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0830", count=1))  # host answers, lost
    result = await term.sign_off()
    ctx.check("sign-off reports a timeout", contains("SIGN OFF TIMEOUT"), result.display)
    ctx.check("terminal stays signed in", "ready", term.state)
    ctx.check("sign-off is pending in the journal", ["sign_off"], [i.kind for i in term.journal.open_intents()])
    if ctx.remedy:  # the daemon's retry with backoff
        result = await retry(term.sign_off, backoff=FAST, rng=ctx.rng)
    ctx.check("retry signs the terminal off", True, result.ok and term.state == "signed_out")
    ctx.check("host records exactly one sign-off", 1, ctx.admin.sign_offs(TID))


@scenario("FM-03", "Host approved, terminal never heard: durable reversal, sent automatically", "000, 004")
async def fm03(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.3)
    term.reversals_enabled = ctx.remedy
    seen_before_reply: list[int] = []
    term.crash_hook = lambda step: seen_before_reply.append(len(term.journal.pending_reversals())) \
        if step == "sale.sent" else None
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    result = await term.sale(6660)
    ctx.check("terminal shows no response", contains("NO RESPONSE"), result.display)
    ctx.check("reversal was stored before the request left", [1], seen_before_reply)
    ctx.check("host ledger shows the charge reversed", (0, 0, 0, 0), ctx.totals(term))
    txns = {t["stan"]: t["status"] for t in ctx.admin.transactions(TID)}
    ctx.check("host transaction status", "reversed", txns.get(result.stan))
    ctx.check("no reversal left pending", [], term.journal.pending_reversals())


@scenario("FM-04", "Terminal offline: clear message, diagnostics, recovery without (and with) restart", "004, 000")
async def fm04(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.3, connect_timeout=0.3)
    term.channel.link_down = True
    await term.channel.close()
    result = await term.sale(1200)
    ctx.check("online sale refused", False, result.ok)
    ctx.check("display says offline", contains("OFFLINE"), result.display)
    term.hw.keypad.hold("confirm", 3.0)  # network diagnostic mode
    event = term.hw.keypad.get_nowait()
    ctx.check("holding Confirm 3 s asks for diagnostics", "diagnostics", event.kind if event else None)
    diag = await term.diagnostics()
    ctx.check("diagnostics: link down, host unreachable", ("down", False),
              (diag.detail["link"], diag.detail["host_reachable"]))
    ctx.check("nothing charged while offline", (0, 0, 0, 0), ctx.totals(term))
    if ctx.remedy:
        term.channel.link_down = False  # the link returns
    again = await term.sale(1200)
    ctx.check("sale approved once the link is back, no restart", True, again.ok)
    term.channel.link_down = True
    await term.reboot()
    term.channel.link_down = not ctx.remedy
    ctx.check("after a reboot the terminal is still signed in", "ready", term.state)
    ctx.check("and transacts", True, (await term.sale(300)).ok)


@scenario("FM-05", "Duplicate sign-off and a crash between 0820 and 0830: never half signed off", "000")
async def fm05(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    first, second = await term.sign_off(), await term.sign_off()
    ctx.check("pressing sign-off twice: both answered", (True, True), (first.ok, second.ok))
    ctx.check("host counts one sign-off", 1, ctx.admin.sign_offs(TID))
    other = await ctx.ready_terminal(tid="20000002")

    def power_cut(step: str) -> None:
        if step == "sign_off.sent":
            raise PowerLost("power cut after 0820 left")

    other.crash_hook = power_cut
    with contextlib.suppress(PowerLost):
        await other.sign_off()
    await other.channel.close()
    other.journal.close()
    restarted = ctx.terminal(tid="20000002")
    await restarted.power_on()
    ctx.check("after restart the sign-off is still owed", ["sign_off"],
              [i.kind for i in restarted.journal.open_intents()])
    if ctx.remedy:
        await restarted.resume()
    ctx.check("the interrupted sign-off is completed", "signed_out", restarted.state)
    ctx.check("host counts one sign-off for that terminal", 1, ctx.admin.sign_offs("20000002"))


@scenario("FM-06", "Funds frozen by risk control; a release makes them arrive", "000 case 2")
async def fm06(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    big = await term.sale(5_600_000)  # 56,000.00 CNY: over the 50,000 single-transaction rule
    ctx.check("the sale is approved at the terminal", True, big.ok)
    held = ctx.admin.query_funds(MID, stan=big.stan)
    ctx.check("funds report shows it frozen", "frozen", held["status"])
    ctx.check("with the rule that fired", contains("50,000.00"), held["reason"])
    await term.settle()
    if ctx.remedy:
        ctx.check("operator release succeeds", True, ctx.admin.release(MID, stan=big.stan))
    ctx.admin.run_funds(ctx.host.ledger.clock() + 5 * 86400)
    ctx.check("funds arrive", "credited", ctx.admin.query_funds(MID, stan=big.stan)["status"])


@scenario("FM-07", "Merchant information changed: 03 and a parameter message; download fixes sign-off", "000 Q3")
async def fm07(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    term.obey_host_requests = ctx.remedy  # the remedy: the terminal downloads parameters when the host asks
    ctx.admin.change_merchant(TID, new_mid="898100099990001", new_name="RENAMED CAFE")
    result = await term.sign_off()
    ctx.check("sign-off rejected as invalid merchant", "03", result.rc)
    ctx.check("display says parameters must be updated", contains("UPDATE PARAMETERS"), result.display)
    done = await term.sign_off()  # the host's reply asked for a parameter download: it happens first
    ctx.check("parameter download brought the new merchant id", "898100099990001", term.mid)
    ctx.check("and the new name", "RENAMED CAFE", term.merchant_name)
    ctx.check("sign-off then succeeds", True, done.ok)


@scenario("FM-08", "Acquirer maintenance: 96 and retry later; day end deferred until the window ends", "000")
async def fm08(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    await term.sale(1800)
    now = ctx.host.ledger.clock()
    ctx.admin.set_maintenance(now, now + 0.6)
    attempt = await term.settle()
    ctx.check("host answers 96 during maintenance", "96", attempt.rc)
    ctx.check("display says host unavailable, retry later", contains("HOST UNAVAILABLE"), attempt.display)
    closed = await close_day(term, backoff=_retry_budget(ctx), rng=ctx.rng)
    ctx.check("settlement and sign-off complete after the window", (True, "signed_out"), (closed.ok, term.state))
    ctx.check("host saw one settlement", 1, len(ctx.admin.settlements(TID)))
    ctx.check("and one sign-off", 1, ctx.admin.sign_offs(TID))


@scenario("FM-09", "Outdated firmware: funds stuck / sign-in refused; update, re-settle, funds arrive", "000 case 1")
async def fm09(ctx: ScenarioContext) -> None:
    ctx.admin.set_min_firmware("3.0.0")
    old = ctx.terminal(tid="20000002", firmware="2.3.6")
    await old.power_on()
    refused = await old.sign_in()
    ctx.check("2.3.6 is refused at sign-in", "58", refused.rc)
    ctx.check("terminal says a firmware update is required", contains("FIRMWARE UPDATE REQUIRED"), refused.display)
    if ctx.remedy:
        update = await old.update_firmware()  # download, verify, install, reboot into the new slot
        ctx.check("the update downloads, verifies and boots 3.0.8", (True, "3.0.8"),
                  (update.ok, old.firmware))
    ctx.check("after the update it signs in", True, (await old.sign_in()).ok)

    ctx.admin.set_min_firmware("2.0.0")
    term = ctx.terminal(firmware="2.1.5", sign_off_after_settlement=False)
    await term.power_on()
    ctx.check("2.1.5 signs in and reports its version", "2.1.5", (await term.sign_in()).ok and
              ctx.admin.session(TID)["firmware"])
    sale = await term.sale(87_000)
    settle = await term.settle()
    ctx.check("settlement answered", True, settle.ok)
    stuck = ctx.admin.query_funds(MID, stan=sale.stan)
    ctx.check("funds stay pending", "pending", stuck["status"])
    ctx.check("with the reason recorded", contains("firmware 2.1.5"), stuck["reason"])
    if ctx.remedy:
        await term.update_firmware()
        await term.sign_in()
    ctx.check("the terminal now runs 3.0.8", "3.0.8", term.firmware)
    resettle = await term.resettle(settle.batch)
    ctx.check("re-settlement on fixed firmware answered", True, resettle.ok)
    ctx.admin.run_funds(ctx.host.ledger.clock() + 5 * 86400)
    ctx.check("funds arrive", "credited", ctx.admin.query_funds(MID, stan=sale.stan)["status"])


@scenario("FM-10", "Low battery: warning, refusal and day closed when critical, power loss loses nothing", "000")
async def fm10(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.5)
    term.hw.battery.set_level(45)
    low = await term.sale(500)
    ctx.check("below 50% the terminal still sells", True, low.ok)
    ctx.check("and warns", True, term.hw.battery.status().low)
    term.hw.battery.set_level(8)
    refused = await term.sale(500)
    ctx.check("below critical new sales are refused", contains("BATTERY CRITICAL"), refused.display)
    ctx.check("and the day is closed before power-down", "signed_out", term.state)
    ctx.check("host saw the sign-off", 1, ctx.admin.sign_offs(TID))

    other = await ctx.ready_terminal(tid="20000002", reply_timeout=0.5)

    def power_loss(step: str) -> None:
        if step == "sale.sent":
            raise PowerLost("battery died mid-sale")

    other.crash_hook = power_loss
    with contextlib.suppress(PowerLost):
        await other.sale(2200)
    await other.channel.close()
    other.journal.close()
    restarted = ctx.terminal(tid="20000002")
    restarted.reversals_enabled = ctx.remedy
    await restarted.power_on()
    ctx.check("after power-up the reversal is still owed", 1, len(restarted.journal.pending_reversals()))
    await restarted.resume()
    ctx.check("and is completed from the journal", 0, len(restarted.journal.pending_reversals()))
    ctx.check("the customer is not charged", (0, 0, 0, 0), ctx.admin.totals("20000002", restarted.journal.batch))


@scenario("FM-11", "Customer did not sign: approved but unsigned; supplementary upload; void if disputed",
          "000, 001")
async def fm11(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(hardware={"signature_behaviour": "ignore"}, signature_timeout=0.1,
                                    sign_off_after_settlement=False)
    sale = await term.sale(3300)
    ctx.check("approved", True, sale.ok)
    ctx.check("marked unsigned in the journal", [sale.stan], term.journal.unsigned_stans(term.journal.batch))
    ctx.check("the slip says unsigned", contains("UNSIGNED"), sale.receipt)
    disputed = await term.sale(4400)
    term.hw.signature_pad.behaviour = "sign"
    if ctx.remedy:
        ctx.check("supplementary signature uploaded", True, (await term.upload_signature(sale.stan)).ok)
    ctx.check("void of the disputed sale", True, (await term.void(disputed.stan)).ok)
    ctx.check("nothing unsigned remains", [], term.journal.unsigned_stans(term.journal.batch))
    settle = await term.settle()
    ctx.check("settlement report lists no unsigned items", [], settle.detail["unsigned"])


@scenario("FM-12", "No receipt printed but customer charged: receipt pending, reprint marked REPRINT", "002")
async def fm12(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    term.hw.printer.faults["out_of_paper"].arm(count=1)
    sale = await term.sale(2500)
    ctx.check("approved and journaled", "approved", term.journal.transaction(sale.stan, term.journal.batch).status)
    ctx.check("display says print failed", contains("PRINT FAILED"), sale.display)
    ctx.check("receipt pending", True, len(term.journal.pending_receipts()) > 0)
    if ctx.remedy:
        term.hw.printer.load_paper()
    reprint = await term.reprint(sale.stan)
    ctx.check("reprint prints a slip marked REPRINT", contains("REPRINT"), reprint.receipt)
    ctx.check("no second charge", (2500, 1, 0, 0), ctx.totals(term))


@scenario("FM-13", "Duplicate charge from retrying: protections mean one charge; without them, void the double",
          "002, 003")
async def fm13(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.3)
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    await term.sale(5000)
    retried = await term.sale(5000)  # the operator retries the "failed" sale
    ctx.check("with protections the customer is charged once", (5000, 1, 0, 0), ctx.totals(term))
    ctx.check("the retry is the charge", True, retried.ok)
    other = await ctx.ready_terminal(tid="20000002", reply_timeout=0.3)
    other.reversals_enabled = False  # the fault switch: protection off
    other.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    await other.sale(5000)
    second = await other.sale(5000)
    batch = other.journal.batch
    ctx.check("without protection the customer is charged twice", (10000, 2, 0, 0),
              ctx.admin.totals("20000002", batch))
    if ctx.remedy:
        ctx.check("void of the duplicate", True, (await other.void(second.stan)).ok)
    debit, _, credit, _ = ctx.admin.totals("20000002", batch)
    ctx.check("net charge after the remedy is one sale", 5000, debit - credit)


@scenario("FM-14", "Funds did not arrive: per-transaction status and reason; query; cleared, funds arrive", "003")
async def fm14(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    ok_sale = await term.sale(1000)
    held_sale = await term.sale(2000)
    await term.settle()
    ctx.admin.hold(MID, stan=held_sale.stan, reason="legal hold: court order")
    report = {r["stan"]: r for r in ctx.admin.funds_report(MID)}
    ctx.check("T1 funds pending until the next business day", "pending", report[ok_sale.stan]["status"])
    ctx.check("held funds frozen with the reason", ("frozen", "legal hold: court order"),
              (report[held_sale.stan]["status"], report[held_sale.stan]["reason"]))
    queried = ctx.admin.query_funds(MID, stan=held_sale.stan)
    ctx.check("query by merchant id + trace number", "frozen", queried["status"])
    if ctx.remedy:
        ctx.admin.release(MID, stan=held_sale.stan)
    ctx.admin.run_funds(ctx.host.ledger.clock() + 5 * 86400)
    ctx.check("all funds arrive", {"credited"}, {r["status"] for r in ctx.admin.funds_report(MID)})


@scenario("FM-15", "Receipt shows unpaid: declined slip with the code's meaning, nothing charged; retry", "004")
async def fm15(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal()
    for card, rc, text in (("insufficient", "51", "INSUFFICIENT FUNDS"), ("do-not-honour", "05", "DO NOT HONOUR"),
                           ("issuer-down", "96", "HOST UNAVAILABLE")):
        result = await term.sale(1500, card=card)
        ctx.check(f"declined {rc}", rc, result.rc)
        ctx.check(f"display gives the meaning of {rc}", contains(text), result.display)
        ctx.check("declined slip says not charged", contains("NOT CHARGED"), term.hw.printer.printed[-1].text)
    ctx.check("nothing charged", (0, 0, 0, 0), ctx.totals(term))
    other = await term.sale(1500, card="approved2" if ctx.remedy else "insufficient")
    ctx.check("another payment method succeeds", True, other.ok)


@scenario("FM-16", "Amounts do not match: unbalanced settlement; batch upload reconciles, differences shown",
          "000, 004")
async def fm16(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(reply_timeout=0.3, sign_off_after_settlement=False)
    await term.sale(1000)
    term.reversals_enabled = False  # the terminal loses track of an approval it never heard
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
    lost = await term.sale(777)
    term.reversals_enabled = True
    term.batch_upload_enabled = ctx.remedy
    settle = await term.settle()
    ctx.check("settlement answered unbalanced", "unbalanced", settle.detail.get("result"))
    ctx.check("batch upload sent the terminal's records", 1, settle.detail.get("uploaded"))
    (record,) = ctx.admin.settlements(TID)
    differences = json.loads(record["differences"])
    ctx.check("host marks the batch reconciled", "reconciled", record["result"])
    ctx.check("settlement report shows the difference", [{"side": "host only", "stan": lost.stan, "amount": 777}],
              differences)


@scenario("FM-17", "Forgot to sign off: idle auto sign-off after the threshold; fleet-wide batch sign-off", "000")
async def fm17(ctx: ScenarioContext) -> None:
    term = await ctx.ready_terminal(idle_sign_off=0.4)
    await term.sale(900)
    if ctx.remedy:
        closed = await asyncio.wait_for(sign_off_when_idle(term, term.config.idle_sign_off, backoff=FAST), 10)
        ctx.check("after the idle threshold the terminal settled and signed off", True, closed.ok)
    ctx.check("terminal signed out", "signed_out", term.state)
    ctx.check("host saw one settlement and one sign-off", (1, 1),
              (len(ctx.admin.settlements(TID)), ctx.admin.sign_offs(TID)))
    fleet = [await ctx.ready_terminal(tid=tid) for tid in ("20000002", "30000003")]
    results = await asyncio.gather(*(close_day(t, backoff=FAST) for t in fleet))
    ctx.check("batch sign-off of the fleet", [True, True], [r.ok for r in results])
    ctx.check("every terminal signed out once", [1, 1], [ctx.admin.sign_offs(t.tid) for t in fleet])


@scenario("FM-18", "Sign-off voucher: batch totals, settlement type, merchant serial, amounts matched", "000")
async def fm18(ctx: ScenarioContext) -> None:
    """No remedy: the documents prescribe the voucher itself, so there is nothing to switch off."""
    term = await ctx.ready_terminal()
    await term.sale(1234)
    await term.sale(5000)
    settle = await term.settle()
    ctx.check("settled balanced", "balanced", settle.detail.get("result"))
    voucher = term.hw.printer.printed[-1].text
    ctx.check("a sign-off voucher is printed", contains("SIGN-OFF VOUCHER"), voucher)
    ctx.check("with the batch totals", contains("RMB 62.34"), voucher)
    ctx.check("and the settlement type", contains("T1"), voucher)
    ctx.check("and a 12-digit merchant serial number", True,
              any(line.split()[-1].isdigit() and len(line.split()[-1]) == 12 for line in voucher.splitlines()
                  if "SERIAL" in line))
    ctx.check("amounts matched against the host", (6234, 2, 0, 0), ctx.admin.totals(TID, settle.batch))
