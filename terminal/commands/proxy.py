"""`possim proxy --listen URL --upstream URL [--faults FILE]`: the ISO 8583-aware chaos proxy."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from ..cli import EXIT_LINK, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("proxy", help="man-in-the-middle that injects message and link faults",
                                   description="Forward terminals to an upstream host, decoding cup-pos frames and "
                                               "applying the fault plan's message rules and link toxics. SIGHUP "
                                               "re-reads the faults file.")
    parser.add_argument("--listen", action="append", required=True, metavar="URL")
    parser.add_argument("--upstream", required=True, metavar="URL", help="the host to forward to")
    parser.add_argument("--faults", metavar="FILE", help="fault plan (TOML): [[message]] rules, [[link]] toxics")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..faultplan import FaultPlan, FaultPlanError
    from ..proxy import check_plan

    try:
        plan = FaultPlan.from_toml(args.faults) if args.faults else FaultPlan()
        check_plan(plan)
    except FaultPlanError as exc:
        print(f"possim proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(args, plan))


async def _serve(args: argparse.Namespace, plan: Any) -> int:
    from ..faultplan import FaultPlan, FaultPlanError
    from ..links import LinkUnavailable
    from ..proxy import ChaosProxy

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    proxy = ChaosProxy(args.upstream)
    proxy.load_plan(plan)

    def reload() -> None:
        try:
            proxy.load_plan(FaultPlan.from_toml(args.faults))
            print("possim proxy: faults reloaded", file=sys.stderr, flush=True)
        except FaultPlanError as exc:
            print(f"possim proxy: reload failed, keeping the old faults: {exc}", file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.faults:
        loop.add_signal_handler(signal.SIGHUP, reload)
    async with proxy:
        for url in args.listen:
            try:
                print(await proxy.listen(url), flush=True)
            except (LinkUnavailable, ValueError) as exc:
                print(f"possim proxy: {exc}", file=sys.stderr)
                return EXIT_LINK
        await stop.wait()
    return EXIT_OK
