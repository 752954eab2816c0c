"""Serial links over real pty pairs and pyserial URLs: a full day, noise, unplug and replug."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol.framing import Frame, Header, Tpdu
from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.links import LinkUnavailable, open_link, parse_link_url
from terminal.links.serial import serial_settings
from terminal.scenarios import REGISTRY, run_scenario
from terminal.vport import PtyBridge, SocatPair, socat_available

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
FRAME = Frame(Tpdu(dest=6), Header(), b"\x08\x20" + bytes(8))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def serial_day(tmp_path):
    bridge = PtyBridge().start()
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    async with HostServer(config, str(tmp_path / "h.sqlite")) as host:
        await host.listen(f"serial://{bridge.paths[0]}?baud=115200")
        term = Terminal(TerminalConfig(tid=TID, mid=MID, tmk=TMK, connect=f"serial://{bridge.paths[1]}?baud=115200",
                                       journal=str(tmp_path / "t.sqlite"), reply_timeout=1.0,
                                       hardware={"sign_after_s": 0.01}))
        yield bridge, host, term
        await term.shut_down()
        term.journal.close()
    bridge.close()


async def test_a_full_day_over_a_pty_pair(serial_day):
    _, host, term = serial_day
    await term.power_on()
    assert (await term.sign_in()).ok
    assert (await term.sale(1234)).ok
    assert (await term.sale(500)).ok
    settle = await term.settle()
    assert settle.ok and settle.detail["result"] == "balanced" and term.state == "signed_out"
    assert host.admin.sign_offs(TID) == 1


async def test_line_noise_mid_stream_is_skipped(serial_day):
    bridge, host, term = serial_day
    await term.power_on()
    await term.sign_in()
    bridge.inject(1, b"\x00\x07\x13\x99noise\xff\x60\x60")  # garbage on the line towards the host
    assert (await term.sale(700)).ok
    bridge.inject(0, b"\xaa\x01\x02partial\x00\x30\x60\x00")  # and towards the terminal
    assert (await term.sale(800)).ok
    assert host.admin.totals(TID, term.journal.batch) == (1500, 1 + 1, 0, 0)


async def test_unplug_then_replug_sends_the_pending_reversal(serial_day):
    bridge, host, term = serial_day
    await term.power_on()
    await term.sign_in()
    bridge.pause()  # the cable is pulled just as the sale goes out
    lost = await term.sale(4200)
    assert not lost.ok and lost.detail["reversal"] == "pending"
    bridge.resume()  # plugged back in
    nxt = await term.sale(100)
    assert nxt.ok and term.journal.pending_reversals() == []
    assert host.admin.totals(TID, term.journal.batch) == (100, 1, 0, 0)


async def test_loop_url_carries_frames():
    link = await open_link("loop://")
    await link.send(FRAME)
    assert await asyncio.wait_for(link.receive(), 5) == FRAME
    await link.close()


async def test_socket_url_to_a_tcp_peer():
    received = asyncio.Queue()

    async def peer(reader, writer):
        received.put_nowait(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = await open_link(f"socket://127.0.0.1:{port}")
    await link.send(FRAME)
    data = await asyncio.wait_for(received.get(), 5)
    assert data[2:7] == FRAME.tpdu.to_bytes()
    await link.close()
    server.close()
    await server.wait_closed()


def test_bad_serial_parameters_are_named():
    for url, message in (("serial:///dev/x?baud=fast", "baud"), ("serial:///dev/x?parity=Q", "parity"),
                         ("serial:///dev/x?bytesize=9", "bytesize"), ("serial:///dev/x?colour=red", "unknown"),
                         ("serial://", "names no device")):
        with pytest.raises(ValueError, match=message):
            serial_settings(parse_link_url(url))


async def test_missing_device_and_busy_device_are_link_unavailable():
    with pytest.raises(LinkUnavailable, match="/dev/possim-nothing-here"):
        await open_link("serial:///dev/possim-nothing-here")
    bridge = PtyBridge().start()
    try:
        first = await open_link(f"serial://{bridge.paths[0]}")
        with pytest.raises(LinkUnavailable):
            await open_link(f"serial://{bridge.paths[0]}")  # exclusive: the second opener is refused
        await first.close()
    finally:
        bridge.close()


@pytest.mark.skipif(not socat_available(), reason="socat not installed (CI installs it)")
async def test_socat_pair_carries_frames():
    pair = await SocatPair().start()
    try:
        a, b = await open_link(f"serial://{pair.paths[0]}"), await open_link(f"serial://{pair.paths[1]}")
        await a.send(FRAME)
        assert await asyncio.wait_for(b.receive(), 5) == FRAME
        await a.close()
        await b.close()
    finally:
        await pair.close()


async def test_same_scenario_passes_over_tcp_and_serial():
    for transport in ("tcp", "serial"):
        result = await run_scenario(REGISTRY["FM-03"], seed=2, transport=transport)
        assert result.passed, (transport, result.error)


def test_possim_vport_prints_two_paths_and_cleans_up(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "terminal", "vport", "--no-socat", "--link-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        paths = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert all(Path(p).exists() for p in paths)
        with open(paths[0], "rb", buffering=0):
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert not any(Path(p).exists() for p in paths)
