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
Amounts are yuan with at most two decimals, above zero; a file is checked whole when it is loaded (every
amount, STAN reference, required key and expectation, and at least one check) before any step runs.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..faultplan import FaultPlan, FaultPlanError
from .engine import MID, TID, Scenario, ScenarioContext, contains

OPS = ("sign-in", "sale", "void", "refund", "balance", "settle", "sign-off", "reprint", "echo", "diagnostics",
       "reboot", "parameters", "status-upload", "signature", "wait", "check", "clear-faults", "load-paper",
       "clean-reader", "link-up")


#: Operations whose result a step can name and whose STAN later steps can use (`stan = "@name"`).
RESULT_OPS = frozenset({"sign-in", "sale", "void", "refund", "balance", "settle", "sign-off", "reprint", "signature",
                        "echo", "diagnostics", "reboot", "status-upload", "parameters"})
#: Keys each operation cannot do without.
REQUIRED = {"sale": ("amount",), "refund": ("stan", "amount"), "void": ("stan",), "signature": ("stan",)}
EXPECTATIONS = ("ok", "rc", "state", "display_contains", "receipt_contains", "host_totals", "pending_reversals",
                "sign_offs", "funds_status", "stan")
_AMOUNT = re.compile(r"\d+(?:\.\d{1,2})?")
_MAX_FEN = 999_999_999_999  # field 4 is 12 digits of fen


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run as written (names the step and key)."""


def load_scenario_file(path: str | Path) -> Scenario:
    """The scenario in a TOML file, checked through before anything runs.

    Every problem a run would otherwise meet halfway (an amount that is not money, a STAN reference to a step
    that saves none, a missing key, an expectation that does not exist) is a ScenarioFileError here, naming
    the file, the step and the problem, so `possim scenario run --file` refuses it (rc 2) instead of running
    half a scenario and failing with a Python error, or passing one that checks nothing.
    """
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
    name = str(data.get("name") or path.stem)
    saved: set[str] = set()  # names of earlier steps whose result (and so STAN) is kept
    checks = 0
    for number, step in enumerate(steps, start=1):
        checks += _check_step(path, number, step, saved)
    if checks == 0:
        raise ScenarioFileError(f"{path}: scenario {name} has no checks: give at least one step an expect table "
                                f"(a scenario that checks nothing would always pass)")
    terminal_settings = dict(data.get("terminal", {}))
    plan = None
    if "faults" in data:  # checked like a step's: a bad plan is the file's error, not a traceback
        try:
            plan = FaultPlan.from_mapping(data["faults"], source=f"{path} [faults]")
        except FaultPlanError as exc:
            raise ScenarioFileError(str(exc)) from None

    async def run(ctx: ScenarioContext) -> None:
        term = ctx.terminal(**terminal_settings)
        await term.power_on()
        if plan is not None:
            plan.apply(term, host_admin=ctx.admin)
        named: dict[str, Any] = {}
        for number, step in enumerate(steps, start=1):
            await _run_step(ctx, term, number, step, named)

    return Scenario(name, str(data.get("title", name)), run, source=str(path))


def _check_step(path: Path, number: int, step: Any, saved: set[str]) -> int:
    """Check one step against what `_run_step` will do with it; its number of checks. `saved` gains the step's
    name when its result is kept, so only later steps (and its own expectations) can refer to it."""
    if not isinstance(step, dict):
        raise ScenarioFileError(f"{path}: step {number}: must be a table ([[steps]]), not {step!r}")
    op = step.get("op")
    if op not in OPS:
        raise ScenarioFileError(f"{path}: step {number}: op must be one of {', '.join(OPS)}")
    where = f"{path}: step {number} ({op})"
    if "faults" in step:
        try:
            FaultPlan.from_mapping(step["faults"], source=f"{path} step {number}")
        except FaultPlanError as exc:
            raise ScenarioFileError(str(exc)) from None
    for key in REQUIRED.get(op, ()):
        if key not in step:
            raise ScenarioFileError(f"{where}: {op} needs {key}")
    try:
        if "amount" in step:
            parse_amount(step["amount"])
        if "stan" in step:
            _check_stan(step["stan"], saved)
        if op == "wait":
            seconds = step.get("seconds", 0)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
                raise ValueError(f"seconds {seconds!r} must be a number of seconds, 0 or more")
    except ValueError as exc:
        raise ScenarioFileError(f"{where}: {exc}") from None
    step_name = step.get("name")
    if step_name is not None and not isinstance(step_name, str):
        raise ScenarioFileError(f"{where}: name {step_name!r} must be text")
    if step_name is not None and op in RESULT_OPS:
        saved.add(step_name)  # before its expectations: `_run_step` names the result before checking it
    expect = step.get("expect", {})
    if not isinstance(expect, dict):
        raise ScenarioFileError(f"{where}: expect must be a table, like expect = {{ ok = true }}")
    for key in expect:
        if key not in EXPECTATIONS:
            raise ScenarioFileError(f"{where}: unknown expectation {key!r}; expectations: {', '.join(EXPECTATIONS)}")
        if key in ("ok", "rc") and op not in RESULT_OPS:
            raise ScenarioFileError(f"{where}: expectation {key!r} needs an operation with a result, not {op}")
    if "funds_status" in expect:
        if "stan" not in expect:
            raise ScenarioFileError(f"{where}: expectation 'funds_status' needs stan (the sale to look up)")
        try:
            _check_stan(expect["stan"], saved)
        except ValueError as exc:
            raise ScenarioFileError(f"{where}: expect: {exc}") from None
    return sum(key != "stan" for key in expect)


def parse_amount(value: Any) -> int:
    """An amount in yuan ("12.34", or a TOML number) in fen; ValueError unless it is a plain decimal with at most
    two decimals, above zero and within field 4. Nothing is rounded: 12.345 is a typo, not 12.34."""
    text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if text is None or not _AMOUNT.fullmatch(text):
        if text is not None and re.fullmatch(r"[+-]?\d*\.\d{3,}", text):
            raise ValueError(f"amount {value!r} has more than two decimals")
        if text is not None and text.startswith("-"):
            raise ValueError(f"amount {value!r} is negative; amounts are above zero")
        raise ValueError(f"amount {value!r} is not an amount in yuan like \"12.34\"")
    fen = int(Decimal(text) * 100)  # exact: at most two decimals
    if fen == 0:
        raise ValueError(f"amount {value!r} is zero; amounts are above zero")
    if fen > _MAX_FEN:
        raise ValueError(f"amount {value!r} is more than 9999999999.99, the most field 4 carries")
    return fen


def _check_stan(value: Any, saved: set[str]) -> None:
    """A STAN as written in a step: up to 6 digits, or `@name` of an earlier step whose result is kept."""
    text = str(value)
    if text.startswith("@"):
        if text[1:] not in saved:
            raise ValueError(f"stan {text!r} refers to no earlier step: name a step with a result "
                             f"(name = {text[1:]!r}) before this one"
                             + (f"; earlier names: {', '.join(sorted(saved))}" if saved else ""))
    elif isinstance(value, bool) or not text.isdigit() or len(text) > 6:
        raise ValueError(f"stan {value!r} must be up to 6 digits or @name of an earlier step")


def _amount(text: Any) -> int:
    return parse_amount(text)  # checked at load time: cannot fail here


def _stan(value: Any, named: dict[str, Any]) -> str:
    text = str(value)
    if text.startswith("@"):
        return named[text[1:]].stan  # checked at load time: an earlier step saved it
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
