"""`possim host`: serve the reference acquirer host; `possim host admin ...`: inspect and change it.

`register(subparsers)` (alias `add_host_parser`) adds both to the `possim` parser; `run_host(args)` and
`run_admin(args)` return the exit code (0 ok, 1 nothing done, 2 usage, 4 link unavailable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .config import HostConfig, HostConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("host", help="run the reference acquirer host",
                                   description="Serve the reference acquirer host until SIGTERM / SIGINT.")
    parser.add_argument("--listen", action="append", default=[], metavar="URL",
                        help="link to serve (tcp://127.0.0.1:5800, serial:///dev/ttyX); repeatable")
    parser.add_argument("--config", help="host TOML (merchants, terminals, risk, maintenance, calendar)")
    parser.add_argument("--db", default="host.sqlite", help="ledger file (SQLite)")
    parser.add_argument("--terminal", action="append", default=[], metavar="TID:MID:TMK",
                        help="register a terminal without a config file (merchant created, T1)")
    parser.add_argument("--terminals-csv", help="register terminals from a CSV with header tid,mid,tmk")
    parser.add_argument("--min-firmware", help="refuse sign-in below this firmware version")
    parser.add_argument("--durability", choices=("normal", "full"),
                        help="ledger fsync policy: normal survives a killed host, full also a power cut")
    parser.add_argument("--trace", help="write a hex + decoded trace of every frame (card numbers masked)")
    parser.add_argument("--log", metavar="FILE", help="write one JSON line per message handled (terminal, MTI, "
                                                      "STAN, response code, latency; PANs masked) to FILE, "
                                                      "or '-' for stderr (also shown at -v)")
    parser.set_defaults(handler=run_host)
    sub = parser.add_subparsers(dest="host_command", metavar="admin")
    admin = sub.add_parser("admin", help="inspect or change a host's ledger and policy")
    admin.add_argument("--db", dest="admin_db", default="host.sqlite", help="ledger file (SQLite)")
    admin.add_argument("--config", dest="admin_config", help="host TOML (needed for merchant data)")
    admin.add_argument("--json", action="store_true")
    admin.add_argument("action", choices=ADMIN_ACTIONS)
    admin.add_argument("args", nargs="*", help="ledger [TID] | funds MID | query MID STAN|RRN | release MID STAN|RRN "
                                               "| hold MID STAN|RRN REASON... | fail MID STAN|RRN REASON... "
                                               "| settlements [TID] | reversals [TID] | sign-offs TID | events [KIND] "
                                               "| session TID | maintenance START END [96|refuse] | maintenance "
                                               "daily HH:MM-HH:MM [96|refuse] | clear-maintenance "
                                               "| min-firmware VERSION | merchant TID MID [NAME] | run-funds [WHEN] "
                                               "(STAN: up to 6 digits, RRN: 12; times: ISO 8601, epoch seconds "
                                               "or +SECONDS)")
    admin.set_defaults(handler=run_admin)


ADMIN_ACTIONS = ("ledger", "funds", "query", "release", "hold", "fail", "settlements", "reversals", "sign-offs",
                 "events", "session", "maintenance", "clear-maintenance", "min-firmware", "merchant", "run-funds")


def _build_config(args: argparse.Namespace) -> HostConfig:
    config = HostConfig.load(args.config) if args.config else HostConfig()
    config.add_terminal_specs(args.terminal)
    if args.terminals_csv:
        config.add_terminals_csv(args.terminals_csv)
    if args.min_firmware:
        from firmware_sim.profiles import parse_version

        try:
            parse_version(args.min_firmware)  # the host compares versions numerically: "banana" would admit all
        except ValueError as exc:
            raise HostConfigError(f"--min-firmware: {exc}") from None
        config.min_firmware = args.min_firmware
    if getattr(args, "durability", None):
        config.durability = args.durability
    return config


def _message_log(target: str) -> logging.Handler:
    handler: logging.Handler = (logging.StreamHandler(sys.stderr) if target == "-"
                                else logging.FileHandler(target, encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("possim.host")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    if target == "-":
        logger.propagate = False  # not twice on stderr at -v
    return handler


def run_host(args: argparse.Namespace) -> int:
    """Check every input (links, config, firmware, ledger, trace and log files) before serving, so a typo is
    a usage error (2) naming what was wrong, and 4 is kept for a link that is valid but cannot be opened."""
    from terminal.links import check_link_url

    if not args.listen:
        print("possim host: give at least one --listen URL (e.g. tcp://127.0.0.1:5800)", file=sys.stderr)
        return 2
    try:
        for url in args.listen:
            check_link_url(url)
    except ValueError as exc:
        print(f"possim host: --listen: {exc}", file=sys.stderr)
        return 2
    try:
        config = _build_config(args)
    except HostConfigError as exc:
        print(f"possim host: {exc}", file=sys.stderr)
        return 2
    handler = tracer = None
    try:
        if getattr(args, "log", None):
            try:
                handler = _message_log(args.log)
            except OSError as exc:
                print(f"possim host: cannot open --log {args.log}: {exc.strerror or exc}", file=sys.stderr)
                return 2
        if args.trace:
            from terminal.trace import FrameTracer

            try:
                tracer = FrameTracer.open(args.trace)
            except OSError as exc:
                print(f"possim host: cannot open --trace {args.trace}: {exc.strerror or exc}", file=sys.stderr)
                return 2
        return asyncio.run(_serve(config, args, tracer))
    finally:
        if tracer is not None:
            tracer.close()
        if handler is not None:
            logging.getLogger("possim.host").removeHandler(handler)
            handler.close()


async def _serve(config: HostConfig, args: argparse.Namespace, tracer: Callable[[str, bytes], None] | None) -> int:
    from terminal.links import LinkUnavailable

    from .host import HostServer

    try:
        server = HostServer(config, args.db)
    except sqlite3.Error as exc:
        from terminal.cli import output_file_problem

        print(f"possim host: cannot open ledger {args.db}: {output_file_problem(args.db) or exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        server.trace = tracer
        for url in args.listen:
            try:
                bound = await server.listen(url)
            except LinkUnavailable as exc:
                print(f"possim host: {exc}", file=sys.stderr)
                return 4
            except ValueError as exc:  # a URL check_link_url accepts but the host cannot serve on (loop://)
                print(f"possim host: --listen: {exc}", file=sys.stderr)
                return 2
            print(bound, flush=True)
        await stop.wait()
    return 0


def _txn_ref(text: str) -> dict[str, str]:
    """A transaction reference on the command line: a STAN (up to 6 digits) or an RRN (12 digits)."""
    if not text.isdigit() or len(text) not in (*range(1, 7), 12):
        raise ValueError(f"{text!r} is neither a STAN (up to 6 digits) nor an RRN (12 digits)")
    return {"rrn": text} if len(text) == 12 else {"stan": text.zfill(6)}


def run_admin(args: argparse.Namespace) -> int:
    from .admin import Admin, LedgerFileError

    try:
        config = HostConfig.load(args.admin_config) if args.admin_config else None
        admin = Admin.open(args.admin_db, config)
    except (HostConfigError, LedgerFileError) as exc:
        print(f"possim host admin: {exc}", file=sys.stderr)
        return 2
    a = args.args
    status = 0
    try:
        if args.action == "ledger":
            rows: Any = admin.transactions(a[0] if a else None)
        elif args.action == "funds":
            rows = admin.funds_report(a[0])
        elif args.action == "query":
            rows = admin.query_funds(a[0], **_txn_ref(a[1]))
            status = 0 if rows is not None else 1
        elif args.action == "release":
            rows = {"released": admin.release(a[0], **_txn_ref(a[1]))}
            status = 0 if rows["released"] else 1
        elif args.action in ("hold", "fail"):
            if len(a) < 3:
                raise IndexError
            rows = {"held": admin.hold(a[0], **_txn_ref(a[1]), reason=" ".join(a[2:]), failed=args.action == "fail")}
            status = 0 if rows["held"] else 1
        elif args.action == "settlements":
            rows = admin.settlements(a[0] if a else None)
        elif args.action == "reversals":
            rows = admin.reversals(a[0] if a else None)
        elif args.action == "events":
            rows = admin.events(a[0] if a else None)
        elif args.action == "session":
            rows = admin.session(a[0])
            status = 0 if rows is not None else 1
        elif args.action == "sign-offs":
            rows = {"tid": a[0], "sign_offs": admin.sign_offs(a[0])}
        elif args.action == "maintenance":
            mode = a[2] if len(a) > 2 else "96"
            if a[0] == "daily":
                admin.set_maintenance(mode=mode, daily=a[1])
                rows = {"maintenance": {"daily": a[1]}, "mode": mode}
            else:
                start, end = _when(a[0]), _when(a[1])
                admin.set_maintenance(start, end, mode)
                rows = {"maintenance": [start, end], "mode": mode}
        elif args.action == "clear-maintenance":
            admin.clear_maintenance()
            rows = {"maintenance": []}
        elif args.action == "min-firmware":
            admin.set_min_firmware(a[0])
            rows = {"min_firmware": a[0]}
        elif args.action == "merchant":
            admin.change_merchant(a[0], new_mid=a[1], new_name=" ".join(a[2:]) or None)
            rows = {"tid": a[0], "mid": a[1]}
        else:
            rows = {"credited": admin.run_funds(_when(a[0]) if a else None)}
    except (ValueError, KeyError) as exc:
        print(f"possim host admin {args.action}: {exc}", file=sys.stderr)
        return 2
    except IndexError:
        print(f"possim host admin {args.action}: missing arguments", file=sys.stderr)
        return 2
    finally:
        admin.close()
    if args.json:
        print(json.dumps(rows, default=str, ensure_ascii=False))
    else:
        for row in rows if isinstance(rows, list) else [rows]:
            if isinstance(row, dict):
                print("  ".join(f"{k}={_fmt(k, v)}" for k, v in row.items()))
            elif row is None:
                print("not found")
    return status


def _when(text: str) -> float:
    """A time given as ISO 8601, epoch seconds, or +SECONDS from now."""
    if text.startswith("+"):
        return time.time() + float(text[1:])
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def _fmt(key: str, value: Any) -> str:
    if key.endswith("_at") and isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


add_host_parser = register  # the name the CLI owner asked for; `terminal/cli.py` calls `register`
