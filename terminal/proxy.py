"""The ISO 8583-aware chaos proxy: a man in the middle that decodes cup-pos frames in flight.

    possim proxy --listen tcp://127.0.0.1:5900 --upstream tcp://127.0.0.1:5800 --faults faults.toml

Terminals (ours or real ones) connect to the proxy; for each connection it opens one to the upstream
host and pumps frames both ways through a `FaultyLink`, so message faults ("drop the 0210 of the next
sale", "delay sign-off replies 40 s", "corrupt the MAC of every 10th reply") and link toxics apply to a
host that is not modified at all. Rules are changeable at run time (`proxy.faults`, or SIGHUP to
re-read the faults file).

Direction, as seen from the host side: `tx` is a request going to the host, `rx` a reply coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from protocol.dialect import get_dialect
from protocol.errors import ProtocolError

from .chaos import FaultSet, FaultyLink
from .faultplan import FaultPlan, FaultPlanError
from .links import FrameLink, LinkClosed, LinkUnavailable, open_link, parse_link_url, serve_link

log = logging.getLogger("possim.proxy")


def check_plan(plan: FaultPlan) -> None:
    """FaultPlanError for a plan with [[device]] or [[host]] entries: a proxy sits on the link and can arm
    neither a terminal's printer nor a host's policy, and a chaos run that silently left out half its plan
    would pass for the wrong reason."""
    elsewhere = [name for name, entries in (("[[device]]", plan.device), ("[[host]]", plan.host)) if entries]
    if elsewhere:
        raise FaultPlanError(f"{' and '.join(elsewhere)} entries are not the proxy's to apply: device faults go "
                             f"to terminals (possim terminal/load --faults), host actions to the host (possim ctl "
                             f"fault); the proxy takes [[message]] and [[link]]")


class ChaosProxy:
    def __init__(self, upstream: str, *, faults: FaultSet | None = None, dialect: str = "cup-pos") -> None:
        self.upstream = upstream
        self.dialect = get_dialect(dialect)
        self.faults = faults or FaultSet()
        self._servers: list[Any] = []
        self._links: set[FrameLink] = set()
        self.urls: list[str] = []
        self.connections = 0

    def load_plan(self, plan: FaultPlan) -> None:
        """Replace the message rules and link toxics with those of `plan` (FaultPlanError: `check_plan`)."""
        check_plan(plan)
        self.faults.clear()
        self.faults.rng.seed(plan.seed)
        for rule in plan.message:
            self.faults.add(rule)
        for toxic in plan.link:
            self.faults.add_toxic(toxic)

    async def listen(self, url: str) -> str:
        server = await serve_link(url, self._handle)
        self._servers.append(server)
        bound = url
        if parse_link_url(url).scheme == "tcp" and getattr(server, "sockets", None):
            host, port = server.sockets[0].getsockname()[:2]
            bound = f"tcp://{host}:{port}"
        self.urls.append(bound)
        return bound

    async def _handle(self, terminal: FrameLink) -> None:
        if any(toxic.toxic == "down" for toxic in self.faults.toxics):
            self.faults.log.append(("down", "connect", "?"))  # the network is down: nothing gets through
            return
        try:
            upstream_link = await open_link(self.upstream)
        except (LinkUnavailable, OSError) as exc:
            log.warning("upstream %s unavailable: %s", self.upstream, exc)
            return
        self.connections += 1
        host = FaultyLink(upstream_link, self.dialect, self.faults)
        self._links.update((terminal, host))
        to_host = asyncio.create_task(self._pump(terminal, host, "request"))
        to_terminal = asyncio.create_task(self._pump(host, terminal, "reply"))
        try:
            await asyncio.wait({to_host, to_terminal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_host, to_terminal):
                task.cancel()
            for task in (to_host, to_terminal):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await host.close()
            self._links.difference_update((terminal, host))

    async def _pump(self, source: FrameLink, sink: FrameLink, what: str) -> None:
        while True:
            try:
                frame = await source.receive()
            except (LinkClosed, ProtocolError, OSError) as exc:
                log.info("%s side closed: %s", what, exc)
                return
            try:
                await sink.send(frame)
            except (LinkClosed, OSError) as exc:
                log.info("cannot forward %s: %s", what, exc)
                return

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for link in list(self._links):
            await link.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()

    async def __aenter__(self) -> ChaosProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
