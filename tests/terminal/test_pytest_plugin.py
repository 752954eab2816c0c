"""The possim pytest plugin, exercised the way a QA team would: a test file run with pytester."""

from __future__ import annotations

EXAMPLE = '''
import pytest
from terminal.chaos import MessageFault


async def test_sale(possim_terminal, possim_host):
    result = await possim_terminal.sale(1234)
    assert result.ok and result.rc == "00"
    assert possim_host.admin.totals(possim_terminal.tid, possim_terminal.journal.batch) == (1234, 1, 0, 0)


async def test_lost_reply_is_reversed(possim_terminal, possim_faults, possim_host):
    possim_terminal.config = possim_terminal.config.with_overrides(reply_timeout=0.3)
    possim_faults.message.append(MessageFault("drop", direction="rx", mti="0210", count=1))
    possim_faults.apply(possim_terminal)
    result = await possim_terminal.sale(1234)
    assert result.detail["reversal"] == "sent"
    assert possim_host.admin.totals(possim_terminal.tid, possim_terminal.journal.batch) == (0, 0, 0, 0)


async def test_each_test_has_its_own_terminal(possim_make_terminal):
    a, b = possim_make_terminal(), possim_make_terminal()
    assert a.tid != b.tid


@pytest.mark.looptime
async def test_virtual_clock(possim_clock):
    import asyncio
    start = possim_clock()
    await asyncio.sleep(7200)
    assert possim_clock() - start == pytest.approx(7200)
'''


def test_plugin_fixtures_in_a_user_suite(pytester):
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user_suite=EXAMPLE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:xdist")
    result.assert_outcomes(passed=4)


def test_plugin_options_are_registered(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--possim-host=URL*"])
