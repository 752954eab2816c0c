"""Display, keypad, signature pad and the Hardware bundle (profile, faults, fleet memory)."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
import zlib

import pytest

from terminal.hardware import (
    CardReadError,
    Display,
    Hardware,
    HardwareProfile,
    Keypad,
    LazyRandom,
    PrinterError,
    SignaturePad,
    named_card,
    transaction_receipt,
)
from terminal.hardware.signature_pad import signature_png


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Display ---------------------------------------------------------------------------------------


def test_display_shows_lines_and_keeps_a_bounded_timed_history():
    clock = FakeClock()
    display = Display(clock=clock, history_size=3)
    assert display.lines == () and display.history == []
    display.show("SALE", "RMB 12.34", "APPROVED")
    assert display.lines == ("SALE", "RMB 12.34", "APPROVED")
    assert display.shows("approved")
    for i in range(4):
        clock.advance(1)
        display.show(f"screen {i}")
    assert [lines for _, lines in display.history] == [("screen 1",), ("screen 2",), ("screen 3",)]
    assert [t for t, _ in display.history] == [2.0, 3.0, 4.0]
    assert display.ever_showed("SCREEN 2") and not display.ever_showed("APPROVED")
    with pytest.raises(TypeError):
        display.show(12.34)
    for i in range(4, 11):  # round the ring twice more: still the last three, oldest first
        clock.advance(1)
        display.show(f"screen {i}")
    assert display.history == [(9.0, ("screen 8",)), (10.0, ("screen 9",)), (11.0, ("screen 10",))]
    blind = Display(clock=clock, history_size=0)
    blind.show("X")
    assert blind.lines == ("X",) and blind.history == [] and not blind.ever_showed("X")


# Keypad --------------------------------------------------------------------------------------


def test_keypad_press_queue_sync_api():
    keypad = Keypad(clock=FakeClock(5.0))
    assert keypad.get_nowait() is None and keypad.pending == 0
    keypad.enter("12.34")
    keypad.press("confirm")
    events = keypad.drain()
    assert [e.key for e in events] == ["1", "2", ".", "3", "4", "confirm"]
    assert all(e.kind == "press" and e.at == 5.0 for e in events)
    with pytest.raises(ValueError, match="unknown key 'enter'"):
        keypad.press("enter")


def test_holding_confirm_three_seconds_requests_diagnostics():
    keypad = Keypad(clock=FakeClock())
    assert keypad.hold("confirm", 2.9).kind == "press"
    event = keypad.hold("confirm", 3.0)
    assert event.kind == "diagnostics" and event.key == "confirm" and event.seconds == 3.0
    assert keypad.hold("cancel", 5).kind == "hold"
    assert [e.kind for e in keypad.drain()] == ["press", "diagnostics", "hold"]


def test_hold_measured_on_the_clock():
    clock = FakeClock()
    keypad = Keypad(clock=clock)
    keypad.key_down("confirm")
    clock.advance(3.2)
    event = keypad.key_up("confirm")
    assert event.kind == "diagnostics" and event.seconds == pytest.approx(3.2)
    with pytest.raises(ValueError, match="not held"):
        keypad.key_up("confirm")


@pytest.mark.looptime
async def test_driver_awaits_key_events_and_a_held_confirm_on_virtual_time():
    loop = asyncio.get_running_loop()
    keypad = Keypad(clock=loop.time)
    waiter = asyncio.ensure_future(keypad.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    keypad.key_down("confirm")
    await asyncio.sleep(3)
    keypad.key_up("confirm")
    event = await asyncio.wait_for(waiter, 1)
    assert event.kind == "diagnostics"


# Signature pad -------------------------------------------------------------------------------


def test_customer_signs_after_the_configured_time():
    pad = SignaturePad(rng=random.Random(7), sign_after_s=4)
    result = pad.capture(timeout_s=60)
    assert result.captured and result.status == "captured"
    assert result.elapsed_s == 4
    assert result.image.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(result.image) <= 512  # fits field 62 of the e-signature upload
    assert pad.captures == 1
    again = SignaturePad(rng=random.Random(7), sign_after_s=4).capture(timeout_s=60)
    assert again.image == result.image  # deterministic for a seed


def test_signature_png_is_a_valid_image():
    png = signature_png(random.Random(1))
    assert png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    idat_len = int.from_bytes(png[33:37], "big")
    assert png[37:41] == b"IDAT"
    raw = zlib.decompress(png[41 : 41 + idat_len])
    assert len(raw) == height * (1 + width // 8)
    assert png.endswith(b"IEND\xaeB`\x82")


def test_signature_timeout_fault():
    pad = SignaturePad(rng=random.Random(1))
    pad.faults["timeout"].arm(count=1)
    result = pad.capture(timeout_s=30)
    assert result.status == "timed_out" and not result.captured
    assert result.elapsed_s == 30 and result.image is None
    assert pad.timeouts == 1
    assert pad.capture(timeout_s=30).captured  # the next customer signs


def test_slow_signer_and_configured_behaviours_time_out_or_refuse():
    assert SignaturePad(rng=random.Random(1), sign_after_s=90).capture(60).status == "timed_out"
    assert SignaturePad(rng=random.Random(1), behaviour="ignore").capture(60).status == "timed_out"
    refused = SignaturePad(rng=random.Random(1), behaviour="refuse").capture(60)
    assert refused.status == "refused" and refused.image is None
    pad = SignaturePad(rng=random.Random(1))
    pad.faults["refuse"].arm(always=True)
    assert pad.capture(60).status == "refused" and pad.refusals == 1
    with pytest.raises(ValueError):
        SignaturePad(rng=random.Random(1), behaviour="sulk")


@pytest.mark.looptime
async def test_async_capture_takes_virtual_time():
    loop = asyncio.get_running_loop()
    pad = SignaturePad(rng=random.Random(1))
    pad.faults["timeout"].arm(count=1)
    start = loop.time()
    result = await pad.acapture(timeout_s=60)
    assert result.status == "timed_out"
    assert loop.time() - start == pytest.approx(60)


# Hardware bundle -----------------------------------------------------------------------------


def test_bundle_from_profile_dict_wires_devices_to_battery_and_clock():
    clock = FakeClock()
    hw = Hardware(
        {"seed": 3, "paper_lines": 500, "battery_level": 60.0, "wear_rate": 0.001, "idle_drain_per_hour": 1.0},
        clock=clock,
    )
    assert hw.profile.paper_lines == 500 and hw.printer.paper_left == 500
    assert hw.reader.wear_rate == 0.001
    hw.reader.read(named_card("approved"), "swipe")
    assert hw.battery.level < 60.0
    clock.advance(3600)
    assert hw.battery.status().level == pytest.approx(59.0 - hw.battery.op_cost("swipe"))
    diag = hw.diagnostics()
    assert diag["reader"]["reads"] == 1 and diag["printer"]["paper_left"] == 500
    with pytest.raises(ValueError, match="unknown hardware settings"):
        Hardware({"paper_length": 5}, clock=clock)


def test_same_seed_same_behaviour():
    def run(seed: int) -> list[str]:
        hw = Hardware(HardwareProfile(seed=seed), clock=FakeClock())
        hw.fault("reader.read_error").arm(probability=0.3)
        out = []
        for _ in range(40):
            try:
                out.append(hw.reader.read(named_card("approved"), "chip").icc.hex())
            except CardReadError:
                out.append("error")
        return out

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_fm12_no_receipt_then_reprint_marked_reprint():
    from datetime import datetime

    from terminal.hardware import ReceiptData
    from terminal.hardware.receipts import as_reprint

    hw = Hardware(clock=FakeClock())
    receipt = transaction_receipt(
        ReceiptData("SHOP", "898100012340001", "10000001", "SALE", 1234, datetime(2025, 1, 1), "6222020000000015")
    )
    hw.fault("printer.out_of_paper").arm(count=1, param=8)
    with pytest.raises(PrinterError) as err:
        hw.printer.print(receipt)
    hw.display.show("PRINT FAILED", err.value.message)
    assert hw.printer.printed == [] and hw.display.shows("out of paper")
    hw.printer.load_paper()
    hw.printer.print(as_reprint(receipt))
    assert len(hw.printer.printed) == 1 and "REPRINT" in hw.printer.printed[0]


def test_a_fleet_of_terminals_is_cheap_in_memory():
    profile = HardwareProfile()
    clock = FakeClock()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fleet = [Hardware(profile, clock=clock, seed=i) for i in range(1000)]  # each its own (lazy) rng
        per_terminal = (tracemalloc.get_traced_memory()[0] - before) / len(fleet)
    finally:
        tracemalloc.stop()
    assert per_terminal < 2_000, per_terminal  # bytes; a random.Random each would add ~2.9 KB more
    for hw in fleet[:3]:
        assert hw.printer.printed == [] and hw.keypad.pending == 0


def test_each_terminal_draws_its_own_seeded_sequence_made_on_the_first_draw():
    hw = Hardware(HardwareProfile(seed=7), clock=FakeClock())
    other = Hardware(HardwareProfile(seed=7), clock=FakeClock())
    assert isinstance(hw.rng, LazyRandom) and "seed=7" in repr(hw.rng)
    expected = random.Random(7)
    assert [hw.rng.getrandbits(64) for _ in range(3)] == [expected.getrandbits(64) for _ in range(3)]
    assert "drawn" in repr(hw.rng) and isinstance(hw.rng.real, random.Random)
    assert other.rng.getrandbits(64) == random.Random(7).getrandbits(64)  # not disturbed by hw's draws
    assert Hardware(clock=FakeClock(), seed=3).rng.random() == random.Random(3).random()


def test_devices_an_idle_terminal_does_not_use_are_built_on_first_use_and_bad_settings_still_fail_early():
    hw = Hardware(HardwareProfile(seed=4), clock=FakeClock())
    assert (hw._reader, hw._printer, hw._keypad, hw._signature_pad) == (None, None, None, None)
    hw.display.show("READY")
    hw.battery.update()
    assert hw._printer is None and hw.printer is hw.printer and hw.reader.ifd_serial == hw.profile.serial
    late = Hardware(HardwareProfile(seed=4), clock=FakeClock())
    assert late.signature_pad.capture(60).image == hw.signature_pad.capture(60).image  # same draws, built later
    for bad in ({"sign_after_s": -1}, {"signature_behaviour": "sulk"}, {"paper_lines": -1}, {"wear_rate": 2.0}):
        with pytest.raises(ValueError):
            Hardware(bad, clock=FakeClock())


def test_a_default_profile_shares_its_op_costs():
    from terminal.hardware.battery import DEFAULT_OP_COSTS

    assert HardwareProfile().op_costs is DEFAULT_OP_COSTS
    assert HardwareProfile.from_dict({"seed": 1}).op_costs is DEFAULT_OP_COSTS
    hw = Hardware(HardwareProfile(op_costs={"swipe": 1.0}), clock=FakeClock())
    assert hw.battery.status().level == 100.0 and hw.profile.op_costs == {"swipe": 1.0}


def test_bundle_from_terminal_config():
    from terminal.config import TerminalConfig

    config = TerminalConfig(seed=5, hardware={"paper_lines": 300, "sign_after_s": 2.0})
    hw = Hardware.from_config(config, clock=FakeClock())
    assert hw.profile.seed == 5 and hw.printer.paper_left == 300
    assert hw.signature_pad.sign_after_s == 2.0
    assert hw.profile.serial == config.serial[-8:]
    with pytest.raises(ValueError, match="unknown hardware settings"):
        Hardware.from_config(TerminalConfig(hardware={"papr": 1}), clock=FakeClock())
