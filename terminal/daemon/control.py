"""The daemon's control interface: a local HTTP API (aiohttp), loopback by default, token required.

Documented in docs/control-api.yaml (OpenAPI 3). Every call needs `Authorization: Bearer <token>` (401
otherwise). Operations answer the terminal's OpResult as JSON: 200 when it succeeded, 409 when it failed
or was declined (the body says why), 400 for a bad request, 404 for an unknown terminal.
"""

from __future__ import annotations

import hmac
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from ..faultplan import FaultPlan, FaultPlanError

OPERATIONS = ("sale", "void", "refund", "balance", "settle", "sign-off", "sign-in", "reprint", "echo", "diagnostics")


def _amount(value: Any) -> int:
    """Yuan with at most two decimals ("12.34", 12.34) -> fen."""
    if value is None or isinstance(value, bool):
        raise web.HTTPBadRequest(text="amount is required, in yuan like \"12.34\"")
    try:
        fen = Decimal(str(value)) * 100
    except InvalidOperation:
        raise web.HTTPBadRequest(text=f"amount {value!r} is not a number like 12.34") from None
    if not fen.is_finite() or fen <= 0 or fen != fen.to_integral_value():
        raise web.HTTPBadRequest(text=f"amount {value!r} must be positive with at most two decimals")
    return int(fen)


def _stan(value: Any, *, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            raise web.HTTPBadRequest(text="stan is required (the trace number of the original transaction)")
        return None
    text = str(value)
    if not text.isdigit() or len(text) > 6:
        raise web.HTTPBadRequest(text=f"stan {value!r} must be up to 6 digits")
    return text.zfill(6)


def _dumps(value: Any) -> str:
    """Terminal results and receipts are masked at the source; the plan echoed back is masked here."""
    return json.dumps(value, default=str, ensure_ascii=False)


def build_app(daemon: Any) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {daemon.config.token}".encode()):
            raise web.HTTPUnauthorized(text="a valid bearer token is required",
                                       headers={"WWW-Authenticate": 'Bearer realm="possim"'})
        return await handler(request)

    def supervisor(request: web.Request) -> Any:
        tid = request.match_info["tid"]
        if tid not in daemon.supervisors:
            raise web.HTTPNotFound(text=f"no terminal {tid} in this fleet")
        return daemon.supervisors[tid]

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return data

    async def status(request: web.Request) -> web.Response:
        return web.json_response(daemon.status(), dumps=_dumps)

    async def one_status(request: web.Request) -> web.Response:
        return web.json_response(supervisor(request).status(), dumps=_dumps)

    async def operate(request: web.Request) -> web.Response:
        sup = supervisor(request)
        op = request.match_info["op"]
        if op not in OPERATIONS:
            raise web.HTTPNotFound(text=f"unknown operation {op!r}; operations: {', '.join(OPERATIONS)}")
        data = await body(request)
        term = sup.terminal
        card, method = data.get("card"), str(data.get("method") or "swipe")
        calls = {
            "sale": lambda: term.sale(_amount(data.get("amount")), card=card, method=method, pin=data.get("pin")),
            "balance": lambda: term.balance(card=card, method=method, pin=data.get("pin")),
            "void": lambda: term.void(_stan(data.get("stan"), required=True)),
            "refund": lambda: term.refund(_stan(data.get("stan"), required=True), _amount(data.get("amount"))),
            "settle": term.settle, "sign-off": term.sign_off, "sign-in": term.sign_in, "echo": term.echo,
            "diagnostics": term.diagnostics,
            "reprint": lambda: term.reprint(_stan(data.get("stan"), required=False)),
        }
        if card is not None:
            from ..hardware.cards import named_card

            try:
                named_card(str(card))
            except KeyError as exc:
                raise web.HTTPBadRequest(text=str(exc.args[0])) from None
        if op in ("sale", "refund"):
            _amount(data.get("amount"))  # a bad amount is a 400 before the terminal is touched
        if op in ("void", "refund"):
            _stan(data.get("stan"), required=True)
        result = await sup.run_op(op, calls[op])
        return web.json_response(result.as_json(), status=200 if result.ok else 409, dumps=_dumps)

    async def batch_sign_off(request: web.Request) -> web.Response:
        data = await body(request)
        tids = data.get("tids")
        if tids is not None and (not isinstance(tids, list) or not all(isinstance(t, str) for t in tids)):
            raise web.HTTPBadRequest(text="tids must be a list of terminal ids")
        report = await daemon.sign_off_all(tids or None)
        return web.json_response(report, status=200 if all(r["ok"] for r in report.values()) else 207, dumps=_dumps)

    def host_admin() -> Any:
        return daemon.host.admin if daemon.host is not None else None

    async def faults(request: web.Request) -> web.Response:
        sup = supervisor(request)
        term = sup.terminal
        if request.method == "DELETE":
            FaultPlan(host=[]).clear(term)
            if host_admin() is not None and request.query.get("host") == "1":
                host_admin().clear_maintenance()
            daemon.event("faults_cleared", sup)
        elif request.method == "POST":
            data = dict(await body(request))
            link_down, clear = data.pop("link_down", None), data.pop("clear", False)
            remedies = {key: bool(data.pop(key, False)) for key in ("load_paper", "clear_jam")}
            try:
                plan = FaultPlan.from_mapping(data, source="request")
                if plan.host and host_admin() is None:
                    raise FaultPlanError("request: host actions need the in-process host ([host] in the fleet file)")
                await sup.apply_faults(plan, host_admin=host_admin(), link_down=link_down, clear=bool(clear),
                                      **remedies)
            except (FaultPlanError, ValueError) as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
            daemon.event("faults_applied", sup, plan=data, link_down=link_down, **remedies)
        channel = term.channel
        return web.json_response({
            "tid": term.tid, "link_down": channel.link_down, "armed": term.hw.describe_faults(),
            "message": [rule.describe() for rule in getattr(channel.faults, "rules", [])] if channel.faults else [],
        }, dumps=_dumps)

    async def reminders(request: web.Request) -> web.Response:
        return web.json_response({"history": daemon.reminders, "now": daemon.reminder_report()}, dumps=_dumps)

    async def metrics(request: web.Request) -> web.Response:
        states = [s.terminal.state for s in daemon.supervisors.values()]
        return web.Response(body=daemon.metrics.render(states), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application(middlewares=[auth])
    app.add_routes([
        web.get("/status", status),
        web.get("/terminals/{tid}", one_status),
        web.get("/terminals/{tid}/faults", faults),
        web.post("/terminals/{tid}/faults", faults),
        web.delete("/terminals/{tid}/faults", faults),
        web.post("/terminals/{tid}/{op}", operate),
        web.post("/sign-off", batch_sign_off),
        web.get("/reminders", reminders),
        web.get("/metrics", metrics),
    ])
    return app


async def start_control(daemon: Any) -> tuple[web.AppRunner, str]:
    """Listen on the fleet's control address; returns the runner (to clean up) and the URL."""
    runner = web.AppRunner(build_app(daemon), access_log=None, shutdown_timeout=daemon.config.shutdown_grace)
    await runner.setup()
    host, port = daemon.config.control_host, daemon.config.control_port
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1] if runner.addresses else port
    return runner, f"http://{'[' + host + ']' if ':' in host else host}:{port}"
