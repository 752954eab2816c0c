"""Terminal.update_firmware() drives firmware_sim.update.UpdateSession over the terminal's own link: what the
host is asked for (chunk offsets as the host's repository serves them), the journal events, the display and
the state, under link drops, corrupt chunks, refusals, power cuts and failed first boots."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from firmware_sim.messages import CHUNK
from terminal.chaos import MessageFault
from terminal.core import PowerLost

from .conftest import TID

JOURNALS = ["file", ":memory:"]


def served_offsets(host: Any, *, corrupt_at: int | None = None) -> list[int]:
    """Record the offset of every chunk the host's repository serves (the 371s that reached the host); the
    chunk at `corrupt_at` is served with a flipped byte every time (its field 59 CRC then does not match)."""
    repo = host.host.firmware
    offsets: list[int] = []
    serve = repo.chunk

    def chunk(version: str, offset: int, size: int | None = None) -> tuple[bytes, str]:
        offsets.append(offset)
        data, trailer = serve(version, offset, size)
        if offset == corrupt_at:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data, trailer

    repo.chunk = chunk
    return offsets


def image_size(host: Any) -> int:
    return host.host.firmware.image("3.0.8").size


def journal_of(kind: str, tmp_path: Any) -> str:
    return str(tmp_path / "fw-term.sqlite") if kind == "file" else ":memory:"


def cut_power_at(term: Any, point: str) -> Callable[[str], None]:
    def hook(step: str) -> None:
        if step == point:
            term.hw.battery.cut_power()  # _point() then finds the terminal unpowered: PowerLost
    return hook


async def signed_in(make_terminal: Callable[..., Any], firmware: str = "3.0.2") -> Any:
    term = make_terminal(firmware=firmware)
    await term.power_on()
    assert (await term.sign_in()).ok
    return term


def firmware_events(term: Any) -> list[str]:
    return [e["kind"] for e in term.journal.events(prefix="firmware.", limit=1000)]


# ----------------------------------------------------------------------------------------------
async def test_a_whole_update_journals_the_session_and_signs_the_terminal_out(make_terminal, host):
    terminal = await signed_in(make_terminal)
    offsets = served_offsets(host)
    old = terminal.firmware
    assert old != "3.0.8" and terminal.state == "ready" and terminal.keys is not None
    result = await terminal.update_firmware()
    assert result.ok and result.op == "update_firmware" and result.detail["firmware"] == "3.0.8"
    assert result.message == f"updated {old} -> 3.0.8"
    assert result.display[:3] == ["FIRMWARE UPDATED", f"{old} -> 3.0.8", "PLEASE SIGN IN"]
    assert offsets == list(range(0, image_size(host), CHUNK))  # every chunk once, in order
    assert terminal.state == "signed_out" and terminal.keys is None
    assert terminal.journal.identity()["signed_in"] == 0
    assert firmware_events(terminal) == ["firmware.download.started", "firmware.verified", "firmware.installed",
                                         "firmware.booted"]
    slots = terminal._slots()
    assert (slots.active, slots.running, slots.pending) == ("B", "3.0.8", None)
    assert (await terminal.sign_in()).ok and host.admin.session(TID)["firmware"] == "3.0.8"


async def test_an_up_to_date_terminal_asks_for_no_chunk(make_terminal, host):
    offsets = served_offsets(host)
    term = make_terminal(firmware="3.0.8")
    await term.power_on()
    result = await term.update_firmware()
    assert result.ok and result.rc == "25" and result.message == "no update available"
    assert result.display[:2] == ["FIRMWARE UP TO DATE", "3.0.8"] and term.state == "signed_out"
    assert offsets == [] and firmware_events(term) == ["firmware.up_to_date"]


@pytest.mark.parametrize("journal", JOURNALS)
async def test_a_link_drop_then_a_second_update_resumes_at_the_same_offset(make_terminal, host, tmp_path, journal):
    offsets = served_offsets(host)
    term = make_terminal(firmware="2.3.6", reply_timeout=0.3, journal=journal_of(journal, tmp_path))
    await term.power_on()
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0810", nth=6))  # the 5th chunk's reply
    first = await term.update_firmware()
    kept = 4 * CHUNK
    assert not first.ok and f"download interrupted at {kept} bytes" in first.message
    assert first.display[0] == "FIRMWARE UPDATE FAILED" and first.display[2] == "RUNNING 2.3.6"
    assert term.firmware == "2.3.6" and term.state == "signed_out"
    assert offsets == [0, CHUNK, 2 * CHUNK, 3 * CHUNK, kept]  # the host served the 5th; its reply was lost
    offsets.clear()
    second = await term.update_firmware()
    assert second.ok and term.firmware == "3.0.8"
    assert offsets == list(range(kept, image_size(host), CHUNK))  # nothing verified is fetched again
    resumed = term.journal.events("firmware.download.resumed")
    assert [(e["version"], e["offset"]) for e in resumed] == [("3.0.8", kept)]
    assert [e["check"] for e in term.journal.events("firmware.failed")] == ["link"]


async def test_a_download_resumes_after_the_terminal_restarts(make_terminal, host, tmp_path):
    offsets = served_offsets(host)
    journal = str(tmp_path / "restart.sqlite")
    term = make_terminal(firmware="2.3.6", reply_timeout=0.3, journal=journal)
    await term.power_on()
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0810", nth=4))  # the 3rd chunk's reply
    assert not (await term.update_firmware()).ok
    await term.shut_down()
    term.journal.close()
    offsets.clear()
    again = make_terminal(firmware="2.3.6", journal=journal)  # a new process over the same journal and slots
    await again.power_on()
    assert again._slots().offset == 2 * CHUNK
    assert (await again.update_firmware()).ok and again.firmware == "3.0.8"
    assert offsets[0] == 2 * CHUNK and len(offsets) == len(range(2 * CHUNK, image_size(host), CHUNK))


async def test_a_corrupt_chunk_is_asked_for_again_then_accepted(make_terminal, host):
    offsets = served_offsets(host)
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    term.channel.faults.add(MessageFault("corrupt_data", direction="rx", mti="0810", nth=3))  # chunk at 480
    result = await term.update_firmware()
    assert result.ok and term.firmware == "3.0.8"
    assert offsets[:4] == [0, CHUNK, CHUNK, 2 * CHUNK]
    rejected = term.journal.events("firmware.chunk_rejected")
    assert [(e["version"], e["offset"], e["attempt"]) for e in rejected] == [("3.0.8", CHUNK, 1)]
    assert "CRC-32" in rejected[0]["reason"]


async def test_a_chunk_corrupt_every_time_fails_after_the_retries_and_keeps_what_was_verified(make_terminal, host):
    offsets = served_offsets(host, corrupt_at=2 * CHUNK)
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    result = await term.update_firmware()
    assert not result.ok and "rejected 4 times" in result.message and term.firmware == "2.3.6"
    assert offsets == [0, CHUNK] + [2 * CHUNK] * 4  # the first try and max_chunk_retries (3) more
    assert term._slots().offset == 2 * CHUNK and term.state == "signed_out"
    assert len(term.journal.events("firmware.chunk_rejected")) == 4


async def test_a_refused_query_is_a_failure_not_up_to_date(make_terminal, host):
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    term.channel.faults.add(MessageFault("override_rc", direction="rx", mti="0810", nth=1, rc="96"))
    result = await term.update_firmware()
    assert not result.ok and result.rc == "96" and "refused" in result.message
    assert result.display[0] == "FIRMWARE UPDATE FAILED" and term.firmware == "2.3.6"


async def test_an_update_from_ready_that_fails_leaves_the_terminal_signed_in(make_terminal, host):
    terminal = await signed_in(make_terminal)
    terminal.channel.faults.add(MessageFault("override_rc", direction="rx", mti="0810", nth=2, rc="30"))
    result = await terminal.update_firmware()
    assert not result.ok and result.rc == "30"
    assert terminal.state == "ready" and terminal.keys is not None  # the old firmware, still signed in
    assert (await terminal.sale(100)).ok


@pytest.mark.parametrize("journal", JOURNALS)
async def test_a_power_cut_at_install_leaves_the_old_version_running_after_power_on(make_terminal, host, tmp_path,
                                                                                   journal):
    offsets = served_offsets(host)
    term = make_terminal(firmware="2.3.6", journal=journal_of(journal, tmp_path))
    await term.power_on()
    term.crash_hook = cut_power_at(term, "firmware.install")
    with pytest.raises(PowerLost):
        await term.update_firmware()
    assert term.state == "power_off"
    term.crash_hook = None
    assert (await term.power_on()).ok
    assert term.firmware == "2.3.6" and term._slots().running == "2.3.6" and term._slots().pending is None
    offsets.clear()
    result = await term.update_firmware()
    assert result.ok and term.firmware == "3.0.8"
    assert offsets == []  # the image was whole and verified before the cut: installed without fetching again
    assert firmware_events(term).count("firmware.download.resumed") == 1


async def test_a_power_cut_during_the_first_boot_rolls_back_at_power_on(make_terminal, host, tmp_path):
    journal = str(tmp_path / "boot.sqlite")
    term = make_terminal(firmware="2.3.6", journal=journal)
    await term.power_on()
    term.crash_hook = cut_power_at(term, "firmware.first_boot")
    with pytest.raises(PowerLost):
        await term.update_firmware()
    term.crash_hook = None
    assert (await term.power_on()).ok and term.firmware == "2.3.6"
    slots = term._slots()
    assert slots.pending is None and slots.last_rollback == {"version": "3.0.8",
                                                             "reason": "power lost during the first boot"}
    term.journal.close()
    again = make_terminal(firmware="2.3.6", journal=journal)  # the record on disk says the same
    await again.power_on()
    assert again.firmware == "2.3.6" and again._slots().last_rollback["version"] == "3.0.8"
    assert (await again.update_firmware()).ok and again.firmware == "3.0.8"


async def test_each_fault_point_goes_through_the_terminals_point_hook(make_terminal, host):
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    steps: list[str] = []
    term.crash_hook = steps.append
    assert (await term.update_firmware()).ok
    points = [s for s in steps if s.startswith("firmware.")]
    chunks = len(range(0, image_size(host), CHUNK))
    assert points == ["firmware.download"] * chunks + ["firmware.install", "firmware.first_boot"]


async def test_a_failed_first_boot_rolls_back_signs_out_and_a_later_update_succeeds(make_terminal, host):
    terminal = await signed_in(make_terminal)
    old = terminal.firmware
    terminal.firmware_boot_fails = True
    result = await terminal.update_firmware()
    assert not result.ok and "rolled back" in result.message and result.detail["firmware"] == old
    assert result.display[:3] == ["FIRMWARE ROLLED BACK", "3.0.8 FAILED TO BOOT", f"RUNNING {old}"]
    assert terminal.firmware == old and terminal.state == "signed_out" and terminal.keys is None
    slots = terminal._slots()
    assert slots.active == "A" and slots.pending is None and slots.last_rollback["version"] == "3.0.8"
    assert firmware_events(terminal)[-3:] == ["firmware.installed", "firmware.failed", "firmware.rolled_back"]
    terminal.firmware_boot_fails = False
    assert (await terminal.update_firmware()).ok and terminal.firmware == "3.0.8"


async def test_the_journal_holds_image_facts_only(make_terminal, host):
    terminal = await signed_in(make_terminal)
    terminal.channel.faults.add(MessageFault("corrupt_data", direction="rx", mti="0810", nth=2))
    assert (await terminal.update_firmware()).ok
    events = terminal.journal.events(prefix="firmware.", limit=1000)
    assert events and all(set(e["detail"]) <= {"version", "size", "offset", "sha256", "slot", "running", "reason",
                                                "attempt"} for e in events)
