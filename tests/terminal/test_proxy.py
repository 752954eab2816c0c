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


async def test_link_toxics_slicer_latency_and_limit_data(host, make_terminal):
    from terminal.faultplan import LinkToxic

    term = make_terminal()
    await term.power_on()
    await term.sign_in()
    term.channel.faults.add_toxic(LinkToxic("slicer", direction="upstream", bytes=7, latency_ms=1))
    term.channel.faults.add_toxic(LinkToxic("latency", direction="downstream", latency_ms=50))
    assert (await term.sale(300)).ok  # the host's framer reassembles a request sent 7 bytes at a time
    assert ("slicer", "tx", "?") in term.channel.faults.log
    term.channel.faults.clear()
    term.channel.faults.add_toxic(LinkToxic("limit_data", direction="upstream", bytes=10))
    term.config = term.config.with_overrides(reply_timeout=0.3)
    assert not (await term.echo()).ok  # the link closes once 10 bytes have gone up
    term.channel.faults.clear()
    assert (await term.echo()).ok  # and reconnects when the toxic is gone
    await term.shut_down()


async def test_a_down_link_toxic_at_the_proxy_lets_nothing_through(host, make_terminal):
    """`toxic = "down"` in a proxy's plan did nothing: the proxy had no case for it. Now an open connection
    is cut and new ones are closed at once, until the toxic is gone."""
    from terminal.faultplan import FaultPlan, LinkToxic

    async with ChaosProxy(host.url) as proxy:
        url = await proxy.listen("tcp://127.0.0.1:0")
        term = make_terminal(connect=url, reply_timeout=0.5)
        term.channel.faults = None
        await term.power_on()
        assert (await term.sign_in()).ok
        proxy.load_plan(FaultPlan(link=[LinkToxic("down")]))
        cut = await term.echo()  # on the connection that was open
        again = await term.echo()  # on a new one
        assert not cut.ok and not again.ok and cut.rc is None and again.rc is None
        assert ("down", "tx", "?") in proxy.faults.log and ("down", "connect", "?") in proxy.faults.log
        proxy.load_plan(FaultPlan())
        assert (await term.echo()).ok
        await term.shut_down()


def test_the_proxy_refuses_a_plan_with_device_or_host_entries(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    plan = tmp_path / "faults.toml"
    plan.write_text('[[message]]\naction = "drop"\nmti = "0210"\n[[device]]\npoint = "printer.out_of_paper"\n'
                    'count = 1\n')
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "terminal", "proxy", "--listen", "tcp://127.0.0.1:0", "--upstream",
                           "tcp://127.0.0.1:9", "--faults", str(plan)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert "[[device]] entries are not the proxy's to apply" in done.stderr
