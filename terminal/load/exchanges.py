"""One message exchange as a load report sees it: a name ("0200 sale"), a time, a size, a verdict.

`ExchangeRecorder` plugs into a terminal's `HostChannel.observer` (and its link trace, for the reply's
size) and queues one `Exchange` per request sent. It takes no lock of its own: it appends to a
`collections.deque`, whose appends and pops are atomic, so the thread that runs the terminal can
record while another thread drains - which is how the Locust user hands reports from its asyncio
thread to Locust's greenlets. It imports neither Locust nor gevent, so it is usable (and tested) in
possim's own process.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from protocol import catalogue, codes
from protocol.message import Message

from ..channel import ExchangeError, Reply

_STAN = re.compile(r"\s*STAN \d+")


@dataclass(frozen=True)
class Exchange:
    """One request and its outcome. `failure` is None for an approval (response code 00)."""

    name: str  # "<MTI> <operation>", e.g. "0200 sale", "0400 reversal", "0820 sign-off"
    response_ms: float
    response_bytes: int  # the reply frame as received (0 when nothing came back)
    failure: str | None = None
    transport: bool = False  # True: no usable reply (offline, no reply, bad MAC); False: the host's answer


def exchange_name(request: Message) -> str:
    """'0800 sign-in', '0200 sale', '0200 void', '0220 refund', '0500 settlement', '0320 batch-upload'...

    The operation comes from the message catalogue (MTI, processing code, 60.x), so two requests that
    share an MTI (sale, void and balance are all 0200) are told apart.
    """
    transaction = catalogue.identify(request)
    if transaction is None:
        return f"{request.mti} other"
    name = "sign-in" if transaction.name.startswith("sign_in") else transaction.name.replace("_", "-")
    return f"{request.mti} {name}"


def verdict(reply: Reply | None, error: ExchangeError | None) -> tuple[str | None, bool]:
    """(failure text or None, is it a transport failure). A decline names its code: 'rc 51 insufficient funds'.

    Transport texts drop the STAN so that one kind of failure is one row in a report, not one per
    message; they never carry card data (the channel's errors name links and MTIs only).
    """
    if error is not None or reply is None:
        text = _STAN.sub("", str(error)) if error is not None else "no reply"
        return f"{type(error).__name__ if error is not None else 'NoReply'}: {text}", True
    rc = reply.message.response_code
    if rc == codes.APPROVED:
        return None, False
    return f"rc {rc} {codes.describe(rc)}", False


class ExchangeRecorder:
    """Observer + trace hook for one terminal; `drain()` returns what was recorded since the last drain."""

    __slots__ = ("_done", "_rx_bytes")

    def __init__(self) -> None:
        self._done: deque[Exchange] = deque()
        self._rx_bytes = 0

    def trace(self, direction: str, data: bytes) -> None:
        """The link's trace hook: only the size of the last frame received is kept (never its content)."""
        if direction == "rx":
            self._rx_bytes = len(data)

    def observe(self, request: Message, reply: Reply | None, seconds: float, error: ExchangeError | None) -> None:
        failure, transport = verdict(reply, error)
        size = self._rx_bytes if reply is not None else 0
        self._rx_bytes = 0
        self._done.append(Exchange(exchange_name(request), seconds * 1000.0, size, failure, transport))

    def drain(self) -> list[Exchange]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out
