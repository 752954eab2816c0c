"""Serial links, hardware-free: real pty pairs (the Python bridge, and socat when installed), pyserial URLs,
line noise, unplug and replug, busy devices, the host's reopen loop, `possim vport`, and a full day
terminal <-> host over serial and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import serial

from acquirer.config import HostConfig
from acquirer.host import HostServer
from protocol.framing import Frame, Header, Tpdu, encode_frame
from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.links import LinkClosed, LinkUnavailable, open_link, parse_link_url, serve_link
from terminal.links.serial import PolledSerialFrameLink, SerialFrameLink, describe_open_error, serial_settings
from terminal.scenarios import REGISTRY, run_scenario
from terminal.vport import PtyBridge, SocatPair, socat_available

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
ROOT = Path(__file__).resolve().parents[2]
WAIT = 5.0
needs_socat = pytest.mark.skipif(not socat_available(), reason="socat not installed (CI's .ci/run installs it)")
BACKENDS = ["bridge", pytest.param("socat", marks=needs_socat)]


def frame(n: int = 0, mti: bytes = b"\x08\x20") -> Frame:
    return Frame(Tpdu(dest=6), Header(), mti + n.to_bytes(8, "big"))


async def make_pair(backend: str, link_dir: str | None = None) -> PtyBridge | SocatPair:
    if backend == "socat":
        return await SocatPair().start(link_dir)
    return PtyBridge().start(link_dir)


async def unplug(pair: PtyBridge | SocatPair) -> None:
    if isinstance(pair, SocatPair):
        await pair.unplug()
    else:
        pair.unplug()


@pytest.fixture(params=BACKENDS)
async def pair(request):
    made = await make_pair(request.param)
    yield made
    await made.aclose()


async def recv(link, timeout: float = WAIT) -> Frame:
    return await asyncio.wait_for(link.receive(), timeout)


# -- frames over pty pairs ----------------------------------------------------------------------------


async def test_frames_both_ways_between_two_serial_links(pair):
    a = await open_link(f"serial://{pair.paths[0]}?baud=115200")
    b = await open_link(f"serial://{pair.paths[1]}?baud=115200")
    try:
        assert isinstance(a, SerialFrameLink) and a.peer == pair.paths[0]
        for n in range(5):
            await a.send(frame(n))
            await b.send(frame(100 + n, b"\x08\x30"))
        assert [await recv(b) for _ in range(5)] == [frame(n) for n in range(5)]
        assert [await recv(a) for _ in range(5)] == [frame(100 + n, b"\x08\x30") for n in range(5)]
        assert a.skipped == [] and b.skipped == []
        assert isinstance(a.modem_lines(), dict)  # a pty has no modem lines: {} rather than an error
    finally:
        await a.close()
        await b.close()


async def test_line_noise_mid_stream_is_skipped_and_reported(pair, caplog):
    a = await open_link(f"serial://{pair.paths[0]}")
    b = await open_link(f"serial://{pair.paths[1]}")
    try:
        await a.send(frame(1))
        assert await recv(b) == frame(1)
        with caplog.at_level(logging.WARNING, logger="possim.links.serial"):
            if isinstance(pair, PtyBridge):
                pair.inject(0, b"\x00\x07\x13\x99noise\xff\x60\x60")  # noise on the line towards b
                await a.send(frame(2))
            else:  # socat: the noise comes from a's side of the line, between two frames
                await a.send_bytes(b"\x00\x07\x13\x99noise\xff\x60\x60")
                await a.send(frame(2))
            await a.send(frame(3))
            assert await recv(b) == frame(2)
            assert await recv(b) == frame(3)
        assert b.skipped and b.skipped_bytes >= len(b"\x00\x07\x13\x99noise\xff")
        assert any("skipped" in r.getMessage() and pair.paths[1] in r.getMessage() for r in caplog.records)
    finally:
        await a.close()
        await b.close()


async def test_a_partial_frame_then_a_good_frame(pair):
    a = await open_link(f"serial://{pair.paths[0]}")
    b = await open_link(f"serial://{pair.paths[1]}")
    try:
        whole = encode_frame(frame(7))
        await a.send_bytes(whole[: len(whole) // 2])  # the sender died half way through a frame
        await a.send(frame(8))
        await a.send(frame(9))
        got = [await recv(b), await recv(b)]
        assert got[-1] == frame(9) and frame(8) in got
        # and the other way round, a truncated frame of noise-like length bytes
        await b.send_bytes(b"\x00\x30\x60\x00")
        await b.send(frame(10))
        assert await recv(a) == frame(10)
    finally:
        await a.close()
        await b.close()


async def test_bytes_far_side_does_not_read_are_dropped_not_stalling_the_bridge():
    bridge = PtyBridge(buffer_limit=4096).start()
    try:
        a = await open_link(f"serial://{bridge.paths[0]}")
        for n in range(10000):  # ~200 KB towards a side nobody reads
            await a.send(frame(n))
        # the bridge still carries the other way: the loop is not stuck on a full pty
        b = await open_link(f"serial://{bridge.paths[1]}")
        await b.send(frame(1, b"\x08\x30"))
        assert await recv(a) == frame(1, b"\x08\x30")
        assert bridge.dropped > 0
        await a.close()
        await b.close()
    finally:
        bridge.close()


# -- unplug, replug, busy, missing --------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_unplug_is_link_closed_and_replug_works(backend, tmp_path):
    first = await make_pair(backend, str(tmp_path))
    a = await open_link(f"serial://{tmp_path}/possim-A")
    b = await open_link(f"serial://{tmp_path}/possim-B")
    waiting = asyncio.create_task(a.receive())
    await asyncio.sleep(0)
    await unplug(first)  # the devices vanish under both links
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(waiting, WAIT)
    assert a.closed
    with pytest.raises(LinkClosed):
        await recv(b)
    with pytest.raises(LinkClosed):
        await a.send(frame(1))
    await b.close()
    with pytest.raises(LinkUnavailable, match="no such device"):
        await open_link(f"serial://{tmp_path}/possim-A")
    second = await make_pair(backend, str(tmp_path))  # plugged back in (new ptys behind the same names)
    try:
        a = await open_link(f"serial://{tmp_path}/possim-A")
        b = await open_link(f"serial://{tmp_path}/possim-B")
        await a.send(frame(2))
        assert await recv(b) == frame(2)
        await a.close()
        await b.close()
    finally:
        await second.aclose()


async def test_missing_and_busy_devices_are_link_unavailable(pair):
    with pytest.raises(LinkUnavailable, match="/dev/possim-nothing-here: no such device"):
        await open_link("serial:///dev/possim-nothing-here")
    first = await open_link(f"serial://{pair.paths[0]}")
    try:
        with pytest.raises(LinkUnavailable, match=f"{pair.paths[0]} is busy"):
            await open_link(f"serial://{pair.paths[0]}")  # exclusive: the second opener is refused
        shared = await open_link(f"serial://{pair.paths[0]}?exclusive=0")  # unless it asks to share
        await shared.close()
    finally:
        await first.close()
    again = await open_link(f"serial://{pair.paths[0]}")  # the lock goes with the first link
    await again.close()


async def test_not_a_tty_and_permission_reasons():
    with pytest.raises(LinkUnavailable, match="not a serial device"):
        await open_link("serial:///dev/null")
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyS9: [Errno 13] Permission denied")
    assert "permission denied" in describe_open_error("/dev/ttyS9", denied)
    assert "/dev/ttyS9" in describe_open_error("/dev/ttyS9", denied)


# -- the host side: serve a device, reopen it with backoff -----------------------------------------------


async def test_serve_link_reopens_a_device_that_comes_back(tmp_path):
    served: asyncio.Queue = asyncio.Queue()

    async def echo(link):
        served.put_nowait(link.peer)
        while True:
            await link.send(await link.receive())

    url = f"serial://{tmp_path}/possim-A?baud=115200&backoff=0.05&max_backoff=0.2"
    server = await serve_link(url, echo)  # the device is not there yet: the server waits for it
    try:
        assert server.opens == 0 and "no such device" in server.last_error
        bridge = PtyBridge().start(str(tmp_path))
        assert await asyncio.wait_for(served.get(), WAIT) == f"{tmp_path}/possim-A"
        term = await open_link(f"serial://{tmp_path}/possim-B")
        await term.send(frame(1))
        assert await recv(term) == frame(1)
        await term.close()
        bridge.unplug()
        bridge = PtyBridge().start(str(tmp_path))  # replugged
        await asyncio.wait_for(served.get(), WAIT)
        assert server.opens == 2
        term = await open_link(f"serial://{tmp_path}/possim-B")
        await term.send(frame(2))
        assert await recv(term) == frame(2)
        await term.close()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
        bridge.close()
    assert not server.is_serving()


async def test_serve_link_rejects_a_bad_url_at_once():
    async def handler(link):  # pragma: no cover - never runs
        pass

    for url, message in (("serial:///dev/x?backoff=-1", "backoff"), ("serial:///dev/x?baud=0", "baud"),
                         ("serial:///dev/x?max_backoff=soon", "max_backoff")):
        with pytest.raises(ValueError, match=message):
            await serve_link(url, handler)


# -- pyserial URLs -----------------------------------------------------------------------------------


async def test_loop_url_carries_frames_and_a_cancelled_receive_loses_nothing():
    link = await open_link("loop://")
    try:
        assert isinstance(link, PolledSerialFrameLink)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.receive(), 0.1)  # a reply timeout while nothing is on the line
        await link.send(frame(1))
        await link.send(frame(2))
        assert await recv(link) == frame(1)
        assert await recv(link) == frame(2)
        assert link.modem_lines().keys() <= {"cts", "dsr", "ri", "cd"}
    finally:
        await link.close()
    with pytest.raises(LinkClosed):
        await link.receive()


async def test_socket_url_carries_frames_both_ways():
    echoed: asyncio.Queue = asyncio.Queue()

    async def peer(reader, writer):  # a serial-over-TCP server (ser2net-like) that echoes
        while data := await reader.read(100):
            echoed.put_nowait(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = await open_link(f"socket://127.0.0.1:{port}")
    try:
        await link.send(frame(3))
        assert await recv(link) == frame(3)
        assert (await asyncio.wait_for(echoed.get(), WAIT))[2:7] == frame(3).tpdu.to_bytes()
    finally:
        await link.close()
        server.close()
        await server.wait_closed()


async def test_socket_peer_going_away_is_link_closed():
    async def peer(reader, writer):
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = await open_link(f"socket://127.0.0.1:{port}")
    with pytest.raises(LinkClosed):
        await recv(link)
    server.close()
    await server.wait_closed()
    with pytest.raises(LinkUnavailable, match="refused"):
        await open_link(f"socket://127.0.0.1:{port}")


async def test_spy_url_writes_a_hex_trace(pair, tmp_path):
    trace = tmp_path / "spy.txt"
    a = await open_link(f"spy://{pair.paths[0]}?file={trace}")
    b = await open_link(f"serial://{pair.paths[1]}")
    try:
        await a.send(frame(0x1234))
        assert await recv(b) == frame(0x1234)
        await b.send(frame(0x55))
        assert await recv(a) == frame(0x55)
    finally:
        await a.close()
        await b.close()
    text = trace.read_text()
    assert "TX" in text and "RX" in text and "60 00 06" in text.upper().replace("  ", " ")


def test_bad_serial_parameters_are_named():
    for url, message in (("serial:///dev/x?baud=fast", "baud='fast' is not a number"),
                         ("serial:///dev/x?baud=-5", "baud=-5"),
                         ("serial:///dev/x?parity=Q", "parity='Q'"),
                         ("serial:///dev/x?bytesize=9", "bytesize='9'"),
                         ("serial:///dev/x?stopbits=3", "stopbits='3'"),
                         ("serial:///dev/x?rtscts=maybe", "rtscts='maybe'"),
                         ("serial:///dev/x?colour=red", "unknown serial parameter.*colour"),
                         ("serial://", "names no device"),
                         ("serial://dev/ttyUSB0", "three slashes")):
        with pytest.raises(ValueError, match=message):
            serial_settings(parse_link_url(url))
    target, settings = serial_settings(parse_link_url("serial:///dev/ttyUSB0?baud=115200&parity=e&stopbits=2"))
    assert target == "/dev/ttyUSB0" and settings["baudrate"] == 115200 and settings["parity"] == "E"
    assert settings["stopbits"] == 2 and settings["exclusive"] is True
    target, settings = serial_settings(parse_link_url("spy:///dev/ttyUSB0?file=x.txt&color"))
    assert target == "spy:///dev/ttyUSB0?file=x.txt&color" and "exclusive" not in settings


async def test_bad_urls_are_value_errors_before_any_open():
    with pytest.raises(ValueError, match="parity"):
        await open_link("serial:///dev/possim-nothing-here?parity=X")
    with pytest.raises(LinkUnavailable):
        await open_link("rfc2217://127.0.0.1:1")  # nothing listens on port 1


# -- a terminal and the host over serial and over TCP --------------------------------------------------


@pytest.fixture(params=["tcp", "bridge", pytest.param("socat", marks=needs_socat)])
async def day(request, tmp_path):
    pair = None
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    async with HostServer(config, str(tmp_path / "h.sqlite")) as host:
        if request.param == "tcp":
            url = await host.listen("tcp://127.0.0.1:0")
        else:
            pair = await make_pair(request.param)
            await host.listen(f"serial://{pair.paths[0]}?baud=115200&backoff=0.05&max_backoff=0.5")
            url = f"serial://{pair.paths[1]}?baud=115200"
        term = Terminal(TerminalConfig(tid=TID, mid=MID, tmk=TMK, connect=url, journal=str(tmp_path / "t.sqlite"),
                                       reply_timeout=2.0, hardware={"sign_after_s": 0.01}))
        try:
            yield pair, host, term
        finally:
            await term.shut_down()
            term.journal.close()
    if pair is not None:
        await pair.aclose()


async def test_a_full_day_sign_in_sales_settlement_sign_off(day):
    _, host, term = day
    await term.power_on()
    assert (await term.sign_in()).ok
    assert (await term.sale(1234)).ok
    assert (await term.sale(500)).ok
    assert (await term.balance()).ok
    settle = await term.settle()
    assert settle.ok and settle.detail["result"] == "balanced", settle
    assert term.state == "signed_out"
    assert host.admin.sign_offs(TID) == 1


async def test_noise_mid_stream_between_terminal_and_host(day):
    pair, host, term = day
    if not isinstance(pair, PtyBridge):
        pytest.skip("noise is injected by the Python bridge")
    await term.power_on()
    await term.sign_in()
    pair.inject(1, b"\x00\x07\x13\x99noise\xff\x60\x60")  # garbage on the line towards the host
    assert (await term.sale(700)).ok
    pair.inject(0, b"\xaa\x01\x02partial\x00\x30\x60\x00")  # and towards the terminal
    assert (await term.sale(800)).ok
    assert host.admin.totals(TID, term.journal.batch) == (1500, 2, 0, 0)


async def test_cable_pulled_during_a_sale_then_the_pending_reversal_goes_first(day):
    pair, host, term = day
    if not isinstance(pair, PtyBridge):
        pytest.skip("the cable is pulled by the Python bridge")
    await term.power_on()
    await term.sign_in()
    pair.pause()  # the cable is pulled just as the sale goes out
    lost = await term.sale(4200)
    assert not lost.ok and lost.detail["reversal"] == "pending"
    pair.resume()  # plugged back in
    nxt = await term.sale(100)
    assert nxt.ok and term.journal.pending_reversals() == []
    assert host.admin.totals(TID, term.journal.batch) == (100, 1, 0, 0)


async def test_host_device_unplugged_and_replugged_mid_day(tmp_path):
    """The host's device vanishes (EIO) and comes back under the same name; the day goes on."""
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    bridge = PtyBridge().start(str(tmp_path))
    async with HostServer(config, str(tmp_path / "h.sqlite")) as host:
        await host.listen(f"serial://{tmp_path}/possim-A?backoff=0.05&max_backoff=0.2")
        term = Terminal(TerminalConfig(tid=TID, mid=MID, tmk=TMK, connect=f"serial://{tmp_path}/possim-B",
                                       journal=str(tmp_path / "t.sqlite"), reply_timeout=2.0,
                                       hardware={"sign_after_s": 0.01}))
        try:
            await term.power_on()
            assert (await term.sign_in()).ok
            assert (await term.sale(300)).ok
            bridge.unplug()
            bridge = PtyBridge().start(str(tmp_path))
            server = host._servers[0]
            for _ in range(100):  # bounded: the server reopens within its backoff
                if server.opens >= 2:
                    break
                await asyncio.sleep(0.05)
            assert server.opens >= 2
            sale = await term.sale(400)
            if not sale.ok:  # the terminal's own side saw EIO on the sale: its next operation reopens
                sale = await term.sale(400)
            assert sale.ok
            assert (await term.settle()).ok
            assert host.admin.sign_offs(TID) == 1
        finally:
            await term.shut_down()
            term.journal.close()
    bridge.close()


