"""`possim host`: serve the reference acquirer host; `possim host admin ...`: inspect and change it."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
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
    parser.add_argument("--trace", help="write a hex + decoded trace of every frame (card numbers masked)")
    parser.set_defaults(handler=run_host)
    sub = parser.add_subparsers(dest="host_command", metavar="admin")
    admin = sub.add_parser("admin", help="inspect or change a host's ledger and policy")
    admin.add_argument("--db", dest="admin_db", default="host.sqlite", help="ledger file (SQLite)")
    admin.add_argument("--config", dest="admin_config", help="host TOML (needed for merchant data)")
    admin.add_argument("--json", action="store_true")
    admin.add_argument("action", choices=("ledger", "funds", "query", "release", "settlements", "sign-offs",
                                          "maintenance", "clear-maintenance", "min-firmware", "merchant",
                                          "run-funds"))
    admin.add_argument("args", nargs="*", help="ledger [TID] | funds MID | query MID STAN | release MID STAN | "
                                               "settlements [TID] | sign-offs TID | maintenance START END [96|refuse] "
                                               "| clear-maintenance | min-firmware VERSION | merchant TID MID [NAME] "
                                               "| run-funds [WHEN]  (times: ISO 8601, epoch seconds or +SECONDS)")
    admin.set_defaults(handler=run_admin)


def _build_config(args: argparse.Namespace) -> HostConfig:
    config = HostConfig.load(args.config) if args.config else HostConfig()
    config.add_terminal_specs(args.terminal)
    if args.terminals_csv:
        config.add_terminals_csv(args.terminals_csv)
    if args.min_firmware:
        config.min_firmware = args.min_firmware
    return config


def run_host(args: argparse.Namespace) -> int:
    if not args.listen:
        print("possim host: give at least one --listen URL (e.g. tcp://127.0.0.1:5800)", file=sys.stderr)
        return 2
    try:
        config = _build_config(args)
    except HostConfigError as exc:
        print(f"possim host: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args))


async def _serve(config: HostConfig, args: argparse.Namespace) -> int:
    from terminal.links import LinkUnavailable

    from .host import HostServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with HostServer(config, args.db) as server:
        tracer = None
        if args.trace:
            from terminal.trace import FrameTracer

            tracer = FrameTracer.open(args.trace)
            server.trace = tracer
        for url in args.listen:
            try:
                bound = await server.listen(url)
            except (LinkUnavailable, ValueError) as exc:
                print(f"possim host: {exc}", file=sys.stderr)
                return 4
            print(bound, flush=True)
        await stop.wait()
        if tracer is not None:
            tracer.close()
    return 0


def run_admin(args: argparse.Namespace) -> int:
    from .host import HostServer

    config = HostConfig.load(args.admin_config) if args.admin_config else HostConfig()
    server = HostServer(config, args.admin_db)
    admin = server.admin
    a = args.args
    try:
        if args.action == "ledger":
            rows: Any = admin.transactions(a[0] if a else None)
        elif args.action == "funds":
            rows = admin.funds_report(a[0])
        elif args.action == "query":
            rows = admin.query_funds(a[0], stan=a[1].zfill(6))
        elif args.action == "release":
            if a[0] not in config.merchants:
                print("possim host admin: release needs --config with the merchant", file=sys.stderr)
                return 2
            rows = {"released": admin.release(a[0], stan=a[1].zfill(6))}
        elif args.action == "settlements":
            rows = admin.settlements(a[0] if a else None)
        elif args.action == "sign-offs":
            rows = {"tid": a[0], "sign_offs": admin.sign_offs(a[0])}
        elif args.action == "maintenance":
            start, end = _when(a[0]), _when(a[1])
            admin.set_maintenance(start, end, a[2] if len(a) > 2 else "96")
            rows = {"maintenance": [start, end], "mode": a[2] if len(a) > 2 else "96"}
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
        server.ledger.close()
    if args.json:
        print(json.dumps(rows, default=str, ensure_ascii=False))
    else:
        for row in rows if isinstance(rows, list) else [rows]:
            if isinstance(row, dict):
                print("  ".join(f"{k}={_fmt(k, v)}" for k, v in row.items()))
    return 0


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
