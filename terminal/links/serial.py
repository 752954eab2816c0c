"""Serial links on pyserial (asyncio through pyserial-asyncio-fast): real devices, pty pairs, pyserial URLs.

    serial:///dev/ttyUSB0?baud=9600&parity=N&bytesize=8&stopbits=1&rtscts=0&xonxoff=0&dsrdtr=0&exclusive=1
    loop://   socket://host:port   rfc2217://host:port   spy:///dev/ttyUSB0?file=trace.txt
                                                          (passed through untouched to serial_for_url)

A serial line has no connection boundaries, so frames are read with the resynchronising decoder:
after line noise or a partial frame it skips to the next plausible frame without losing a good one,
and reports what it skipped (`link.skipped`, a list of (offset, nbytes, reason), and a log warning).

Ports with a file descriptor (devices, ptys, spy:// on a device) run on the asyncio transport of
pyserial-asyncio-fast; socket:// on asyncio's own TCP transport; ports without one (loop://,
rfc2217://) are read by a worker thread. A device that goes away (unplugged: EIO, readiness with no
data, EOF) ends the link with LinkClosed. Opening a missing, forbidden or busy device (devices are
opened with an exclusive lock unless `exclusive=0`) raises LinkUnavailable naming the device and why.

The host side (`serve_link("serial:///dev/X", handler)`) opens the device, runs the handler on it and,
when the link drops, reopens it with exponential backoff (`backoff=0.2&max_backoff=5` seconds, from
the URL) and runs the handler again, until the server is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import threading
from collections import deque
from typing import Any

import serial
import serial_asyncio_fast

from protocol.framing import Frame, FrameDecoder, encode_frame

from .base import FrameLink, LinkClosed, LinkUnavailable
from .stream import StreamFrameLink
from .tcp import Handler
from .url import LinkURL, register_scheme

log = logging.getLogger("possim.links.serial")

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "M": serial.PARITY_MARK,
            "S": serial.PARITY_SPACE}
BYTESIZES = {"5": serial.FIVEBITS, "6": serial.SIXBITS, "7": serial.SEVENBITS, "8": serial.EIGHTBITS}
STOPBITS = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE, "2": serial.STOPBITS_TWO}
#: pyserial URL schemes passed through to serial_for_url as they are.
PASSTHROUGH_SCHEMES = ("loop", "socket", "rfc2217", "spy", "hwgrep", "alt", "cp2110")
#: serial:// parameters: line settings, plus the server's reopen backoff (ignored by a client).
LINE_PARAMS = ("baud", "parity", "bytesize", "stopbits", "rtscts", "xonxoff", "dsrdtr", "exclusive")
SERVER_PARAMS = ("backoff", "max_backoff")
MAX_BAUD = 4_000_000
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(params: dict[str, str], key: str, default: str = "0") -> bool:
    value = params.get(key, default).lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"serial parameter {key}={value!r}: expected 0 or 1")
    return value in _TRUE


def _seconds(params: dict[str, str], key: str, default: float) -> float:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"serial parameter {key}={raw!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise ValueError(f"serial parameter {key}={raw!r}: expected seconds in (0, 3600]")
    return value


def serial_settings(url: LinkURL) -> tuple[str, dict[str, Any]]:
    """(pyserial URL or device path, keyword settings) for a link URL; ValueError names a bad parameter.

    Only serial:// URLs carry possim's parameters; a pyserial URL's query holds pyserial's own options
    (spy://...?file=, socket://...?logging=) and goes through untouched, at 9600 8N1.
    """
    params = dict(url.params) if url.scheme == "serial" else {}
    unknown = set(params) - set(LINE_PARAMS) - set(SERVER_PARAMS)
    if unknown:
        raise ValueError(f"unknown serial parameter(s) {', '.join(sorted(unknown))} in {url.url!r}; "
                         f"known: {', '.join(LINE_PARAMS + SERVER_PARAMS)}")
    raw_baud = params.get("baud", "9600")
    try:
        baud = int(raw_baud)
    except ValueError:
        raise ValueError(f"serial parameter baud={raw_baud!r} is not a number (e.g. baud=9600)") from None
    if not 0 < baud <= MAX_BAUD:
        raise ValueError(f"serial parameter baud={baud}: expected 1..{MAX_BAUD} (e.g. 9600, 115200)")
    parity = params.get("parity", "N").upper()
    if parity not in PARITIES:
        raise ValueError(f"serial parameter parity={params.get('parity')!r}: expected one of "
                         f"{', '.join(PARITIES)} (none, even, odd, mark, space)")
    bytesize = params.get("bytesize", "8")
    if bytesize not in BYTESIZES:
        raise ValueError(f"serial parameter bytesize={bytesize!r}: expected 5, 6, 7 or 8")
    stopbits = params.get("stopbits", "1")
    if stopbits not in STOPBITS:
        raise ValueError(f"serial parameter stopbits={stopbits!r}: expected 1, 1.5 or 2")
    settings: dict[str, Any] = dict(baudrate=baud, parity=PARITIES[parity], bytesize=BYTESIZES[bytesize],
                                    stopbits=STOPBITS[stopbits], rtscts=_flag(params, "rtscts"),
                                    xonxoff=_flag(params, "xonxoff"), dsrdtr=_flag(params, "dsrdtr"))
    if url.scheme != "serial":
        return url.url, settings
    if not url.path or url.path == "/":
        raise ValueError(f"link {url.url!r} names no device: use serial:///dev/ttyUSB0 (three slashes)")
    if url.host:
        raise ValueError(f"link {url.url!r}: a serial device path needs three slashes, "
                         f"serial:///{url.host}{url.path}")
    settings["exclusive"] = _flag(params, "exclusive", "1")
    _seconds(params, "backoff", 0.2)
    _seconds(params, "max_backoff", 5.0)
    return url.path, settings


def describe_open_error(target: str, exc: BaseException) -> str:
    """A one-line reason for a failed open, naming the device: missing, forbidden, busy, or as reported."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"serial device {target}: no such device ({text})"
    if code in (errno.EACCES, errno.EPERM):
        return f"serial device {target}: permission denied (add yourself to the dialout group?) ({text})"
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return f"serial device {target} is busy: opened by another program ({text})"
    if code == errno.ENOTTY or "Inappropriate ioctl" in text:
        return f"{target} is not a serial device ({text})"
    if isinstance(exc, ConnectionRefusedError):
        return f"{target}: connection refused"
    return f"cannot open serial device {target}: {text or type(exc).__name__}"


def _modem_lines(port: Any) -> dict[str, bool]:
    """CTS, DSR, RI and CD where the device has them (a pty or loop:// may have none)."""
    lines: dict[str, bool] = {}
    if port is None:
        return lines
    for name in ("cts", "dsr", "ri", "cd"):
        try:
            lines[name] = bool(getattr(port, name))
        except (OSError, ValueError, AttributeError, TypeError, serial.SerialException):
            continue
    return lines


class _SkipReport:
    """Logs each newly skipped stretch of bytes once; `skipped` keeps them all, `skipped_bytes` the sum."""

    skipped: list[tuple[int, int, str]]
    device: str
    _reported = 0

    def _report_skipped(self) -> None:
        for offset, count, reason in self.skipped[self._reported:]:
            log.warning("%s: skipped %d bytes at stream offset %d (%s)", self.device, count, offset, reason)
        self._reported = len(self.skipped)

    @property
    def skipped_bytes(self) -> int:
        return sum(count for _, count, _ in self.skipped)


class SerialFrameLink(_SkipReport, StreamFrameLink):
    """Frames over a serial port with a file descriptor, on an asyncio transport."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, device: str) -> None:
        super().__init__(reader, writer, resync=True, peer=device)
        self.device = device

    def modem_lines(self) -> dict[str, bool]:
        return _modem_lines(self._writer.transport.get_extra_info("serial"))

    async def receive(self) -> Frame:
        try:
            return await super().receive()
        finally:
            self._report_skipped()


class PolledSerialFrameLink(_SkipReport, FrameLink):
    """Frames over a pyserial port that has no file descriptor to watch (loop://, rfc2217://).

    One worker thread reads the port in short timed reads and hands the bytes to the event loop, so a
    cancelled `receive()` (a reply timeout) loses nothing; writes go through a thread, one at a time.
    """

    def __init__(self, port: Any, *, device: str) -> None:
        self._port = port
        self._decoder = FrameDecoder(resync=True)
        self._ready: deque[Frame] = deque()
        self._chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._stop = threading.Event()
        self.device = device
        self.skipped = []
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read_worker, args=(loop,), name=f"serial-{device}",
                                        daemon=True)
        self._thread.start()

    def _read_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                item: bytes | BaseException = self._port.read(4096)
            except Exception as exc:  # the port went away (or was closed under us)
                item = exc
            if isinstance(item, bytes) and not item:
                continue
            try:
                loop.call_soon_threadsafe(self._chunks.put_nowait, item)
            except RuntimeError:  # the loop is gone
                return
            if not isinstance(item, bytes):
                return

    @property
    def peer(self) -> str:
        return self.device

    @property
    def closed(self) -> bool:
        return self._closed

    def modem_lines(self) -> dict[str, bool]:
        return _modem_lines(self._port)

    async def send(self, frame: Frame) -> None:
        if self._closed:
            raise LinkClosed(f"{self.device} is closed")
        data = encode_frame(frame)
        self._trace("tx", data)
        async with self._send_lock:
            try:
                await asyncio.to_thread(self._port.write, data)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                await self.close()
                raise LinkClosed(f"{self.device} lost: {exc}") from None

    async def receive(self) -> Frame:
        while not self._ready:
            if self._closed:
                raise LinkClosed(f"{self.device} is closed")
            item = await self._chunks.get()
            if isinstance(item, BaseException):
                await self.close()
                raise LinkClosed(f"{self.device} lost: {item}")
            self._ready.extend(self._decoder.feed(item))
            self.skipped.extend(self._decoder.drain_skipped())
            self._report_skipped()
        frame = self._ready.popleft()
        if self.trace is not None:
            self._trace("rx", encode_frame(frame))
        return frame

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 2)
        with contextlib.suppress(Exception):
            self._port.close()
        self._chunks.put_nowait(LinkClosed(f"{self.device} is closed"))  # wakes a waiting receive()


def _has_fileno(port: Any) -> bool:
    try:
        port.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return True


async def open_serial(url: LinkURL, **_: Any) -> FrameLink:
    """Open a serial link (client side); LinkUnavailable names the device and the reason."""
    target, settings = serial_settings(url)
    loop = asyncio.get_running_loop()
    if url.scheme == "socket":  # pyserial-asyncio-fast carries socket:// on asyncio's own TCP transport
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(url=target, **settings)
        except (OSError, ValueError) as exc:
            raise LinkUnavailable(describe_open_error(target, exc)) from None
        return SerialFrameLink(reader, writer, device=target)
    try:
        port = await asyncio.to_thread(serial.serial_for_url, target, timeout=0.05, **settings)
    except (OSError, ValueError) as exc:  # SerialException is an OSError
        raise LinkUnavailable(describe_open_error(target, exc)) from None
    if not _has_fileno(port):
        return PolledSerialFrameLink(port, device=target)
    reader = asyncio.StreamReader(limit=65536, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(Exception):
            port.close()
        raise LinkUnavailable(describe_open_error(target, exc)) from None
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return SerialFrameLink(reader, writer, device=target)


class SerialServer:
    """Runs a handler on a serial device, reopening it with exponential backoff when it goes away.

    `backoff` is the first wait after a failed open (or a session that ended within a second), doubled
    on each further failure up to `max_backoff`; a session that lasted resets it.
    """

    def __init__(self, url: LinkURL, handler: Handler, *, backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.url = url
        self.handler = handler
        self.backoff = backoff
        self.max_backoff = max(max_backoff, backoff)
        self.sockets: list[Any] = []
        self.opens = 0  # how many times the device was opened and served
        self.last_error: str | None = None
        self._link: FrameLink | None = None
        self._closing = False
        self.first_attempt = asyncio.Event()  # set once the device was opened, or failed to open, once
        self._task = asyncio.create_task(self._run(), name=f"serve {url.url}")

    @property
    def link(self) -> FrameLink | None:
        """The link being served now (None while the device is away)."""
        return self._link

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff
        while not self._closing:
            try:
                link = await open_serial(self.url)
            except LinkUnavailable as exc:
                if str(exc) != self.last_error:
                    log.warning("%s; retrying with backoff up to %.1fs", exc, self.max_backoff)
                self.last_error = str(exc)
                self.first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            if self.last_error is not None:
                log.warning("%s is back", self.url.url)
            self.last_error = None
            self.opens += 1
            self._link = link
            self.first_attempt.set()
            started = loop.time()
            try:
                await self.handler(link)
            except LinkClosed:
                pass
            except Exception:
                log.exception("handler on %s failed", self.url.url)
            finally:
                self._link = None
                with contextlib.suppress(Exception):
                    await link.close()
            if self._closing:
                break
            delay = self.backoff if loop.time() - started >= 1.0 else min(self.max_backoff, delay * 2)
            log.info("%s dropped; reopening in %.1fs", self.url.url, delay)
            await asyncio.sleep(delay)

    def close(self) -> None:
        self._closing = True
        self._task.cancel()

    def is_serving(self) -> bool:
        return not self._task.done()

    async def wait_closed(self) -> None:
        link = self._link
        if link is not None:
            with contextlib.suppress(Exception):
                await link.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def serve_serial(url: LinkURL, handler: Handler) -> SerialServer:
    """Serve a device; returns once it is open (so bytes sent to it from now on are heard), or once a
    first open failed (the server then keeps retrying in the background)."""
    serial_settings(url)  # validate now: a bad URL is an error at start, not a retry loop
    params = url.params if url.scheme == "serial" else {}
    server = SerialServer(url, handler, backoff=_seconds(params, "backoff", 0.2),
                          max_backoff=_seconds(params, "max_backoff", 5.0))
    try:
        await asyncio.wait_for(server.first_attempt.wait(), 10)
    except TimeoutError:
        pass  # an open that hangs (rfc2217:// negotiating): go on, it keeps trying
    except BaseException:
        server.close()
        raise
    return server


for _scheme in ("serial", *PASSTHROUGH_SCHEMES):
    register_scheme(_scheme, open_serial, serve_serial)
