"""Virtual serial port pairs: the backends behind `possim vport`, and the serial test helpers.

Two backends make the pair:

* socat, when installed: `socat -d -d pty,raw,echo=0 pty,raw,echo=0`, the pty paths read from the
  notices it prints;
* a pure-Python bridge otherwise (or with `--no-socat`): two pseudo-terminals whose slave sides are set
  raw at once (no echo, no line discipline eating bytes), and an asyncio loop copying bytes between the
  two masters. The bridge keeps both slave sides open itself, so a program closing and reopening a
  device does not tear the pair down. Like a real line with nobody listening, it drops bytes beyond
  64 KiB that the far side does not read, rather than stall.

`PtyBridge` and `SocatPair` are also the test helpers for serial links: `inject()` puts line noise on
the wire, `pause()` / `resume()` pull and replug the cable, `unplug()` makes the devices vanish (EIO).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import tty
from pathlib import Path

log = logging.getLogger("possim.vport")

LINK_NAMES = ("possim-A", "possim-B")
BRIDGE_BUFFER = 64 * 1024


def socat_available() -> bool:
    return shutil.which("socat") is not None


def make_links(paths: tuple[str, str], link_dir: str) -> list[Path]:
    """Symlinks link_dir/possim-A -> paths[0] and link_dir/possim-B -> paths[1], replacing stale ones."""
    directory = Path(link_dir)
    directory.mkdir(parents=True, exist_ok=True)
    links = []
    for name, path in zip(LINK_NAMES, paths, strict=True):
        link = directory / name
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(path)
        links.append(link)
    return links


def remove_links(links: list[Path], paths: tuple[str, str]) -> None:
    """Remove our symlinks, unless something else has since pointed them elsewhere."""
    for link in links:
        with contextlib.suppress(OSError):
            if os.readlink(link) in paths:
                link.unlink()


class PtyBridge:
    """A pure-Python virtual serial pair: `paths` are the two device names to open (after `start()`)."""

    def __init__(self, buffer_limit: int = BRIDGE_BUFFER) -> None:
        self.paths: tuple[str, str] = ("", "")
        self.links: list[Path] = []
        self.dropped = 0  # bytes lost because the far side did not read them
        self.buffer_limit = buffer_limit
        self._masters: tuple[int, int] = (-1, -1)
        self._slaves: tuple[int, int] = (-1, -1)
        self._pending: dict[int, bytearray] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._carrying = False
        self._closed = False

    @property
    def devices(self) -> list[str]:
        """What a user should open: the stable symlinks if any, else the pty paths."""
        return [str(link) for link in self.links] or list(self.paths)

    def start(self, link_dir: str | None = None) -> PtyBridge:
        """Create the pair (call from a running event loop)."""
        self._loop = asyncio.get_running_loop()
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)  # raw before anyone can open it: no echo, no ICRNL, no signals
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self._masters, self._slaves = (m1, m2), (s1, s2)
        self._pending = {m1: bytearray(), m2: bytearray()}
        self.paths = (os.ttyname(s1), os.ttyname(s2))
        try:
            if link_dir:
                self.links = make_links(self.paths, link_dir)
        except OSError:
            self.close()
            raise
        self._carry(True)
        return self

    def _other(self, master: int) -> int:
        m1, m2 = self._masters
        return m2 if master == m1 else m1

    def _carry(self, on: bool) -> None:
        assert self._loop is not None
        for fd in self._masters:
            if on:
                self._loop.add_reader(fd, self._on_readable, fd)
            else:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
                self._pending[fd].clear()
        self._carrying = on

    def _on_readable(self, source: int) -> None:
        try:
            data = os.read(source, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: cannot happen while we hold the slave side, but never spin on it
            assert self._loop is not None
            self._loop.remove_reader(source)
            return
        self._deliver(self._other(source), data)

    def _deliver(self, sink: int, data: bytes) -> None:
        pending = self._pending[sink]
        if not pending:
            try:
                written = os.write(sink, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError:
                return
            data = data[written:]
            if not data:
                return
        room = self.buffer_limit - len(pending)
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if data:
            if not pending:
                assert self._loop is not None
                self._loop.add_writer(sink, self._on_writable, sink)
            pending.extend(data)

    def _on_writable(self, sink: int) -> None:
        pending = self._pending[sink]
        try:
            written = os.write(sink, pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            written = len(pending)
        del pending[:written]
        if not pending:
            assert self._loop is not None
            self._loop.remove_writer(sink)

    def pause(self) -> None:
        """Stop carrying bytes (the cable is pulled); what is written meanwhile is lost."""
        if self._carrying:
            self._carry(False)

    def resume(self) -> None:
        """Carry bytes again (the cable is plugged back in), discarding what queued while unplugged."""
        if self._carrying or self._closed:
            return
        for fd in self._masters:
            with contextlib.suppress(OSError):
                while os.read(fd, 65536):
                    pass
        self._carry(True)

    def inject(self, end: int, data: bytes) -> None:
        """Put bytes on the line as if device `end` (0 or 1) had sent them: line noise for tests."""
        self._deliver(self._masters[1 - end], data)

    def unplug(self) -> None:
        """The devices vanish: programs reading them get EIO, and the paths stop existing."""
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._carrying and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._carry(False)
        for fd in (*self._masters, *self._slaves):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        remove_links(self.links, self.paths)

    async def aclose(self) -> None:
        self.close()


class SocatPair:
    """A virtual serial pair made by socat (`socat -d -d pty,raw,echo=0 pty,raw,echo=0`)."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.paths: tuple[str, str] = ("", "")
        self.links: list[Path] = []
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def devices(self) -> list[str]:
        return [str(link) for link in self.links] or list(self.paths)

    async def start(self, link_dir: str | None = None, timeout: float = 10.0) -> SocatPair:
        self.process = await asyncio.create_subprocess_exec(
            "socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self.process.stderr is not None
        found: list[str] = []
        try:
            while len(found) < 2:
                line = await asyncio.wait_for(self.process.stderr.readline(), timeout)
                if not line:
                    raise RuntimeError("socat exited before creating the pair")
                match = re.search(rb"PTY is (\S+)", line)
                if match:
                    found.append(match.group(1).decode())
            self.paths = (found[0], found[1])
            if link_dir:
                self.links = make_links(self.paths, link_dir)
        except BaseException:
            await self.close()
            raise
        self._stderr_task = asyncio.create_task(self._drain_stderr())  # socat must never block on a full pipe
        return self

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            log.debug("socat: %s", line.decode(errors="replace").rstrip())

    async def wait(self) -> int:
        """Until socat exits (on its own or killed); its exit status."""
        assert self.process is not None
        return await self.process.wait()

    async def unplug(self) -> None:
        """Kill socat: the devices vanish and programs reading them get EIO."""
        await self.close()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None
        remove_links(self.links, self.paths)

    aclose = close


async def open_pair(*, use_socat: bool | None = None, link_dir: str | None = None) -> PtyBridge | SocatPair:
    """A virtual pair: socat when installed (unless use_socat=False), the Python bridge otherwise."""
    if use_socat is None:
        use_socat = socat_available()
    if use_socat:
        return await SocatPair().start(link_dir)
    return PtyBridge().start(link_dir)
