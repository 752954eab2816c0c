"""Fixtures: the reference host on real loopback TCP, and terminals wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from terminal.chaos import FaultSet
from terminal.config import TerminalConfig

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Any]:
    """A reference host on 127.0.0.1 (ephemeral port) with terminal TID registered; `.url` is its link."""
    from acquirer.config import HostConfig
    from acquirer.host import HostServer

    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}", f"20000002:{MID}:{TMK}"])
    async with HostServer(config, str(tmp_path / "host.sqlite")) as server:
        server.url = await server.listen("tcp://127.0.0.1:0")
        yield server


@pytest.fixture
def make_terminal(tmp_path: Path, host: Any) -> Callable[..., Any]:
    """Build a terminal against `host`; keyword arguments override its TerminalConfig."""
    from terminal.core import Terminal

    made: list[Any] = []

    def factory(**overrides: Any) -> Any:
        hardware = {"sign_after_s": 0.01, **overrides.pop("hardware", {})}
        settings = dict(tid=TID, mid=MID, tmk=TMK, connect=host.url, journal=str(tmp_path / f"term{len(made)}.sqlite"),
                        reply_timeout=5.0, hardware=hardware)
        settings.update(overrides)
        terminal = Terminal(TerminalConfig(**settings))
        terminal.channel.faults = FaultSet(seed=1)
        made.append(terminal)
        return terminal

    yield factory
    for terminal in made:
        terminal.journal.close()


@pytest.fixture
async def terminal(make_terminal: Callable[..., Any]) -> AsyncIterator[Any]:
    """A powered-on, signed-in terminal."""
    term = make_terminal()
    await term.power_on()
    result = await term.sign_in()
    assert result.ok, result.message
    yield term
    await term.shut_down()
