"""The daemon's control interface: a local HTTP API (aiohttp), loopback by default, token required.

Documented in docs/control-api.yaml (OpenAPI 3). Every call needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from ..faultplan import FaultPlan, FaultPlanError


def _amount(value: Any) -> int:
    try:
        fen = Decimal(str(value)) * 100
    except InvalidOperation:
        raise web.HTTPBadRequest(text=f"amount {value!r} is not a number like 12.34") from None
    if fen <= 0 or fen != fen.to_integral_value():
        raise web.HTTPBadRequest(text=f"amount {value!r} must be positive with at most two decimals")
    return int(fen)


def build_app(daemon: Any) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {daemon.config.token}":
            raise web.HTTPUnauthorized(text="a valid bearer token is required")
        return await handler(request)

    def supervisor(request: web.Request) -> Any:
        tid = request.match_info["tid"]
        if tid not in daemon.supervisors:
            raise web.HTTPNotFound(text=f"no terminal {tid}")
        return daemon.supervisors[tid]

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return data

    async def status(request: web.Request) -> web.Response:
        return web.json_response(daemon.status(), dumps=_dumps)

    async def operate(request: web.Request) -> web.Response:
        sup = supervisor(request)
        op = request.match_info["op"]
        data = await body(request)
        term = sup.terminal
        if op == "sale":
            result = await sup.run_op("sale", lambda: term.sale(_amount(data.get("amount")), card=data.get("card")))
        elif op == "settle":
            result = await sup.run_op("settle", term.settle)
        elif op == "sign-off":
            result = await sup.run_op("sign_off", term.sign_off)
        elif op == "sign-in":
            result = await sup.run_op("sign_in", term.sign_in)
        elif op == "reprint":
            stan = data.get("stan")
            result = await sup.run_op("reprint", lambda: term.reprint(str(stan).zfill(6) if stan else None))
        elif op == "echo":
            result = await sup.run_op("echo", term.echo)
        else:
            raise web.HTTPNotFound(text=f"unknown operation {op!r}")
        return web.json_response(result.as_json(), status=200 if result.ok else 409, dumps=_dumps)

    async def batch_sign_off(request: web.Request) -> web.Response:
        data = await body(request)
        return web.json_response(await daemon.sign_off_all(data.get("tids")), dumps=_dumps)

    async def faults(request: web.Request) -> web.Response:
        sup = supervisor(request)
        if request.method == "DELETE":
            FaultPlan().clear(sup.terminal, host_admin=daemon.host.admin if daemon.host else None)
            return web.json_response({"cleared": True})
        try:
            plan = FaultPlan.from_mapping(await body(request), source="request")
            plan.apply(sup.terminal, host_admin=daemon.host.admin if daemon.host else None)
        except FaultPlanError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"applied": True, "armed": sup.terminal.hw.describe_faults()}, dumps=_dumps)

    async def reminders(request: web.Request) -> web.Response:
        return web.json_response({"history": daemon.reminders, "now": daemon.reminder_report()}, dumps=_dumps)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=daemon.metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application(middlewares=[auth])
    app.add_routes([
        web.get("/status", status),
        web.post("/terminals/{tid}/faults", faults),
        web.delete("/terminals/{tid}/faults", faults),
        web.post("/terminals/{tid}/{op}", operate),
        web.post("/sign-off", batch_sign_off),
        web.get("/reminders", reminders),
        web.get("/metrics", metrics),
    ])
    return app


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str, ensure_ascii=False)


async def start_control(daemon: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, daemon.config.control_host, daemon.config.control_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else daemon.config.control_port
    return runner, f"http://{daemon.config.control_host}:{port}"
