"""`possim`: the command line (DESIGN.md "Command line" is the stable contract).

Each subcommand lives in its own module with a `register(subparsers)` function that adds its parser
and sets `handler`; this file only assembles them, so adding a command never touches the others.
Exit codes: 0 success, 1 the operation failed or was declined, 2 usage, 3 internal error,
4 link unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_LINK = 4

def output_file_problem(path: str) -> str | None:
    """Why a file cannot be written at `path` (None when it can), in words: for checking a report or ledger
    path before a run of minutes rather than losing the run to a typo, and for saying what SQLite's
    "unable to open database file" meant.

    It opens the file for appending, the way it will be written, so permissions, a read-only file system
    and the like all show; a file this check creates is removed again, an existing one is left as it was
    (appending nothing changes nothing)."""
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return "it is a directory"
    if not target.parent.is_dir():
        return f"directory {target.parent} does not exist"
    existed = target.exists()
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return str(exc.strerror or exc)
    if not existed:
        target.unlink()
    return None


#: Modules that provide subcommands, in the order `possim --help` lists them.
COMMAND_MODULES = (
    "terminal.commands.demo",
    "acquirer.cli",
    "terminal.commands.terminal",
    "terminal.commands.daemon",
    "terminal.commands.scenario",
    "terminal.commands.decode",
    "terminal.commands.vport",
    "terminal.commands.proxy",
    "terminal.commands.load",
    "terminal.commands.ctl",
    "firmware_sim.cli",
)


def _version() -> str:
    """The installed distribution's version (a bug report's first line), or "unknown" when run from a
    checkout that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("possim")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="possim",
        description="POS terminal simulator and sign-off daemon (ISO 8583, cup-pos dialect).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"possim {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet: the command is simply absent
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
