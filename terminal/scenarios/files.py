"""Scenario files: users' own cases in TOML - terminal settings, a fault plan, steps, expectations.

Like jPOS's client simulator (send this, expect that) but at the level of terminal operations:

    name = "SHOP-01"
    title = "Lost reply on a big sale is reversed"
    [terminal]
    reply_timeout = 0.5
    [[steps]]
    op = "sign-in"
    expect = { ok = true }
    [[steps]]
    op = "sale"
    amount = "250.00"
    name = "big"
    faults = { message = [{ action = "drop", direction = "rx", mti = "0210", count = 1 }] }
    expect = { ok = false, display_contains = "NO RESPONSE" }
    [[steps]]
    op = "check"
    expect = { host_totals = [0, 0, 0, 0], pending_reversals = 0 }

A step's `faults` table is a fault plan (see `terminal.faultplan`) armed just before the step; its
`stan = "@big"` refers to the STAN of the step named `big`. Expectations: ok, rc, state,
display_contains, receipt_contains, host_totals, pending_reversals, sign_offs, funds_status + stan.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..faultplan import FaultPlan, FaultPlanError
from .engine import MID, TID, Scenario, ScenarioContext, contains

OPS = ("sign-in", "sale", "void", "refund", "balance", "settle", "sign-off", "reprint", "echo", "diagnostics",
       "reboot", "parameters", "status-upload", "signature", "wait", "check", "clear-faults", "load-paper",
       "clean-reader", "link-up")


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run as written (names the step and key)."""


def load_scenario_file(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ScenarioFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(f"{path}: not valid TOML: {exc}") from None
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ScenarioFileError(f"{path}: no [[steps]]")
    for number, step in enumerate(steps, start=1):
        if step.get("op") not in OPS:
            raise ScenarioFileError(f"{path}: step {number}: op must be one of {', '.join(OPS)}")
        if "faults" in step:
            try:
                FaultPlan.from_mapping(step["faults"], source=f"{path} step {number}")
            except FaultPlanError as exc:
                raise ScenarioFileError(str(exc)) from None
    terminal_settings = dict(data.get("terminal", {}))
    plan = None
    if "faults" in data:  # checked like a step's: a bad plan is the file's error, not a traceback
        try:
            plan = FaultPlan.from_mapping(data["faults"], source=f"{path} [faults]")
        except FaultPlanError as exc:
            raise ScenarioFileError(str(exc)) from None
    name = str(data.get("name") or path.stem)

    async def run(ctx: ScenarioContext) -> None:
        term = ctx.terminal(**terminal_settings)
        await term.power_on()
        if plan is not None:
            plan.apply(term, host_admin=ctx.admin)
        named: dict[str, Any] = {}
        for number, step in enumerate(steps, start=1):
            await _run_step(ctx, term, number, step, named)

    return Scenario(name, str(data.get("title", name)), run, source=str(path))


def _amount(text: Any) -> int:
    return int(Decimal(str(text)) * 100)


def _stan(value: Any, named: dict[str, Any]) -> str:
    text = str(value)
    if text.startswith("@"):
        return named[text[1:]].stan
    return text.zfill(6)


async def _run_step(ctx: ScenarioContext, term: Any, number: int, step: dict[str, Any], named: dict[str, Any]) -> None:
    import asyncio

    op = step["op"]
    label = f"step {number} ({op}{' ' + step['name'] if 'name' in step else ''})"
    if "faults" in step:
        FaultPlan.from_mapping(step["faults"]).apply(term, host_admin=ctx.admin)
    result = None
    if op == "sign-in":
        result = await term.sign_in()
    elif op == "sale":
        result = await term.sale(_amount(step["amount"]), card=step.get("card"), method=step.get("method", "swipe"),
                                 pin=step.get("pin"))
    elif op == "void":
        result = await term.void(_stan(step["stan"], named))
    elif op == "refund":
        result = await term.refund(_stan(step["stan"], named), _amount(step["amount"]))
    elif op == "balance":
        result = await term.balance(card=step.get("card"))
    elif op == "settle":
        result = await term.settle()
    elif op == "sign-off":
        result = await term.sign_off()
    elif op == "reprint":
        result = await term.reprint(_stan(step["stan"], named) if "stan" in step else None)
    elif op == "signature":
        result = await term.upload_signature(_stan(step["stan"], named))
    elif op in ("echo", "diagnostics", "reboot", "status-upload", "parameters"):
        method = {"status-upload": "status_upload", "parameters": "parameter_download"}.get(op, op)
        result = await getattr(term, method)()
    elif op == "wait":
        await asyncio.sleep(float(step.get("seconds", 0)))
    elif op == "clear-faults":
        FaultPlan().clear(term, host_admin=ctx.admin)
    elif op == "load-paper":
        term.hw.printer.load_paper()
    elif op == "clean-reader":
        term.hw.reader.faults.disarm_all()
        term.hw.reader.clean()
    elif op == "link-up":
        term.channel.link_down = False
    if result is not None and "name" in step:
        named[step["name"]] = result
    _expect(ctx, term, label, step.get("expect", {}), result, named)


def _expect(ctx: ScenarioContext, term: Any, label: str, expect: dict[str, Any], result: Any,
            named: dict[str, Any]) -> None:
    for key, wanted in expect.items():
        what = f"{label}: {key}"
        if key in ("ok", "rc", "state") and result is not None:
            ctx.check(what, wanted, getattr(result, key) if key != "state" else term.state)
        elif key == "state":
            ctx.check(what, wanted, term.state)
        elif key == "display_contains":
            ctx.check(what, contains(wanted), list(term.hw.display.lines))
        elif key == "receipt_contains":
            ctx.check(what, contains(wanted), result.receipt if result is not None else None)
        elif key == "host_totals":
            ctx.check(what, list(wanted), list(ctx.admin.totals(TID, term.journal.batch)))
        elif key == "pending_reversals":
            ctx.check(what, wanted, len(term.journal.pending_reversals()))
        elif key == "sign_offs":
            ctx.check(what, wanted, ctx.admin.sign_offs(TID))
        elif key == "funds_status":
            funds = ctx.admin.query_funds(MID, stan=_stan(expect["stan"], named))
            ctx.check(what, wanted, funds["status"] if funds else None)
        elif key == "stan":
            continue
        else:
            raise ScenarioFileError(f"{label}: unknown expectation {key!r}")
