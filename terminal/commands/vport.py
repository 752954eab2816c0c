"""`possim vport`: a virtual serial port pair; prints both device paths and stays until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from ..cli import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("vport", help="create a virtual serial port pair (prints both paths)",
                                   description="Create two connected pseudo-terminals (socat when present, a "
                                               "pure-Python bridge otherwise), print their paths one per line, "
                                               "and keep them until SIGTERM / SIGINT.")
    parser.add_argument("--link-dir", help="also create stable symlinks possim-A and possim-B in this directory")
    parser.add_argument("--no-socat", action="store_true", help="use the pure-Python bridge even if socat exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from ..vport import PtyBridge, SocatPair, socat_available

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pair: Any
    if socat_available() and not args.no_socat:
        pair = await SocatPair().start(args.link_dir)
    else:
        pair = PtyBridge().start(args.link_dir)
    shown = [str(link) for link in pair.links] or list(pair.paths)
    print(shown[0])
    print(shown[1], flush=True)
    try:
        await stop.wait()
    finally:
        closing = pair.close()
        if asyncio.iscoroutine(closing):
            await closing
    return EXIT_OK
