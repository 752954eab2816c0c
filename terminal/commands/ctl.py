"""`possim ctl`: talk to a running daemon's control API (address and token from the fleet file)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from ..cli import EXIT_FAILED, EXIT_LINK, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ctl", help="control a running sign-off daemon",
                                   description="status | sale TID AMOUNT | settle TID | sign-off [TID ...] | "
                                               "reprint TID [STAN] | fault TID FAULTS.toml | clear-faults TID | "
                                               "reminders | metrics")
    parser.add_argument("--config", help="fleet TOML (gives the control address and token)")
    parser.add_argument("--url", help="control URL, e.g. http://127.0.0.1:8750")
    parser.add_argument("--token", help="control token")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("action")
    parser.add_argument("args", nargs="*")
    parser.set_defaults(handler=run)


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    url, token = args.url, args.token
    if args.config:
        from ..daemon import FleetConfig

        fleet = FleetConfig.load(args.config)
        url = url or f"http://{fleet.control}"
        token = token or fleet.token
    if not url or not token:
        raise ValueError("give --config FLEET.toml, or --url and --token")
    return url.rstrip("/"), token


def call(url: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def run(args: argparse.Namespace) -> int:
    try:
        url, token = _endpoint(args)
    except ValueError as exc:
        print(f"possim ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    a, action = args.args, args.action
    try:
        if action == "status":
            status, out = call(url, token, "GET", "/status")
        elif action == "sale" and len(a) == 2:
            status, out = call(url, token, "POST", f"/terminals/{a[0]}/sale", {"amount": a[1]})
        elif action in ("settle", "sign-in", "echo") and len(a) == 1:
            status, out = call(url, token, "POST", f"/terminals/{a[0]}/{action}")
        elif action == "sign-off":
            status, out = call(url, token, "POST", "/sign-off", {"tids": a or None})
        elif action == "reprint" and a:
            status, out = call(url, token, "POST", f"/terminals/{a[0]}/reprint", {"stan": a[1] if len(a) > 1 else None})
        elif action == "fault" and len(a) == 2:
            import tomllib

            with open(a[1], "rb") as handle:
                plan = tomllib.load(handle)
            status, out = call(url, token, "POST", f"/terminals/{a[0]}/faults", plan)
        elif action == "clear-faults" and len(a) == 1:
            status, out = call(url, token, "DELETE", f"/terminals/{a[0]}/faults")
        elif action in ("reminders", "metrics"):
            status, out = call(url, token, "GET", f"/{action}")
        else:
            print(f"possim ctl: bad command {action} {' '.join(a)}", file=sys.stderr)
            return EXIT_USAGE
    except (urllib.error.URLError, OSError) as exc:
        print(f"possim ctl: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return EXIT_LINK
    if args.json or not isinstance(out, list):
        print(out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, default=str))
    else:
        for row in out:
            print(f"{row.get('tid')}  {row.get('state'):<12} battery={row.get('battery')} batch={row.get('batch')} "
                  f"reversals={row.get('pending_reversals')} intents={row.get('open_intents')}")
    return EXIT_OK if status < 400 else EXIT_FAILED
