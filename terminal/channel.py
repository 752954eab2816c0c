"""The terminal's side of a host exchange: frame, MAC, send, wait for the matching reply.

Kept apart from the flows so that every failure of the link surfaces as one of three outcomes the
flows can reason about - `Offline` (nothing was sent, or the link is gone), `NoReply` (sent, nothing
came back in time) and `BadReply` (an answer that cannot be trusted) - and so that the TPDU,
header and MAC rules live in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocol import catalogue, security
from protocol.dialect import Dialect
from protocol.errors import ProtocolError
from protocol.framing import Frame, Header, Tpdu
from protocol.message import Message
from protocol.security import WorkingKeys

from .chaos import FaultSet, FaultyLink
from .links import FrameLink, LinkClosed, LinkUnavailable, open_link

log = logging.getLogger("possim.terminal")


class ExchangeError(Exception):
    """Base of the outcomes of an exchange that did not produce a usable reply."""


class Offline(ExchangeError):
    """The link is down or the host unreachable: the request was not (fully) sent."""


class NoReply(ExchangeError):
    """The request went out but no matching reply came within the reply timeout."""


class BadReply(ExchangeError):
    """A reply arrived but cannot be trusted (MAC failed, malformed): `reason` is the reversal code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Reply:
    message: Message
    header: Header | None
    round_trip: float
    authenticated: bool  # MAC verified (always True for messages that carry no MAC)

    @property
    def requirement(self) -> int:
        """The header's processing requirement: 0 none, 1 parameters, 3 sign in again, 6 firmware."""
        return self.header.requirement if self.header is not None else 0


Connector = Callable[[], Awaitable[FrameLink]]


@functools.lru_cache(maxsize=64)
def _header(firmware: str) -> Header:
    """The request header for a firmware version (immutable, so one per version serves every frame)."""
    return Header.for_firmware(firmware)
#: Told of every finished exchange: (request, reply or None, seconds from send to outcome, error or None).
#: Load drivers (possim load, the Locust user) time each message exchange through it.
ExchangeObserver = Callable[[Message, "Reply | None", float, "ExchangeError | None"], None]


class HostChannel:
    """One terminal's connection to its host, opened lazily and reopened after a failure."""

    __slots__ = ("_connect", "_link", "_trace", "clock", "connect_timeout", "dialect", "faults", "firmware",
                 "last_rtt", "link_down", "link_failures", "observer", "tpdu", "url")

    def __init__(self, url: str, *, dialect: Dialect, tpdu: str, firmware: str, clock: Callable[[], float],
                 connect_timeout: float = 10.0, connector: Connector | None = None,
                 trace: Callable[[str, bytes], None] | None = None) -> None:
        self.url = url
        self.dialect = dialect
        self.tpdu = Tpdu.from_bytes(bytes.fromhex(tpdu))
        self.firmware = firmware
        self.clock = clock
        self.connect_timeout = connect_timeout
        self._connect = connector
        self._link: FrameLink | None = None
        self._trace = trace
        self.last_rtt: float | None = None
        self.faults: FaultSet | None = None  # message-level faults applied to every link this channel opens
        self.link_down = False  # a fault switch: the network is down (FM-04)
        # Times the link could not be opened or broke in use. A caller compares it before and after an
        # operation to tell "the host was unreachable" from "the terminal refused" (both leave rc None).
        self.link_failures = 0
        self.observer: ExchangeObserver | None = None

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    async def _ensure_link(self) -> FrameLink:
        if self.link_down:
            await self.close()
            self.link_failures += 1
            raise Offline(f"network down: {self.url} unreachable")
        if self._link is not None and not self._link.closed:
            return self._link
        try:
            if self._connect is not None:
                link = await asyncio.wait_for(self._connect(), self.connect_timeout)
            else:
                link = await asyncio.wait_for(open_link(self.url), self.connect_timeout)
        except (LinkUnavailable, OSError, TimeoutError) as exc:
            self.link_failures += 1
            raise Offline(f"host unreachable at {self.url}: {exc or type(exc).__name__}") from None
        if self._trace is not None:
            link.trace = self._trace
        if self.faults is not None:
            link = FaultyLink(link, self.dialect, self.faults)
        self._link = link
        return link

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(OSError, LinkClosed):
                await link.close()

    async def exchange(self, request: Message, *, timeout: float, keys: WorkingKeys | None = None,
                       on_sent: Callable[[], None] | None = None) -> Reply:
        """Send `request` (MAC'd when its MTI carries one) and return the matching reply.

        Raises Offline before anything was sent, NoReply when nothing matching came in time, and
        BadReply when the reply's MAC fails or it cannot be decoded. The observer, if any, is told of
        the outcome either way.
        """
        if self.observer is None:
            return await self._exchange(request, timeout, keys, on_sent)
        started = self.clock()
        try:
            reply = await self._exchange(request, timeout, keys, on_sent)
        except ExchangeError as exc:
            self.observer(request, None, self.clock() - started, exc)
            raise
        self.observer(request, reply, reply.round_trip, None)
        return reply

    async def _exchange(self, request: Message, timeout: float, keys: WorkingKeys | None,
                        on_sent: Callable[[], None] | None) -> Reply:
        mac = request.mti in catalogue.MAC_MTIS
        if mac:
            if keys is None:
                raise Offline("no working keys: sign in first")
            payload = security.sign(self.dialect, request, keys.mac_key)
        else:
            payload = self.dialect.encode(request)
        frame = Frame(self.tpdu, _header(self.firmware), payload)
        link = await self._ensure_link()
        started = self.clock()
        try:
            await link.send(frame)
        except (LinkClosed, OSError) as exc:
            await self.close()
            self.link_failures += 1
            raise Offline(f"link lost while sending: {exc or type(exc).__name__}") from None
        if on_sent is not None:
            on_sent()
        deadline = started + timeout
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise NoReply(f"no reply to {request.mti} STAN {request.stan} within {timeout:g}s")
            try:
                async with asyncio.timeout(remaining):  # no task per receive, unlike wait_for on 3.11
                    reply_frame = await link.receive()
            except TimeoutError:
                raise NoReply(f"no reply to {request.mti} STAN {request.stan} within {timeout:g}s") from None
            except (LinkClosed, OSError) as exc:
                await self.close()
                self.link_failures += 1
                raise NoReply(f"link lost awaiting the reply: {exc or type(exc).__name__}") from None
            except ProtocolError as exc:
                await self.close()
                raise BadReply(f"garbage from the host: {exc}", "06") from None
            try:
                reply = self.dialect.decode(reply_frame.payload)
            except ProtocolError as exc:
                raise BadReply(f"undecodable reply: {exc}", "06") from None
            if not self._matches(request, reply):
                log.info("ignoring a reply that does not match: %s STAN %s", reply.mti, reply.stan)
                continue
            authenticated = True
            if mac:
                if reply.get(64) is not None and keys is not None:
                    if not security.verify(self.dialect, reply, keys.mac_key, encoded=reply_frame.payload):
                        raise BadReply("reply MAC does not verify", "A0")
                elif reply.response_code in ("A0", "30"):
                    authenticated = False  # the host could not verify us: an unauthenticated refusal
                else:
                    raise BadReply("reply carries no MAC", "A0")
            self.last_rtt = self.clock() - started
            return Reply(reply, reply_frame.header, self.last_rtt, authenticated)

    @staticmethod
    def _matches(request: Message, reply: Message) -> bool:
        return reply.mti == request.response_mti and reply.get(11) == request.get(11) and (
            reply.get(41) in (None, request.get(41)))
