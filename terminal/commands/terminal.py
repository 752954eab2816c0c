"""`possim terminal`: run operations on one simulated terminal against any cup-pos host.

    possim terminal --connect tcp://127.0.0.1:5800 --journal term.sqlite sign-in sale 12.34 settle

Operations run in order; the journal persists between invocations, so `sale` in one run and
`void STAN` in the next works, and a reversal left pending by an earlier run is sent before the next
online operation. With `--json` each operation prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..cli import EXIT_FAILED, EXIT_INTERNAL, EXIT_LINK, EXIT_OK, EXIT_USAGE
from ..config import ConfigError, load_config
from ..result import OpResult

OPS_HELP = ("sign-in | sale AMOUNT | void STAN | refund STAN AMOUNT | balance | settle | sign-off | "
            "reprint [STAN] | echo | status | parameters | status-upload | diagnostics | reboot | "
            "signature STAN")


class UsageError(ValueError):
    pass


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Any, ...] = ()


#: Field 4 (amount, transaction) is n12 in fen: at most 12 digits, so 9999999999.99 yuan.
MAX_AMOUNT_FEN = 10**12 - 1
#: A plain ASCII decimal with at most two decimals. Decimal() alone also takes NaN, inf, 1e3, +1.00 and
#: full-width digits; none of those is what a merchant keys in, and NaN/inf cannot even be compared.
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")


def parse_amount(text: str) -> int:
    """'12.34' -> 1234 fen. UsageError, naming the amount and the form expected, for anything else."""
    if not _AMOUNT.fullmatch(text):
        raise UsageError(f"amount {text!r} is not a plain decimal like 12.34 "
                         "(ASCII digits, at most two decimals, no sign or exponent)")
    fen = int(Decimal(text) * 100)
    if fen <= 0:
        raise UsageError(f"amount {text!r} must be more than zero")
    if fen > MAX_AMOUNT_FEN:
        raise UsageError(f"amount {text!r} is too large: field 4 holds 12 digits of fen, "
                         f"so at most {MAX_AMOUNT_FEN // 100}.{MAX_AMOUNT_FEN % 100:02d}")
    return fen


def _looks_like_stan(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _stan(text: str) -> str:
    """A STAN (field 11, n6) as typed, zero-filled to 6 digits; leading zeros may be left out."""
    if not _looks_like_stan(text) or len(text) > 6:
        raise UsageError(f"STAN {text!r} must be up to 6 digits")
    return text.zfill(6)


def parse_ops(tokens: Sequence[str]) -> list[Op]:
    """Turn `sale 12.34 void 000002` into operations; errors name the token at fault."""
    ops: list[Op] = []
    i = 0

    def take(what: str) -> str:
        # The error names the whole operation so far ("refund 000002 needs an AMOUNT"), not just the last word.
        nonlocal i
        if i >= len(tokens):
            raise UsageError(f"{' '.join(tokens[start:i])} needs {what}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        start = i
        word = tokens[i].lower()
        i += 1
        if word in ("sign-in", "signin"):
            ops.append(Op("sign_in"))
        elif word == "sale":
            ops.append(Op("sale", (parse_amount(take("an AMOUNT")),)))
        elif word == "void":
            ops.append(Op("void", (_stan(take("a STAN")),)))
        elif word == "refund":
            stan = _stan(take("a STAN and an AMOUNT"))
            ops.append(Op("refund", (stan, parse_amount(take("an AMOUNT")))))
        elif word == "reprint":
            if i < len(tokens) and _looks_like_stan(tokens[i]):
                ops.append(Op("reprint", (_stan(take("a STAN")),)))
            else:
                ops.append(Op("reprint", (None,)))
        elif word == "signature":
            ops.append(Op("signature", (_stan(take("a STAN")),)))
        elif word in ("balance", "settle", "echo", "status", "diagnostics", "reboot"):
            ops.append(Op(word))
        elif word in ("sign-off", "signoff"):
            ops.append(Op("sign_off"))
        elif word in ("parameters", "parameter-download"):
            ops.append(Op("parameter_download"))
        elif word == "status-upload":
            ops.append(Op("status_upload"))
        elif start > 0 and tokens[start - 1].lower() == "reprint":
            # `reprint 12ab` is most likely a mistyped STAN, not a mistyped operation.
            raise UsageError(f"reprint takes an optional 6-digit STAN, got {tokens[start]!r} "
                             f"(nor is that an operation: {OPS_HELP})")
        else:
            raise UsageError(f"unknown operation {tokens[i - 1]!r}; operations: {OPS_HELP}")
    if not ops:
        raise UsageError(f"no operation given; operations: {OPS_HELP}")
    return ops


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="terminal TOML file ([terminal] table)")
    parser.add_argument("--tid", help="terminal id (8 characters)")
    parser.add_argument("--mid", help="merchant id (15 characters)")
    parser.add_argument("--tmk", help="terminal master key (32 hex)")
    parser.add_argument("--tpdu", help="TPDU (10 hex, e.g. 6000060000)")
    parser.add_argument("--firmware", help="firmware version reported in the header and at sign-in, e.g. 3.0.8")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "terminal", help="run operations on a simulated terminal",
        description=f"Run operations in order on one terminal. OP: {OPS_HELP}. AMOUNT in yuan (12.34).")
    parser.add_argument("--connect", help="host link URL (tcp://host:port, serial:///dev/ttyX, ...)")
    parser.add_argument("--journal", help="terminal journal (SQLite); persists between runs")
    add_identity_arguments(parser)
    parser.add_argument("--reply-timeout", type=float, help="seconds to wait for a host reply (default 60)")
    parser.add_argument("--batch-capacity", type=int, metavar="N",
                        help="records the batch holds before sales are refused with BATCH FULL (default 500)")
    parser.add_argument("--card", default=None, help="test card name for card operations (default: approved)")
    parser.add_argument("--method", default="swipe", choices=("swipe", "chip", "contactless"))
    parser.add_argument("--pin", default=None, help="PIN entered for card operations")
    parser.add_argument("--json", action="store_true", help="one JSON object per operation")
    parser.add_argument("--trace", help="write a hex + decoded trace of every frame to this file")
    parser.add_argument("ops", nargs="+", metavar="OP")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        ops = parse_ops(args.ops)
        config = load_config(args.config, connect=args.connect, journal=args.journal, tid=args.tid, mid=args.mid,
                             tmk=args.tmk, tpdu=args.tpdu, firmware=args.firmware, reply_timeout=args.reply_timeout,
                             batch_capacity=args.batch_capacity)
        check_inputs(config.connect, card=args.card, pin=args.pin)
    except (UsageError, ConfigError) as exc:
        print(f"possim terminal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if "sign_after_s" not in config.hardware:
        # On the wall clock a simulated customer signs quickly; the 5 s default suits virtual time.
        config = config.with_overrides(hardware={**config.hardware, "sign_after_s": 0.3})
    try:
        return asyncio.run(_run(config, ops, args))
    except Exception as exc:  # the contract: internal errors exit 3 with a message, not a traceback
        print(f"possim terminal: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL


def check_inputs(connect: str, *, card: str | None, pin: str | None) -> None:
    """UsageError for a link URL, card name or PIN that cannot work, before anything is opened.

    Checked up front because the terminal would only trip over them mid-run (at the first connect, the
    card read, the PIN block), where they surface as an internal error or a link failure instead of
    the usage error they are.
    """
    from acquirer.testcards import card_by_name

    from ..links import check_link_url
    from ..links.serial import PASSTHROUGH_SCHEMES, serial_settings

    try:
        url = check_link_url(connect)
        if url.scheme in ("serial", *PASSTHROUGH_SCHEMES):
            serial_settings(url)  # baud, parity, unknown parameters: the opener would reject them later
    except ValueError as exc:
        raise UsageError(str(exc)) from None  # it names the URL, from --connect or the config
    if card is not None:
        try:
            card_by_name(card)
        except KeyError as exc:
            raise UsageError(f"--card: {exc.args[0]}") from None
    if pin is not None and not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise UsageError(f"--pin {pin!r}: a PIN must be 4 to 12 digits")  # ISO 9564 format 0's bounds


async def _run(config: Any, ops: list[Op], args: argparse.Namespace) -> int:
    from ..core import Terminal
    from ..journal import JournalError
    from ..trace import FrameTracer

    try:
        tracer = FrameTracer.open(args.trace, dialect=config.dialect) if args.trace else None
    except OSError as exc:
        print(f"possim terminal: --trace {args.trace}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        terminal = Terminal(config, trace=tracer)
    except JournalError as exc:
        # Raised while opening: the file named by --journal cannot serve as a journal (no such folder, not
        # writable, not a possim journal). The caller must name another: a usage error, not a failed operation.
        if tracer is not None:
            tracer.close()
        print(f"possim terminal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    crash_at = os.environ.get("POSSIM_CRASH_AT")
    if crash_at:
        terminal.crash_hook = _crash_at(crash_at)
    exit_code = EXIT_OK
    try:
        boot = await terminal.power_on()
        if not boot.ok:
            _emit(boot, args.json)
            return EXIT_FAILED
        for result in await terminal.resume():
            _emit(result, args.json)
        for op in ops:
            failures_before = terminal.channel.link_failures
            result = await _dispatch(terminal, op, args)
            _emit(result, args.json)
            if not result.ok:
                exit_code = max(exit_code, _failure_code(result, terminal.channel.link_failures > failures_before))
    finally:
        await terminal.shut_down()
        terminal.journal.close()
        if tracer is not None:
            tracer.close()
    return exit_code


def _failure_code(result: OpResult, link_failed: bool) -> int:
    """EXIT_LINK only when this operation failed because the link could not be opened or broke, with no
    answer from the host; a refusal the terminal makes itself (not signed in, no such STAN) is EXIT_FAILED.

    Judged per operation, so the code never depends on what else is in the run; with several failures
    the link's (4) wins over a plain failure (1).
    """
    return EXIT_LINK if link_failed and result.rc is None else EXIT_FAILED


def _crash_at(point: str) -> Any:
    """POSSIM_CRASH_AT=sale.sent: the process kills itself (SIGKILL) at that step - for crash tests."""

    def hook(name: str) -> None:
        if name == point:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


async def _dispatch(terminal: Any, op: Op, args: argparse.Namespace) -> OpResult:
    if op.name == "sale":
        return await terminal.sale(op.args[0], card=args.card, method=args.method, pin=args.pin)
    if op.name == "balance":
        return await terminal.balance(card=args.card, method=args.method, pin=args.pin)
    if op.name == "void":
        return await terminal.void(op.args[0])
    if op.name == "refund":
        return await terminal.refund(op.args[0], op.args[1])
    if op.name == "reprint":
        return await terminal.reprint(op.args[0])
    if op.name == "signature":
        return await terminal.upload_signature(op.args[0])
    if op.name == "status":
        status = terminal.status()
        return OpResult(op="status", ok=True, state=terminal.state, batch=status["batch"],
                        display=list(terminal.hw.display.lines), detail={"status": status})
    method = getattr(terminal, op.name)
    return await method()


def _emit(result: OpResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)
        return
    verdict = "OK" if result.ok else "FAILED"
    parts = [f"{result.op}: {verdict}"]
    if result.rc:
        parts.append(f"rc={result.rc}")
    if result.stan:
        parts.append(f"stan={result.stan}")
    if result.batch:
        parts.append(f"batch={result.batch}")
    if result.amount is not None:
        parts.append(f"amount={result.amount / 100:.2f}")
    parts.append(f"state={result.state}")
    print("  ".join(parts))
    if result.message:
        print(f"  {result.message}")
    for line in result.display:
        print(f"  | {line}")
    if result.receipt:
        print("  " + result.receipt.replace("\n", "\n  "))
    if "status" in result.detail:
        for key, value in result.detail["status"].items():
            print(f"  {key}: {value}")
    sys.stdout.flush()
