"""`possim ctl`: talk to a running daemon's control API (address and token from the fleet file).

    possim ctl [--config fleet.toml | --url URL --token T] [--json] ACTION [ARGS]
      status [TID ...]            the fleet (or some terminals): state, battery, paper, link, pending work
      sale TID AMOUNT             AMOUNT in yuan, e.g. 12.34
      void TID STAN | refund TID STAN AMOUNT | balance TID
      settle TID | sign-in TID | echo TID | diagnostics TID
      sign-off [TID ...]          batch sign-off (settling first where there is business), per-terminal report
      reprint TID [STAN]
      fault TID SPEC [SPEC ...]   run-time faults, SPEC one of:
          link-down | link-up | clear | load-paper | clear-jam
          DEVICE.POINT[=N|=always|=pP]   printer.out_of_paper=2, reader.read_error=p0.3 (default: always)
          ACTION:MTI[:ARG][xN]           drop:0830, delay:0510:20, override_rc:0830:96, corrupt_mac:0210x1
          maintenance[=DURATION]         the in-process host refuses with 96 for DURATION (default 1h)
          FILE.toml                      a fault plan file (device / message / link / host tables)
      faults TID | clear-faults TID
      reminders | metrics

Exit codes: 0 done, 1 the operation failed or was declined, 2 usage (bad arguments, unknown terminal,
token refused), 4 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import EXIT_FAILED, EXIT_LINK, EXIT_OK, EXIT_USAGE

MESSAGE_ACTIONS = ("drop", "delay", "duplicate", "corrupt_mac", "corrupt_data", "override_rc", "garbage")


class Usage(ValueError):
    pass


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ctl", help="control a running sign-off daemon",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="fleet TOML (gives the control address and token)")
    parser.add_argument("--url", help="control URL, e.g. http://127.0.0.1:8750")
    parser.add_argument("--token", help="control token (default: the fleet file's, or $POSSIM_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for an answer (900)")
    parser.add_argument("action")
    parser.add_argument("args", nargs="*")
    parser.set_defaults(handler=run)


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    import os

    url, token = args.url, args.token
    if args.config:
        from ..daemon import FleetConfig

        fleet = FleetConfig.load(args.config)
        url = url or fleet.control_url
        token = token or fleet.token
    token = token or os.environ.get("POSSIM_TOKEN")
    if not url or not token:
        raise Usage("give --config FLEET.toml, or --url and --token")
    return url.rstrip("/"), token


def fault_plan(specs: list[str]) -> dict[str, Any]:
    """The API body for `possim ctl fault TID SPEC...` (see the module doc)."""
    from ..daemon.config import FleetConfigError, parse_duration

    body: dict[str, Any] = {"device": [], "message": [], "link": [], "host": []}
    for spec in specs:
        if spec.endswith(".toml"):
            import tomllib

            try:
                data = tomllib.loads(Path(spec).read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise Usage(f"fault plan {spec}: {exc}") from None
            data = data.get("faults", data)
            for layer in ("device", "message", "link", "host"):
                body[layer].extend(data.get(layer, []))
            if "seed" in data:
                body["seed"] = data["seed"]
        elif spec in ("link-down", "link-up"):
            body["link_down"] = spec == "link-down"
        elif spec == "clear":
            body["clear"] = True
        elif spec in ("load-paper", "clear-jam"):
            body[spec.replace("-", "_")] = True
        elif spec.split("=")[0] == "maintenance":
            try:
                seconds = parse_duration(spec.partition("=")[2] or "1h", key=spec)
            except FleetConfigError as exc:
                raise Usage(str(exc)) from None
            body["host"].append({"action": "maintenance", "seconds": seconds})
        elif ":" in spec:
            body["message"].append(_message_fault(spec))
        elif "." in spec:
            point, _, how = spec.partition("=")
            entry: dict[str, Any] = {"point": point}
            if how in ("", "always"):
                entry["always"] = True
            elif how.isdigit():
                entry["count"] = int(how)
            elif how.startswith("p"):
                try:
                    entry["probability"] = float(how[1:])
                except ValueError:
                    raise Usage(f"{spec}: a probability is written p0.3") from None
            else:
                raise Usage(f"{spec}: expected POINT, POINT=N, POINT=always or POINT=pP")
            body["device"].append(entry)
        else:
            raise Usage(f"unknown fault {spec!r}: see possim ctl --help")
    return {k: v for k, v in body.items() if v != []}


def _message_fault(spec: str) -> dict[str, Any]:
    text, count = spec, None
    if "x" in spec.rsplit(":", 1)[-1]:
        text, _, number = spec.rpartition("x")
        if not number.isdigit():
            raise Usage(f"{spec}: the count is written xN, e.g. drop:0830x1")
        count = int(number)
    action, mti, *rest = text.split(":")
    if action not in MESSAGE_ACTIONS:
        raise Usage(f"{spec}: unknown message action {action!r}; actions: {', '.join(MESSAGE_ACTIONS)}")
    if not (len(mti) == 4 and mti.isdigit()):
        raise Usage(f"{spec}: {mti!r} is not an MTI like 0830")
    # replies (x1x0 / x3x0: 0210, 0410, 0510, 0830 ...) arrive at the terminal; requests leave it
    entry: dict[str, Any] = {"action": action, "mti": mti, "direction": "rx" if int(mti[2]) % 2 else "tx"}
    if rest:
        if action == "delay":
            from ..daemon.config import FleetConfigError, parse_duration

            try:
                entry["delay"] = parse_duration(rest[0], key=spec)
            except FleetConfigError as exc:
                raise Usage(str(exc)) from None
        elif action == "override_rc":
            entry["rc"] = rest[0]
        else:
            raise Usage(f"{spec}: {action} takes no argument")
    if count is not None:
        entry["count"] = count
    return entry


def request_for(action: str, a: list[str]) -> tuple[str, str, Any]:
    """(method, path, body) of a ctl action; Usage when the arguments do not fit."""
    def need(n: int, usage: str) -> None:
        if len(a) != n:
            raise Usage(f"usage: possim ctl {action} {usage}")

    if action == "status":
        return "GET", "/status", None
    if action == "sale":
        need(2, "TID AMOUNT")
        return "POST", f"/terminals/{a[0]}/sale", {"amount": a[1]}
    if action == "void":
        need(2, "TID STAN")
        return "POST", f"/terminals/{a[0]}/void", {"stan": a[1]}
    if action == "refund":
        need(3, "TID STAN AMOUNT")
        return "POST", f"/terminals/{a[0]}/refund", {"stan": a[1], "amount": a[2]}
    if action in ("settle", "sign-in", "echo", "balance", "diagnostics"):
        need(1, "TID")
        return "POST", f"/terminals/{a[0]}/{action}", None
    if action == "sign-off":
        return "POST", "/sign-off", {"tids": a or None}
    if action == "reprint":
        if len(a) not in (1, 2):
            raise Usage("usage: possim ctl reprint TID [STAN]")
        return "POST", f"/terminals/{a[0]}/reprint", {"stan": a[1] if len(a) > 1 else None}
    if action == "fault":
        if len(a) < 2:
            raise Usage("usage: possim ctl fault TID SPEC [SPEC ...]")
        return "POST", f"/terminals/{a[0]}/faults", fault_plan(a[1:])
    if action in ("faults", "clear-faults"):
        need(1, "TID")
        return ("GET" if action == "faults" else "DELETE"), f"/terminals/{a[0]}/faults", None
    if action in ("reminders", "metrics"):
        need(0, "")
        return "GET", f"/{action}", None
    raise Usage(f"unknown action {action!r}: status, sale, void, refund, balance, settle, sign-in, sign-off, "
                "echo, diagnostics, reprint, fault, faults, clear-faults, reminders, metrics")


async def call(url: str, token: str, method: str, path: str, body: Any = None, *,
               timeout: float = 900.0) -> tuple[int, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.request(method, url + path, json=body, headers=headers) as response:
        text = await response.text()
        status = response.status
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def run(args: argparse.Namespace) -> int:
    from ..daemon import FleetConfigError

    try:
        url, token = _endpoint(args)
        method, path, body = request_for(args.action, args.args)
    except (Usage, FleetConfigError) as exc:
        print(f"possim ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import aiohttp

    try:
        status, out = asyncio.run(call(url, token, method, path, body, timeout=args.timeout))
    except TimeoutError:
        # the daemon took the request and has not answered yet: the operation may still complete there
        print(f"possim ctl: no answer from the daemon at {url} within {args.timeout:g}s; the {args.action} may "
              f"still complete there (see `possim ctl status`)", file=sys.stderr)
        return EXIT_FAILED
    except (aiohttp.ClientError, OSError) as exc:
        print(f"possim ctl: cannot reach the daemon at {url}: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_LINK
    if status in (400, 401, 404):
        print(f"possim ctl: {out if isinstance(out, str) else json.dumps(out)}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "status" and args.args and isinstance(out, list):
        out = [row for row in out if row.get("tid") in args.args]
    if args.json or args.action == "metrics" or not isinstance(out, list | dict):
        print(out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, default=str))
    else:
        _print_human(args.action, out)
    return EXIT_OK if status < 300 else EXIT_FAILED


def _paper(paper: Any) -> str:
    if not isinstance(paper, dict):
        return str(paper)
    for key, word in (("jammed", "jammed"), ("out_of_paper", "out"), ("paper_low", "low")):
        if paper.get(key):
            return word
    return "ok"


def _print_human(action: str, out: Any) -> None:
    if isinstance(out, list):  # status
        for row in out:
            work = row.get("pending_work") or {}
            owed = work.get("owed")
            print(f"{row.get('tid')}  {row.get('state', '?'):<12} battery={row.get('battery')}% "
                  f"paper={_paper(row.get('paper'))} link={row.get('link')} batch={row.get('batch')} "
                  f"unsettled={work.get('unsettled')} reversals={work.get('reversals')} "
                  f"intents={','.join(work.get('intents') or []) or '-'} last_sign_in={row.get('last_sign_in')}"
                  + (f" retrying={owed['work']}#{owed['attempts']}" if owed else ""))
    elif action == "sign-off":
        for tid, row in sorted(out.items()):
            print(f"{tid}  {'closed' if row['ok'] else 'retrying' if row.get('retrying') else 'FAILED':<8} "
                  f"{row.get('state')}  {row.get('message')}")
    elif "op" in out:
        line = f"{out['op']}: {'ok' if out['ok'] else 'FAILED'}"
        for key in ("rc", "stan", "batch", "amount"):
            if out.get(key) is not None:
                line += f" {key}={out[key]}"
        print(f"{line}  {out.get('message', '')}")
        if out.get("receipt"):
            print(out["receipt"])
    else:
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
