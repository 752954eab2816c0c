"""`possim load`: N simulated terminals against a host, a transaction mix, a live table and a report."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cli import EXIT_FAILED, EXIT_LINK, EXIT_OK, EXIT_USAGE, output_file_problem


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use 30s, 5m, 1h or seconds")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero (a rate, a timeout): argparse's float takes nan, inf and -5 too."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("load", help="drive a fleet of simulated terminals against a host",
                                   description="Sign N terminals in, run a transaction mix for a duration (open model "
                                               "with --rate, closed with --concurrency), settle and sign off every "
                                               "terminal, and report throughput, latency and outcomes.")
    parser.add_argument("--connect", help="host link URL")
    parser.add_argument("--terminals", type=positive_int,
                        help="fleet size (default 10; with --identities, the file's first N)")
    parser.add_argument("--identities", help="CSV tid,mid,tmk of the fleet (else generated)")
    parser.add_argument("--emit-identities", metavar="FILE", help="write the fleet's identities as CSV and exit")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--rate", type=positive_float, help="open model: transactions per second")
    model.add_argument("--concurrency", type=positive_int, help="closed model: transactions in flight")
    parser.add_argument("--duration", type=parse_duration, default=10.0, help="how long to transact (10s, 2m)")
    parser.add_argument("--ramp-up", type=parse_duration, default=0.0, help="spread sign-ins over this time")
    parser.add_argument("--mix", default="sale=80,void=5,refund=5,balance=10")
    parser.add_argument("--faults", help="fault plan (TOML) applied to every terminal")
    parser.add_argument("--reply-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="how long a terminal waits for each reply (default 10)")
    parser.add_argument("--batch-capacity", type=positive_int, metavar="N",
                        help="records a terminal's batch holds before it refuses sales (BATCH FULL); the run settles "
                             "a full batch and carries on (default: the terminal's, 500)")
    parser.add_argument("--processes", type=positive_int, default=1, metavar="N",
                        help="split the fleet across N worker processes, one report (a process drives about one "
                             "core's worth of terminals; default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", help="write the final report: .json or .csv")
    parser.add_argument("--quiet", action="store_true", help="no live table")
    parser.add_argument("--json", action="store_true",
                        help="only the report's JSON, on stdout (it is printed there in any case): no live table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..faultplan import FaultPlan, FaultPlanError
    from ..load import LoadConfig, LoadRunner, write_identities
    from ..load.runner import parse_mix

    try:
        identities = _fleet(args)
        if args.emit_identities:
            write_identities(identities, args.emit_identities)
            print(f"wrote {len(identities)} identities to {args.emit_identities}")
            return EXIT_OK
        if not args.connect:
            raise ValueError("--connect URL is required (or --emit-identities FILE)")
        from ..links import check_link_url

        check_link_url(args.connect)
        if args.report:
            check_report_path(args.report)
        mix = parse_mix(args.mix)
        faults = FaultPlan.from_toml(args.faults) if args.faults else None
    except (ValueError, OSError, FaultPlanError) as exc:
        print(f"possim load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = LoadConfig(url=args.connect, identities=identities, duration=args.duration, rate=args.rate,
                        concurrency=args.concurrency, ramp_up=args.ramp_up, mix=mix, reply_timeout=args.reply_timeout,
                        seed=args.seed, faults=faults, batch_capacity=args.batch_capacity)
    try:
        if args.processes > 1:
            from ..load import ShardError, run_sharded

            try:
                report = _with_live_table(lambda progress: run_sharded(config, args.processes, on_progress=progress,
                                                                       on_interrupt=_say_interrupted),
                                          quiet=args.quiet or args.json)
            except ShardError as exc:
                print(f"possim load: {exc}", file=sys.stderr)
                return EXIT_FAILED
        else:
            report = _with_live_table(
                lambda progress: asyncio.run(_interruptible(LoadRunner(config, on_progress=progress))),
                quiet=args.quiet or args.json)
    except KeyboardInterrupt:  # a second Ctrl-C: the user chose to abort the day end
        print("possim load: aborted: no report, and terminals may still be signed in at the host", file=sys.stderr)
        return EXIT_INTERRUPTED
    data = report.as_json()
    print(json.dumps(data))
    if args.report:
        try:
            write_report(data, args.report)
        except OSError as exc:  # checked before the run, yet the disk may be full now: the JSON above survives
            print(f"possim load: cannot write the report to {args.report}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.signed_in == 0 and report.terminals:
        return _nobody_signed_in(report)
    if report.transactions and not report.approved:
        codes = ", ".join(f"{code} x{count}" for code, count in report.rc.most_common(4))
        hint = (" - 94 is a duplicate: the host has seen these STANs in this batch, as after an earlier run with "
                "these identities that never reached its day end; use fresh identities or settle those terminals"
                if report.rc.most_common(1)[0][0] == "94" else "")
        print(f"possim load: no transaction was approved ({codes}){hint}", file=sys.stderr)
        return EXIT_FAILED
    if report.skipped:
        print(f"possim load: {report.skipped} arrivals skipped: every terminal was busy (more terminals, a lower "
              f"--rate, or a faster host)", file=sys.stderr)
    clean = report.signed_off == report.terminals and report.errors == 0 and report.skipped == 0
    return EXIT_OK if clean else EXIT_FAILED


#: The shell's code for a run ended by Ctrl-C (128 + SIGINT); the day was still closed and reported.
EXIT_INTERRUPTED = 130


def _say_interrupted() -> None:
    print("possim load: interrupted: finishing the transactions in flight, then settling and signing off every "
          "terminal (Ctrl-C again to abort)", file=sys.stderr)


async def _interruptible(runner: Any) -> Any:
    """`runner.run()` where a first Ctrl-C stops it cleanly (`LoadRunner.stop`: the host is left with no
    open day) and a later one aborts (`Interrupts`)."""
    from ..load.runner import Interrupts

    loop = asyncio.get_running_loop()

    def first() -> None:
        _say_interrupted()
        runner.stop()

    try:
        loop.add_signal_handler(signal.SIGINT, Interrupts(first))
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here: run as it is
        return await runner.run()
    try:
        return await runner.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _fleet(args: argparse.Namespace) -> list[Any]:
    """The fleet's identities: generated (--terminals, default 10), or the file's (all of them, or its
    first --terminals); ValueError when the file has fewer than asked for."""
    from ..load import generate_identities, read_identities

    if not args.identities:
        return generate_identities(args.terminals or 10)
    identities = read_identities(args.identities)
    if args.terminals is None:
        return identities
    if args.terminals > len(identities):
        raise ValueError(f"--terminals {args.terminals}: {args.identities} holds only {len(identities)} identities")
    return identities[:args.terminals]


def check_report_path(path: str) -> None:
    """Refuse, before a run of minutes, a report that could not be written after it: a format other
    than .json / .csv, or a path no file can be written at (`output_file_problem`)."""
    if Path(path).suffix.lower() not in (".json", ".csv"):
        raise ValueError(f"--report {path}: the file must end in .json or .csv")
    problem = output_file_problem(path)
    if problem:
        raise ValueError(f"--report {path}: {problem}")


def _nobody_signed_in(report: Any) -> int:
    """No terminal could sign in, so nothing was sold: say why on stderr. Link unavailable (4) when the
    host answered none of them; failed (1) when it answered and refused them (unknown terminal, say)."""
    from ..load.runner import SIGN_IN_DECLINED

    kinds = ", ".join(f"{kind} x{count}" for kind, count in report.error_kinds.most_common())
    print(f"possim load: no terminal signed in ({kinds})", file=sys.stderr)
    answered = any(kind.startswith(SIGN_IN_DECLINED) for kind in report.error_kinds)
    return EXIT_FAILED if answered else EXIT_LINK


#: The live table's latencies are those of the last this many transactions (the final report's are of all).
LIVE_WINDOW = 20_000


def _table(report: Any, *, final: bool = False) -> Any:
    """The live table, narrow enough for an 80-column terminal: short headers, latencies in ms, the
    response codes as its caption. The final one shows the report's own throughput (transactions over
    the transacting seconds, not the sign-in and day end) and how many terminals signed off."""
    from rich import box
    from rich.table import Table

    lat = report.latency_ms(None if final else LIVE_WINDOW)
    tps = report.tps if final else report.transactions / max(1e-9, time.perf_counter() - report.started)
    codes = " ".join(f"{k}:{v}" for k, v in report.rc.most_common(8))
    t = Table(title=f"possim load: {report.terminals} terminals (latency in ms)",
              caption=f"codes {codes}" if codes else None, box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True)
    columns = ["in", *(["off"] if final else []), "txns", "tps", "p50", "p95", "p99", "max", "ok", "rev", "err"]
    for column in columns:
        t.add_column(column, justify="right", no_wrap=True)
    t.add_row(str(report.signed_in), *([str(report.signed_off)] if final else []), str(report.transactions),
              f"{tps:.0f}", *(f"{lat[k]:.1f}" for k in ("p50", "p95", "p99", "max")), str(report.approved),
              str(report.reversals), str(report.errors))
    return t


def _throttled(live: Any) -> Any:
    state = {"last": 0.0}

    def progress(report: Any) -> None:
        now = time.perf_counter()
        if now - state["last"] > 0.25:
            state["last"] = now
            live.update(_table(report))

    return progress


def _with_live_table(run: Callable[[Callable[[Any], None] | None], Any], *, quiet: bool) -> Any:
    """`run(on_progress)` - one runner, or the shards - under a live table on a terminal (stderr), or
    `run(None)` when quiet or redirected; the table's last refresh is the final report's."""
    if quiet or not sys.stderr.isatty():
        return run(None)
    from rich.console import Console
    from rich.live import Live

    with Live(console=Console(stderr=True), refresh_per_second=4) as live:
        report = run(_throttled(live))
        live.update(_table(report, final=True))
    return report


def write_report(data: dict[str, Any], path: str) -> None:
    if path.lower().endswith(".csv"):
        flat = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
        flat.update({f"latency_{k}_ms": v for k, v in data["latency_ms"].items()})
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(flat))
            writer.writeheader()
            writer.writerow(flat)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
