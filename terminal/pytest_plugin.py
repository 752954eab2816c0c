"""possim as a test library: a pytest plugin (entry point `pytest11`, name `possim`).

Fixtures (all prefixed `possim_`), after pytest-httpserver's design - one host for the session,
state cleared per test:

- `possim_host`: the reference host, started once per session in a background thread on 127.0.0.1
  (or none, when `--possim-host URL` points the terminals at your own host). `.url`, and `.admin`
  whose calls run on the host's thread.
- `possim_terminal`: a powered-on, signed-in terminal against that host, with a journal in the
  test's tmp_path and a terminal id of its own (registered on the host for you).
- `possim_make_terminal`: the factory behind it, for tests that want several or custom settings.
- `possim_faults`: a `FaultPlan` applied to `possim_terminal` for the test and cleared after it.
- `possim_clock`: the event loop's clock (`loop.time`); mark the test `@pytest.mark.looptime` to make it
  virtual, so a two-hour idle costs nothing.

    async def test_lost_reply_is_reversed(possim_terminal, possim_faults, possim_host):
        possim_faults.message.append(MessageFault("drop", direction="rx", mti="0210", count=1))
        possim_faults.apply(possim_terminal)
        result = await possim_terminal.sale(1234)
        assert result.detail["reversal"] == "sent"
        assert possim_host.admin.totals(possim_terminal.tid, possim_terminal.journal.batch) == (0, 0, 0, 0)
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MID, TMK = "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
_TIDS = itertools.count(70000001)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("possim")
    group.addoption("--possim-host", default=None, metavar="URL",
                    help="run possim terminals against this host instead of the built-in reference host")
    group.addoption("--possim-tmk", default=TMK, help="terminal master key for --possim-host terminals")
    group.addoption("--possim-tid", default=None, help="terminal id registered at --possim-host")
    group.addoption("--possim-mid", default=MID, help="merchant id of --possim-tid")


class _AdminProxy:
    """Runs each admin call on the host's thread (the ledger's connection belongs to it)."""

    def __init__(self, host: PossimHost) -> None:
        self._host = host

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._host.call(lambda: getattr(self._host.server.admin, name)(*args, **kwargs))

        return call


class PossimHost:
    """The reference host on a background thread with its own event loop."""

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="possim-host", daemon=True)
        self.server: Any = None
        self.url = ""
        self.admin = _AdminProxy(self)

    def start(self) -> PossimHost:
        from acquirer.config import HostConfig
        from acquirer.host import HostServer

        self._thread.start()

        async def boot() -> str:
            self.server = HostServer(HostConfig(), self._db_path)
            return await self.server.listen("tcp://127.0.0.1:0")

        self.url = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(30)
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def register(self, tid: str, mid: str = MID, tmk: str = TMK) -> None:
        self.call(lambda: self.server.config.add_terminal(tid, mid, tmk))

    def clear(self) -> None:
        """Forget every terminal's session and policy changes (ledger rows stay, keyed by terminal id)."""
        self.call(self.server.admin.clear_maintenance)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def possim_host(request: pytest.FixtureRequest) -> Iterator[PossimHost | None]:
    """The session's reference host, or None when --possim-host names an external one."""
    if request.config.getoption("possim_host"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="possim-host-") as tmp:
        host = PossimHost(str(Path(tmp) / "host.sqlite")).start()
        try:
            yield host
        finally:
            host.stop()


@pytest.fixture
def possim_make_terminal(request: pytest.FixtureRequest, possim_host: PossimHost | None,
                         tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: `possim_make_terminal(**TerminalConfig overrides)` -> a terminal (not yet powered on)."""
    from terminal.chaos import FaultSet
    from terminal.config import TerminalConfig
    from terminal.core import Terminal

    made: list[Any] = []
    if possim_host is not None:
        possim_host.clear()

    def make(**overrides: Any) -> Any:
        if possim_host is None:
            url = request.config.getoption("possim_host")
            tid = overrides.pop("tid", request.config.getoption("possim_tid") or "10000001")
            mid = overrides.pop("mid", request.config.getoption("possim_mid"))
            tmk = overrides.pop("tmk", request.config.getoption("possim_tmk"))
        else:
            url, tid = possim_host.url, overrides.pop("tid", f"{next(_TIDS):08d}")
            mid, tmk = overrides.pop("mid", MID), overrides.pop("tmk", TMK)
            possim_host.register(tid, mid, tmk)
        hardware = {"sign_after_s": 0.01, **overrides.pop("hardware", {})}
        settings = dict(tid=tid, mid=mid, tmk=tmk, connect=url, journal=str(tmp_path / f"{tid}.sqlite"),
                        reply_timeout=5.0, hardware=hardware)
        settings.update(overrides)
        term = Terminal(TerminalConfig(**settings))
        term.channel.faults = FaultSet()
        made.append(term)
        return term

    yield make
    for term in made:
        term.journal.close()


@pytest.fixture
async def possim_terminal(possim_make_terminal: Callable[..., Any]) -> Any:
    """A powered-on, signed-in terminal against the session's host."""
    term = possim_make_terminal()
    await term.power_on()
    result = await term.sign_in()
    if not result.ok:
        pytest.fail(f"possim terminal could not sign in: {result.message} (rc {result.rc})")
    yield term
    await term.shut_down()


@pytest.fixture
def possim_faults(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An empty FaultPlan; apply it to a terminal in the test. Anything it armed is cleared afterwards."""
    from terminal.faultplan import FaultPlan

    plan = FaultPlan()
    yield plan
    if "possim_terminal" in request.fixturenames:
        plan.clear(request.getfixturevalue("possim_terminal"))


@pytest.fixture
def possim_clock() -> Callable[[], float]:
    """The running loop's clock: virtual under @pytest.mark.looptime."""
    return lambda: asyncio.get_running_loop().time()
