"""Serial links on pyserial (asyncio through pyserial-asyncio-fast): real devices, pty pairs, pyserial URLs.

    serial:///dev/ttyUSB0?baud=9600&parity=N&bytesize=8&stopbits=1&rtscts=0&xonxoff=0
    loop://   socket://host:port   rfc2217://host:port   spy://...   (passed through to serial_for_url)

A serial line has no connection boundaries, so frames are read with the resynchronising decoder:
after line noise or a partial frame it skips to the next plausible frame without losing a good one,
and reports what it skipped (`link.skipped`, and the log). The host side serves a device by running
its handler on it and, when the device goes away (unplugged: EIO or EOF), reopening it with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import serial
import serial_asyncio_fast

from .base import FrameLink, LinkClosed, LinkUnavailable
from .stream import StreamFrameLink
from .tcp import Handler
from .url import LinkURL, register_scheme

log = logging.getLogger("possim.links.serial")

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "M": serial.PARITY_MARK,
            "S": serial.PARITY_SPACE}
BYTESIZES = {"5": serial.FIVEBITS, "6": serial.SIXBITS, "7": serial.SEVENBITS, "8": serial.EIGHTBITS}
STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE, "2": serial.STOPBITS_TWO}
PASSTHROUGH_SCHEMES = ("loop", "socket", "rfc2217", "spy", "hwgrep", "alt", "cp2110")


def _flag(params: dict[str, str], key: str) -> bool:
    value = params.get(key, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"serial parameter {key}={value!r}: expected 0 or 1")
    return value in ("1", "true", "yes")


def serial_settings(url: LinkURL) -> tuple[str, dict[str, Any]]:
    """(pyserial URL or device path, keyword settings) for a link URL; ValueError names a bad parameter."""
    params = dict(url.params)
    known = {"baud", "parity", "bytesize", "stopbits", "rtscts", "xonxoff", "dsrdtr", "exclusive"}
    unknown = set(params) - known
    if url.scheme != "serial":
        params = {}  # pyserial's URL options are pyserial's business
    elif unknown:
        raise ValueError(f"unknown serial parameters {sorted(unknown)}; known: {sorted(known)}")
    try:
        baud = int(params.get("baud", "9600"))
    except ValueError:
        raise ValueError(f"serial parameter baud={params['baud']!r} is not a number") from None
    if baud <= 0:
        raise ValueError(f"serial parameter baud={baud} must be positive")
    parity = params.get("parity", "N").upper()
    if parity not in PARITIES:
        raise ValueError(f"serial parameter parity={parity!r}: expected one of {', '.join(PARITIES)}")
    bytesize = params.get("bytesize", "8")
    if bytesize not in BYTESIZES:
        raise ValueError(f"serial parameter bytesize={bytesize!r}: expected 5, 6, 7 or 8")
    stopbits = params.get("stopbits", "1")
    if stopbits not in STOPBITS:
        raise ValueError(f"serial parameter stopbits={stopbits!r}: expected 1, 1.5 or 2")
    settings: dict[str, Any] = dict(baudrate=baud, parity=PARITIES[parity], bytesize=BYTESIZES[bytesize],
                                    stopbits=STOPBITS[stopbits], rtscts=_flag(params, "rtscts"),
                                    xonxoff=_flag(params, "xonxoff"), dsrdtr=_flag(params, "dsrdtr"))
    if url.scheme == "serial":
        if not url.path:
            raise ValueError(f"link {url.url!r} names no device: use serial:///dev/ttyUSB0")
        settings["exclusive"] = params.get("exclusive", "1") not in ("0", "false", "no")
        return url.path, settings
    # a pyserial URL goes through untouched: its query holds pyserial's own options
    return url.url, settings


class SerialFrameLink(StreamFrameLink):
    """Frames over a serial port; modem lines where the device has them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, device: str) -> None:
        super().__init__(reader, writer, resync=True, peer=device)
        self.device = device

    def modem_lines(self) -> dict[str, bool]:
        port = getattr(self._writer.transport, "serial", None)
        lines: dict[str, bool] = {}
        for name in ("cts", "dsr", "ri", "cd"):
            try:
                lines[name] = bool(getattr(port, name))
            except (OSError, serial.SerialException, AttributeError, TypeError):
                continue
        return lines

    async def receive(self) -> Any:
        frame = await super().receive()
        if self.skipped:
            for offset, count, reason in self.skipped:
                log.warning("%s: skipped %d bytes at offset %d (%s)", self.device, count, offset, reason)
            self.skipped_total = getattr(self, "skipped_total", 0) + sum(c for _, c, _ in self.skipped)
            self.skipped.clear()
        return frame


