"""`possim scenario list | run NAME... | run --all [--junit FILE] [--seed N]`: the failure modes on demand."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import xml.etree.ElementTree as ET
from typing import Any

from ..cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, output_file_problem


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("scenario", help="reproduce failure modes FM-01..FM-18 (and your own)",
                                   description="List or run failure-mode scenarios against the built-in host.")
    sub = parser.add_subparsers(dest="scenario_command", metavar="list|run")
    listing = sub.add_parser("list", help="list the scenarios")
    listing.add_argument("--json", action="store_true", help="a JSON array of {name, title}")
    listing.set_defaults(handler=run_list)
    runner = sub.add_parser("run", help="run scenarios by name, or --all")
    runner.add_argument("names", nargs="*", metavar="NAME")
    runner.add_argument("--all", action="store_true", help="run every built-in scenario")
    runner.add_argument("--file", action="append", default=[], metavar="FILE",
                        help="a scenario file (TOML); repeatable")
    runner.add_argument("--seed", type=int, default=0, help="seed for every random choice (replayable runs)")
    runner.add_argument("--junit", metavar="FILE", help="write JUnit XML: one testcase per scenario")
    runner.add_argument("--no-remedy", action="store_true",
                        help="switch each scenario's remedy off (the scenarios should then fail)")
    runner.add_argument("--json", action="store_true", help="one JSON object per scenario")
    runner.add_argument("--quiet", action="store_true", help="only one line per scenario")
    runner.set_defaults(handler=run_run)
    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), EXIT_USAGE)[1])


def run_list(args: argparse.Namespace) -> int:
    from ..scenarios import REGISTRY

    items = [{"name": s.name, "title": s.title} for s in sorted(REGISTRY.values(), key=lambda s: s.name)]
    if args.json:
        print(json.dumps(items, ensure_ascii=False))
    else:
        for item in items:
            print(f"{item['name']}  {item['title']}")
    return EXIT_OK


def run_run(args: argparse.Namespace) -> int:
    from ..scenarios import REGISTRY
    from ..scenarios.files import ScenarioFileError, load_scenario_file

    try:
        for path in args.file:
            loaded = load_scenario_file(path)
            REGISTRY[loaded.name] = loaded
            args.names.append(loaded.name)
    except ScenarioFileError as exc:
        print(f"possim scenario run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = sorted(n for n in REGISTRY if n.startswith("FM-")) if args.all else args.names
    if args.all:
        names += [n for n in args.names if n not in names]
    if not names:
        print("possim scenario run: name scenarios or give --all", file=sys.stderr)
        return EXIT_USAGE
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"possim scenario run: unknown scenarios {unknown}; see possim scenario list", file=sys.stderr)
        return EXIT_USAGE
    if args.junit:
        problem = output_file_problem(args.junit)
        if problem:
            print(f"possim scenario run: --junit {args.junit}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    results = asyncio.run(_run_all(names, args))
    failed = [r for r in results if not r.passed]
    if not args.json:
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.junit:
        try:
            write_junit(results, args.junit)
        except OSError as exc:  # checked before the run, so only if the path changed since: the results are above
            print(f"possim scenario run: cannot write --junit {args.junit}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


async def _run_all(names: list[str], args: argparse.Namespace) -> list[Any]:
    from ..scenarios import REGISTRY, run_scenario

    results = []
    for name in names:
        sc = REGISTRY[name]
        if not args.json and not args.quiet:
            print(f"== {name}: {sc.title}", flush=True)

        def report(check: Any) -> None:
            if not args.json and not args.quiet:
                mark = "ok " if check.passed else "FAIL"
                print(f"   [{mark}] {check.what}: expected {check.expected!r}, saw {check.seen!r}", flush=True)

        result = await run_scenario(sc, seed=args.seed, remedy=not args.no_remedy, report=report)
        results.append(result)
        if args.json:
            record = {"name": name, "title": sc.title, "passed": result.passed, "seconds": round(result.seconds, 3),
                      "checks": len(result.checks), "error": result.error}
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            verdict = "PASSED" if result.passed else f"FAILED: {result.error.splitlines()[0] if result.error else ''}"
            print(f"{name} {verdict} ({len(result.checks)} checks, {result.seconds:.2f}s)", flush=True)
    return results


def write_junit(results: list[Any], path: str) -> None:
    suite = ET.Element("testsuite", name="possim-scenarios", tests=str(len(results)),
                       failures=str(sum(not r.passed for r in results)),
                       time=f"{sum(r.seconds for r in results):.3f}")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="possim.scenarios", name=result.name,
                             time=f"{result.seconds:.3f}")
        if not result.passed:
            failure = ET.SubElement(case, "failure", message=result.error.splitlines()[0] if result.error else "failed")
            failure.text = result.error
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"[{'ok' if c.passed else 'FAIL'}] {c.what}: expected {c.expected!r}, saw {c.seen!r}"
                             for c in result.checks)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
