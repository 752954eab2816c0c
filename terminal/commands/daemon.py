"""`possim daemon --config fleet.toml [--idle-threshold 3s]`: run the sign-off daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from ..cli import EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("daemon", help="run the sign-off daemon for a fleet",
                                   description="Keep a fleet signed in by day and closed by night: idle auto "
                                               "sign-off, scheduled day end, reminders, retries through outages. "
                                               "SIGTERM/SIGINT stop cleanly; SIGHUP reloads the fleet file.")
    parser.add_argument("--config", required=True, help="fleet TOML")
    parser.add_argument("--idle-threshold", help="override every terminal's idle threshold (3s, 90m, 2h)")
    parser.set_defaults(handler=run)


def _load(args: argparse.Namespace) -> Any:
    from ..daemon import FleetConfig, parse_duration

    config = FleetConfig.load(args.config)
    if args.idle_threshold:
        idle = parse_duration(args.idle_threshold, key="--idle-threshold")
        config.idle_threshold = idle
        config.terminals = [t.with_overrides(idle_sign_off=idle) for t in config.terminals]
    return config


def run(args: argparse.Namespace) -> int:
    import logging

    from ..daemon import FleetConfigError

    # the daemon's log is one JSON line per event: on by default, unlike the interactive commands
    logging.getLogger("possim.daemon").setLevel(logging.INFO)

    try:
        config = _load(args)
    except FleetConfigError as exc:
        print(f"possim daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_run(config, args))


async def _run(config: Any, args: argparse.Namespace) -> int:
    from ..daemon import FleetConfigError, SignOffDaemon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    daemon = SignOffDaemon(config)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def go() -> None:
            try:
                await daemon.reload(_load(args))
            except FleetConfigError as exc:
                print(f"possim daemon: reload refused, keeping the running fleet: {exc}", file=sys.stderr)

        task = asyncio.ensure_future(go())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    async with daemon:
        url = await daemon.start_control()
        print(url, flush=True)
        await stop.wait()
    return EXIT_OK
