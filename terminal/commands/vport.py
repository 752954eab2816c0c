"""`possim vport`: a virtual serial port pair; prints both device paths and stays until interrupted.

socat makes the pair when installed, a pure-Python raw pty bridge otherwise (or with `--no-socat`);
the backends live in `terminal.vport`.

`--link-dir DIR` adds stable symlinks DIR/possim-A and DIR/possim-B (printed instead of the pty paths).
On SIGTERM / SIGINT / SIGHUP the command removes what it created (symlinks, the socat child) and exits 0;
if socat dies under it, it cleans up and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from ..cli import EXIT_FAILED, EXIT_OK
from ..vport import SocatPair, open_pair, socat_available


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("vport", help="create a virtual serial port pair (prints both paths)",
                                   description="Create two connected pseudo-terminals (socat when present, a "
                                               "pure-Python bridge otherwise), print their paths one per line, "
                                               "and keep them until SIGTERM / SIGINT; then remove them.")
    parser.add_argument("--link-dir", metavar="DIR",
                        help="also create stable symlinks DIR/possim-A and DIR/possim-B (printed instead)")
    parser.add_argument("--no-socat", action="store_true", help="use the pure-Python bridge even if socat exists")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"devices": [A, B], "ptys": [...], "backend": ...} instead')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        pair = await open_pair(use_socat=socat_available() and not args.no_socat, link_dir=args.link_dir)
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"possim vport: cannot create the pair: {exc}", file=sys.stderr)
        return EXIT_FAILED
    backend = "socat" if isinstance(pair, SocatPair) else "bridge"
    if args.json:
        print(json.dumps({"devices": pair.devices, "ptys": list(pair.paths), "backend": backend}), flush=True)
    else:
        print(pair.devices[0])
        print(pair.devices[1], flush=True)
    code = EXIT_OK
    try:
        waiters = [asyncio.create_task(stop.wait())]
        if isinstance(pair, SocatPair):
            waiters.append(asyncio.create_task(pair.wait()))
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not stop.is_set():
            print("possim vport: socat exited; the pair is gone", file=sys.stderr)
            code = EXIT_FAILED
    finally:
        await pair.aclose()
    return code
