"""The chaos proxy between our terminal and an unmodified host reproduces FM-03."""

from __future__ import annotations

from terminal.chaos import MessageFault
from terminal.proxy import ChaosProxy

from .conftest import TID


async def test_proxy_drops_the_approval_and_the_terminal_reverses(host, make_terminal):
    async with ChaosProxy(host.url) as proxy:
        url = await proxy.listen("tcp://127.0.0.1:0")
        term = make_terminal(connect=url, reply_timeout=0.5)
        term.channel.faults = None  # all faults come from the proxy
        await term.power_on()
        assert (await term.sign_in()).ok
        proxy.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))  # changed at run time
        lost = await term.sale(4321)
        assert not lost.ok and lost.detail["reversal"] == "sent"
        txns = {t["stan"]: t["status"] for t in host.admin.transactions(TID)}
        assert txns[lost.stan] == "reversed"  # the host approved it, then reversed it: customer not charged
        assert host.admin.totals(TID, term.journal.batch) == (0, 0, 0, 0)
        assert (await term.sale(100)).ok
        assert proxy.faults.log == [("drop", "rx", "0210")]
        await term.shut_down()


async def test_proxy_corrupts_reply_macs(host, make_terminal):
    async with ChaosProxy(host.url) as proxy:
        url = await proxy.listen("tcp://127.0.0.1:0")
        term = make_terminal(connect=url, reply_timeout=0.5)
        term.channel.faults = None
        await term.power_on()
        await term.sign_in()
        proxy.faults.add(MessageFault("corrupt_mac", direction="rx", mti="0210", count=1))
        result = await term.sale(700)
        assert not result.ok and result.detail["reason"] == "A0"  # reply MAC failed: reversed with reason A0
        assert host.admin.totals(TID, term.journal.batch) == (0, 0, 0, 0)
        await term.shut_down()