class PolledSerialFrameLink(FrameLink):
    """Frames over a pyserial port that has no file descriptor (loop://, spy:// over such a port).

    The asyncio transport needs a descriptor to watch; these ports are read by a worker thread in short
    timed reads instead, with the same resynchronising decoder.
    """

    def __init__(self, port: Any, *, device: str) -> None:
        from protocol.framing import FrameDecoder

        self._port = port
        self._decoder = FrameDecoder(resync=True)
        self._ready: list[Any] = []
        self._closed = False
        self.device = device
        self.skipped: list[tuple[int, int, str]] = []

    @property
    def peer(self) -> str:
        return self.device

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, frame: Any) -> None:
        from protocol.framing import encode_frame

        if self._closed:
            raise LinkClosed(f"{self.device} is closed")
        data = encode_frame(frame)
        self._trace("tx", data)
        try:
            await asyncio.to_thread(self._port.write, data)
        except (serial.SerialException, OSError) as exc:
            await self.close()
            raise LinkClosed(f"{self.device} lost: {exc}") from None

    async def receive(self) -> Any:
        from protocol.framing import encode_frame

        while not self._ready:
            if self._closed:
                raise LinkClosed(f"{self.device} is closed")
            try:
                chunk = await asyncio.to_thread(self._port.read, 4096)
            except (serial.SerialException, OSError, TypeError) as exc:
                await self.close()
                raise LinkClosed(f"{self.device} lost: {exc}") from None
            if chunk:
                self._ready.extend(self._decoder.feed(chunk))
                self.skipped.extend(self._decoder.drain_skipped())
        frame = self._ready.pop(0)
        if self.trace is not None:
            self._trace("rx", encode_frame(frame))
        return frame

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._port.close()


async def open_serial(url: LinkURL, **_: Any) -> FrameLink:
    target, settings = serial_settings(url)
    if url.scheme == "loop" or (url.scheme == "spy" and "loop://" in url.url):
        try:
            port = serial.serial_for_url(target, timeout=0.05, **settings)
        except serial.SerialException as exc:
            raise LinkUnavailable(f"cannot open {target}: {exc}") from None
        return PolledSerialFrameLink(port, device=target)
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(url=target, **settings)
    except serial.SerialException as exc:
        text = str(exc)
        if "busy" in text.lower() or "lock" in text.lower() or "Resource temporarily unavailable" in text:
            raise LinkUnavailable(f"serial device {target} is busy (opened by another program): {text}") from None
        raise LinkUnavailable(f"cannot open serial device {target}: {text}") from None
    except (OSError, ValueError) as exc:
        raise LinkUnavailable(f"cannot open serial device {target}: {exc}") from None
    return SerialFrameLink(reader, writer, device=target)


class SerialServer:
    """Runs a handler on a serial device, reopening it with backoff when it goes away."""

    def __init__(self, url: LinkURL, handler: Handler, *, backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.url = url
        self.handler = handler
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sockets: list[Any] = []
        self.opens = 0
        self._link: FrameLink | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = self.backoff
        while True:
            try:
                link = await open_serial(self.url)
            except LinkUnavailable as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            delay = self.backoff
            self.opens += 1
            self._link = link
            try:
                await self.handler(link)
            except LinkClosed:
                pass
            except Exception:
                log.exception("handler on %s failed", self.url.url)
            finally:
                await link.close()
                self._link = None
            await asyncio.sleep(self.backoff)

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        if self._link is not None:
            await self._link.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def serve_serial(url: LinkURL, handler: Handler) -> SerialServer:
    serial_settings(url)  # validate now: a bad URL is an error at start, not a retry loop
    return SerialServer(url, handler)


for _scheme in ("serial", *PASSTHROUGH_SCHEMES):
    register_scheme(_scheme, open_serial, serve_serial)
