"""`possim daemon --config fleet.toml [--idle-threshold 3s]`: run the sign-off daemon.

Prints the control API's URL on stdout once everything is up, then logs one JSON line per event on
stderr (and in `[daemon] log_file`). SIGTERM / SIGINT: finish the work in flight, exit 0. SIGHUP: re-read
the fleet file (terminals added / removed, the others untouched; a bad file is refused and the running
fleet kept). Under systemd with Type=notify it reports READY=1, RELOADING=1 and STOPPING=1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import Any

from ..cli import EXIT_INTERNAL, EXIT_LINK, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("daemon", help="run the sign-off daemon for a fleet",
                                   description="Keep a fleet signed in by day and closed by night: idle auto "
                                               "sign-off, scheduled day end, reminders, retries through outages. "
                                               "SIGTERM/SIGINT stop cleanly; SIGHUP reloads the fleet file.")
    parser.add_argument("--config", required=True, help="fleet TOML (see examples/fleet.toml)")
    parser.add_argument("--idle-threshold", help="override every terminal's idle threshold (3s, 90m, 2h)")
    parser.add_argument("--control", help="override the control address (host:port; port 0 picks one)")
    parser.set_defaults(handler=run)


def _load(args: argparse.Namespace) -> Any:
    from ..daemon import FleetConfig, FleetConfigError, parse_duration

    config = FleetConfig.load(args.config)
    if args.idle_threshold:
        config.with_idle_threshold(parse_duration(args.idle_threshold, key="--idle-threshold"))
    if args.control:
        host, _, port = args.control.rpartition(":")
        if not host or not port.isdigit():
            raise FleetConfigError(f"--control: expected host:port, got {args.control!r}")
        config.control = args.control
    return config


def sd_notify(state: str) -> None:
    """systemd's readiness protocol (Type=notify): a datagram to $NOTIFY_SOCKET; nothing without it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), path)
    except OSError:
        pass


def run(args: argparse.Namespace) -> int:
    from ..daemon import FleetConfigError, events

    try:
        config = _load(args)
    except FleetConfigError as exc:
        print(f"possim daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        handlers = events.configure(config.log_file, stream=sys.stderr)
    except OSError as exc:
        print(f"possim daemon: daemon.log_file: cannot open {config.log_file}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(config, args))
    finally:
        for handler in handlers:
            events.log.removeHandler(handler)
            handler.close()


async def _run(config: Any, args: argparse.Namespace) -> int:
    from ..daemon import FleetConfigError, SignOffDaemon

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    daemon = SignOffDaemon(config)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        async def go() -> None:
            sd_notify("RELOADING=1")
            try:
                await daemon.reload(_load(args))
            except FleetConfigError as exc:
                daemon.event("reload_refused", None, error=str(exc))
                print(f"possim daemon: reload refused, keeping the running fleet: {exc}", file=sys.stderr)
            finally:
                sd_notify("READY=1")

        task = asyncio.ensure_future(go())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        # the control API first: a busy port then ends the start before any terminal has signed in
        url = await daemon.start_control()
        await daemon.start()
    except OSError as exc:
        print(f"possim daemon: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        await daemon.stop()
        return EXIT_LINK
    except Exception as exc:  # a host configuration the loader accepted but the host refused, say
        print(f"possim daemon: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        await daemon.stop()
        return EXIT_INTERNAL
    print(url, flush=True)
    sd_notify("READY=1")
    try:
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        for task in list(reloads):
            await task
        await daemon.stop()
    return EXIT_OK