async def test_same_scenario_passes_over_tcp_and_serial():
    for transport in ("tcp", "serial"):
        result = await run_scenario(REGISTRY["FM-03"], seed=2, transport=transport)
        assert result.passed, (transport, result.error)


# -- possim vport ------------------------------------------------------------------------------------


def read_lines(proc: subprocess.Popen, count: int, timeout: float = 20.0) -> list[str]:
    """`count` lines of the child's stdout, within `timeout`; the child's stderr in the failure if not."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(proc.stdout.readline()) for _ in range(count)], daemon=True).start()
    got = []
    try:
        for _ in range(count):
            got.append(lines.get(timeout=timeout).strip())
            if not got[-1]:
                raise queue.Empty
    except queue.Empty:
        proc.kill()
        pytest.fail(f"possim vport printed {got!r}; exit {proc.wait(10)}; stderr: {proc.stderr.read()}")
    return got


@pytest.mark.parametrize("backend", BACKENDS)
def test_possim_vport_prints_two_openable_paths_and_cleans_up_on_sigterm(backend, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "terminal", "vport", "--link-dir", str(tmp_path)]
    if backend == "bridge":
        argv.append("--no-socat")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    paths: list[str] = []
    try:
        paths = read_lines(proc, 2)
        assert paths == [str(tmp_path / "possim-A"), str(tmp_path / "possim-B")]
        a = os.open(paths[0], os.O_RDWR | os.O_NOCTTY)
        b = os.open(paths[1], os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(a, b"\x00\x01\xff\r\n\x03")  # raw: every byte through, unchanged, no echo
            got = b""
            while len(got) < 6 and select.select([b], [], [], WAIT)[0]:
                got += os.read(b, 100)
            assert got == b"\x00\x01\xff\r\n\x03"
            assert select.select([a], [], [], 0.1)[0] == []
        finally:
            os.close(a)
            os.close(b)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    assert code == 0, proc.stderr.read()
    assert paths and not any(os.path.lexists(p) for p in paths)


def test_possim_vport_json_and_sigint(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "terminal", "vport", "--no-socat", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(read_lines(proc, 1)[0])
        assert info["backend"] == "bridge" and info["devices"] == info["ptys"] and len(info["devices"]) == 2
        assert all(Path(p).exists() for p in info["devices"])
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
    assert code == 0


def test_possim_host_and_terminal_run_a_day_across_a_possim_vport_pair(tmp_path):
    """The documented commands (docs/serial.md), as processes: vport, host on A, terminal on B."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    possim = [sys.executable, "-m", "terminal"]
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        procs.append(subprocess.Popen([*possim, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env, cwd=tmp_path))
        return procs[-1]

    try:
        vport = start("vport", "--link-dir", str(tmp_path))
        a, b = read_lines(vport, 2)
        host = start("host", "--listen", f"serial://{a}?baud=115200", "--terminal", f"{TID}:{MID}:{TMK}",
                     "--db", "host.sqlite")
        assert read_lines(host, 1) == [f"serial://{a}?baud=115200"]  # printed once the device is open
        for ops in (["sign-in", "sale", "12.34", "sale", "5.00", "settle"], ["sign-in", "sale", "1.00", "sign-off"]):
            run = subprocess.run([*possim, "terminal", "--connect", f"serial://{b}?baud=115200", "--tid", TID,
                                  "--mid", MID, "--tmk", TMK, "--journal", "t.sqlite", "--json", *ops],
                                 capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
            assert run.returncode == 0, run.stdout + run.stderr
            results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
            assert [r["ok"] for r in results] == [True] * len(results) and results[-1]["state"] == "signed_out"
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in reversed(procs):
            try:
                codes.append(proc.wait(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(10))
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    assert not os.path.lexists(a) and not os.path.lexists(b)
