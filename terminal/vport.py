"""Virtual serial port pairs: two pty devices wired back to back, for hardware-free serial work.

With socat installed, `socat pty,raw,echo=0 pty,raw,echo=0` makes the pair; otherwise a pure-Python
bridge does: two pseudo-terminals in raw mode from the first moment, and an asyncio loop copying bytes
from each master to the other. The bridge keeps both slave ends open itself so that a program closing
and reopening a device (an unplug and replug) does not tear the pair down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PtyBridge:
    """A pure-Python virtual serial pair. `paths` are the two device names to open."""

    paths: tuple[str, str] = ("", "")
    _fds: list[int] = field(default_factory=list)
    _loop: Any = None
    links: list[Path] = field(default_factory=list)
    _paused: bool = False

    def start(self, link_dir: str | None = None) -> PtyBridge:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)  # raw at once: no echo, no line discipline eating bytes
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self._fds = [m1, s1, m2, s2]
        self.paths = (os.ttyname(s1), os.ttyname(s2))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(m1, self._copy, m1, m2)
        self._loop.add_reader(m2, self._copy, m2, m1)
        if link_dir:
            self.links = _make_links(self.paths, link_dir)
        return self

    def _copy(self, source: int, sink: int) -> None:
        try:
            data = os.read(source, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(sink, view)
            except BlockingIOError:
                continue
            except OSError:
                return
            view = view[written:]

    def pause(self) -> None:
        """Stop carrying bytes (the cable is pulled); what is written meanwhile is lost."""
        for fd in (self._fds[0], self._fds[2]):
            self._loop.remove_reader(fd)
        self._paused = True

    def resume(self) -> None:
        """Carry bytes again (the cable is plugged back in), discarding what queued while unplugged."""
        m1, m2 = self._fds[0], self._fds[2]
        for fd in (m1, m2):
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(fd, 65536):
                    pass
        self._loop.add_reader(m1, self._copy, m1, m2)
        self._loop.add_reader(m2, self._copy, m2, m1)
        self._paused = False

    def inject(self, end: int, data: bytes) -> None:
        """Put bytes on the line as if device `end` (0 or 1) had sent them: line noise for tests."""
        target = self._fds[2] if end == 0 else self._fds[0]
        os.write(target, data)

    def close(self) -> None:
        if self._loop is not None and not self._paused:
            for fd in (self._fds[0], self._fds[2]):
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for link in self.links:
            with contextlib.suppress(OSError):
                link.unlink()


class SocatPair:
    """A virtual serial pair made by socat."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.paths: tuple[str, str] = ("", "")
        self.links: list[Path] = []

    async def start(self, link_dir: str | None = None) -> SocatPair:
        self.process = await asyncio.create_subprocess_exec(
            "socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self.process.stderr is not None
        found: list[str] = []
        while len(found) < 2:
            line = await asyncio.wait_for(self.process.stderr.readline(), 10)
            if not line:
                raise RuntimeError("socat exited before creating the pair")
            match = re.search(rb"PTY is (\S+)", line)
            if match:
                found.append(match.group(1).decode())
        self.paths = (found[0], found[1])
        if link_dir:
            self.links = _make_links(self.paths, link_dir)
        return self

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.process.wait(), 5)
        for link in self.links:
            with contextlib.suppress(OSError):
                link.unlink()


def _make_links(paths: tuple[str, str], link_dir: str) -> list[Path]:
    directory = Path(link_dir)
    directory.mkdir(parents=True, exist_ok=True)
    links = []
    for name, path in zip(("possim-A", "possim-B"), paths, strict=True):
        link = directory / name
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(path)
        links.append(link)
    return links


def socat_available() -> bool:
    return shutil.which("socat") is not None
