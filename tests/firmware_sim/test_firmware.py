"""Firmware: profiles, signed images, and a safe update under every fault the issue names."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import pytest

from firmware_sim.image import FirmwareError, build_image, verify
from firmware_sim.profiles import PROFILES, get_profile, parse_version
from terminal.chaos import MessageFault
from terminal.cli import main
from terminal.core import PowerLost

from ..conftest import TID


def test_profiles_of_the_source_documents():
    assert {"2.1.5", "2.3.6", "3.0.2", "3.0.8"} <= set(PROFILES)
    assert "settlement-funds-pending" in get_profile("2.1.5").defects
    assert get_profile("3.0.8").defects == ()
    assert parse_version("2.3.6") < parse_version("3.0.2") < parse_version("3.0.8")
    assert get_profile("9.9.9").known is False


def test_images_verify_and_tampering_is_named():
    image = build_image("3.0.8", size=2048)
    verify(image)
    with pytest.raises(FirmwareError, match="SHA-256"):
        verify(replace(image, payload=b"\x00" + image.payload[1:]))
    with pytest.raises(FirmwareError, match="size"):
        verify(replace(image, payload=image.payload[:-1]))
    with pytest.raises(FirmwareError, match="unsigned"):
        verify(build_image("3.0.8", size=2048, signed=False))
    with pytest.raises(FirmwareError, match="signature"):
        verify(replace(image, version="3.0.9"))  # the signature covers the header


def test_firmware_list_json_contract(capsys):
    assert main(["firmware", "list", "--json"]) == 0
    items = {i["version"]: i for i in json.loads(capsys.readouterr().out)}
    assert {"2.1.5", "2.3.6", "3.0.2", "3.0.8"} <= set(items)
    for item in items.values():
        assert len(item["sha256"]) == 64 and item["signed"] is True and isinstance(item["defects"], list)


async def test_below_minimum_terminal_is_refused_updates_and_signs_in(make_terminal, host):
    host.admin.set_min_firmware("3.0.2")
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    refused = await term.sign_in()
    assert refused.rc == "58" and any("FIRMWARE UPDATE REQUIRED" in line for line in refused.display)
    update = await term.update_firmware()
    assert update.ok and term.firmware == "3.0.8"
    assert (await term.sign_in()).ok
    assert host.admin.session(TID)["firmware"] == "3.0.8"  # the new version is reported at sign-in


async def test_link_drop_mid_download_resumes_where_it_stopped(make_terminal, host):
    term = make_terminal(firmware="2.3.6", reply_timeout=0.3)
    await term.power_on()
    term.channel.faults.add(MessageFault("drop", direction="rx", mti="0810", nth=6))  # the 5th chunk's reply
    first = await term.update_firmware()
    assert not first.ok and term.firmware == "2.3.6"
    saved = term._slots().download["offset"]
    assert saved == 4 * 480  # four verified chunks kept
    chunks_before = sum(1 for r in host.admin.transactions())  # (chunks are not ledger rows; sanity only)
    second = await term.update_firmware()
    assert second.ok and term.firmware == "3.0.8" and chunks_before == 0


async def test_corrupt_chunk_is_rejected_and_fetched_again(make_terminal, host):
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    term.channel.faults.add(MessageFault("corrupt_data", direction="rx", mti="0810", nth=3))
    assert (await term.update_firmware()).ok
    assert [e for e in term.journal.events("firmware.chunk_rejected")]


async def test_bad_signature_is_refused(make_terminal, host):
    host.host.firmware.images["3.0.8"] = replace(build_image("3.0.8"), signature="00" * 64)
    term = make_terminal(firmware="2.3.6")
    await term.power_on()
    result = await term.update_firmware()
    assert not result.ok and "signature" in result.message and term.firmware == "2.3.6"


async def test_power_loss_during_install_boots_the_old_version(make_terminal, host, tmp_path):
    journal = str(tmp_path / "fw.sqlite")
    term = make_terminal(firmware="2.3.6", journal=journal)
    await term.power_on()

    def cut(step: str) -> None:
        if step == "firmware.install":
            raise PowerLost("power cut while installing")

    term.crash_hook = cut
    with contextlib.suppress(PowerLost):
        await term.update_firmware()
    term.journal.close()
    again = make_terminal(firmware="2.3.6", journal=journal)
    await again.power_on()
    assert again.firmware == "2.3.6" and again._slots().running == "2.3.6"
    assert (await again.update_firmware()).ok and again.firmware == "3.0.8"


async def test_failed_first_boot_rolls_back(make_terminal, host):
    term = make_terminal(firmware="3.0.2")
    await term.power_on()
    term.firmware_boot_fails = True
    result = await term.update_firmware()
    assert not result.ok and "rolled back" in result.message and term.firmware == "3.0.2"
    assert any("ROLLED BACK" in line for line in result.display)
