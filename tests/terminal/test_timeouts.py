"""Timeouts on the virtual clock (looptime): a minute's reply timeout and a two-hour idle in milliseconds."""

from __future__ import annotations

import asyncio
import time

import pytest

from protocol.dialect import get_dialect
from terminal.channel import HostChannel
from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.dayend import Backoff, retry
from terminal.links import memory_pair


def silent_terminal(tmp_path, **overrides):
    """A terminal whose host receives every frame and never answers."""
    near, far = memory_pair()
    received: list[bytes] = []

    async def swallow():
        while True:
            frame = await far.receive()
            received.append(frame.payload)

    async def connector():
        return near

    config = TerminalConfig(journal=str(tmp_path / "t.sqlite"), **overrides)
    loop = asyncio.get_running_loop()
    channel = HostChannel("memory://host", dialect=get_dialect(), tpdu=config.tpdu, firmware=config.firmware,
                          clock=loop.time, connector=connector)
    term = Terminal(config, channel=channel, clock=loop.time)
    task = asyncio.create_task(swallow())
    return term, received, task


@pytest.mark.looptime
async def test_default_reply_timeout_is_sixty_seconds_of_loop_time(tmp_path):
    term, received, task = silent_terminal(tmp_path)
    await term.power_on()
    loop = asyncio.get_running_loop()
    started, wall = loop.time(), time.monotonic()
    result = await term.sign_in()
    assert not result.ok and "within 60s" in result.message
    assert loop.time() - started == pytest.approx(60, abs=0.5)
    assert time.monotonic() - wall < 5  # the minute passed on the virtual clock
    assert len(received) == 1 and received[0][:2] == b"\x08\x00"
    task.cancel()
    term.journal.close()


@pytest.mark.looptime
async def test_sign_off_retries_back_off_exponentially_on_the_loop_clock(tmp_path):
    term, received, task = silent_terminal(tmp_path, reply_timeout=30)
    await term.power_on()
    term.state = "ready"  # as if signed in: sign-off needs no MAC, so no keys are required
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await retry(term.sign_off, backoff=Backoff(base=60, cap=600, attempts=4, jitter=0))
    assert not result.ok and result.detail["attempts"] == 5
    # five 30 s timeouts plus waits of 60, 120, 240, 480 s
    assert loop.time() - started == pytest.approx(5 * 30 + 60 + 120 + 240 + 480, abs=1)
    assert [p[:2] for p in received] == [b"\x08\x20"] * 5
    assert len({p for p in received}) == 1  # the same journaled sign-off (same STAN) each time
    task.cancel()
    term.journal.close()


@pytest.mark.looptime
async def test_idle_for_follows_the_loop_clock(tmp_path):
    term, _, task = silent_terminal(tmp_path)
    await term.power_on()
    await asyncio.sleep(2 * 3600)
    assert term.idle_for() == pytest.approx(7200, abs=1)
    task.cancel()
    term.journal.close()
