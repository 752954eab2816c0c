"""The update engine without a network: UpdateSession against FirmwareRepository.handle, back to back in memory
(the h11 ConnectionPair idea), with link drops, corrupted chunks, bad images and power cuts."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_sim.image import build_image
from firmware_sim.messages import CHUNK, Announcement, kind_of, parse_chunk_reply
from firmware_sim.repository import FirmwareRepository
from firmware_sim.slots import Slots
from firmware_sim.update import LinkDown, Request, State, UpdateSession, run
from protocol.message import Message

IDS = {"tid": "10000001", "mid": "898100012340001", "batch": "000001"}
SIZE = 5 * CHUNK + 100  # six chunks, the last one short


class PowerCut(Exception):
    pass


class Link:
    """The terminal's exchange function over an in-memory host, with toxics by chunk-request number."""

    def __init__(self, repo: FirmwareRepository, running: str, *, drop: set[int] = frozenset(),
                 corrupt: set[int] = frozenset()) -> None:
        self.repo, self.running, self.drop, self.corrupt = repo, running, set(drop), set(corrupt)
        self.stan = itertools.count(1)
        self.chunks = 0  # chunk requests seen
        self.offsets: list[int] = []

    def __call__(self, request: Request) -> Message:
        message = request.to_message(stan=f"{next(self.stan):06d}", **IDS)
        assert message.mti == "0800" and kind_of(message) == request.kind
        reply = self.repo.handle(message, running=self.running)
        if request.kind == "chunk":
            self.chunks += 1
            self.offsets.append(request.offset)
            if self.chunks in self.drop:
                raise LinkDown(f"link dropped at chunk request {self.chunks}")
            if self.chunks in self.corrupt:
                data = bytearray(reply[62])  # type: ignore[arg-type]
                data[0] ^= 0xFF
                reply[62] = bytes(data)
        return reply


@pytest.fixture
def repo() -> FirmwareRepository:
    return FirmwareRepository("3.0.8", {"3.0.8": build_image("3.0.8", size=SIZE)})


def slots_at(tmp_path: Path, factory: str = "2.3.6") -> Slots:
    return Slots.load(str(tmp_path / "fw.json"), factory_version=factory)


def fault_at(point: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == point:
            raise PowerCut(f"power cut at {name}")
    return hook


# ----------------------------------------------------------------------------------------------
def test_messages_carry_the_documented_fields(repo):
    query = Request("query").to_message(stan="000001", **IDS)
    assert query.mti == "0800" and query[60] == "00000001370" and 62 not in query
    reply = repo.handle(query, running="2.3.6")
    assert reply.mti == "0810" and reply[39] == "00"
    ann = Announcement.parse(reply[62])  # type: ignore[arg-type]
    assert (ann.version, ann.size, ann.chunk) == ("3.0.8", SIZE, CHUNK) and len(ann.signature) == 128
    assert repo.handle(query, running="3.0.8")[39] == "25"  # nothing newer
    chunk = Request("chunk", b"VER=3.0.8;OFF=480", "3.0.8", 480).to_message(stan="000002", **IDS)
    assert chunk[60] == "00000001371" and chunk[62] == b"VER=3.0.8;OFF=480"
    reply = repo.handle(chunk)
    assert reply[59].startswith("OFF=480;CRC=") and len(reply[62]) == CHUNK  # type: ignore[union-attr, arg-type]
    assert parse_chunk_reply(reply, 480) == repo.image("3.0.8").payload[480:960]
    for bad in (b"VER=3.0.8;OFF=999999", b"VER=9.9.9;OFF=0", b"OFF=0", b"\xff"):
        assert repo.handle(replace_62(chunk, bad))[39] == "30"


def replace_62(message: Message, value: bytes) -> Message:
    out = message.copy()
    out[62] = value
    return out


def test_a_whole_update_installs_into_the_inactive_slot_and_boots_it(tmp_path, repo):
    slots = slots_at(tmp_path)
    session = run(UpdateSession(slots), Link(repo, "2.3.6"))
    assert session.state is State.DONE and session.ok and session.running == "3.0.8"
    assert (slots.active, slots.active_version, slots.inactive_version) == ("B", "3.0.8", "2.3.6")
    assert slots.pending is None and slots.read_image("B") == repo.image("3.0.8").payload
    again = Slots.load(slots.path, factory_version="2.3.6")
    assert again.running == "3.0.8" and again.download == {}
    assert not Path(slots.path + ".partial").exists()
    names = [name for name, _ in session.events]
    assert names == ["download.started", "verified", "installed", "booted"]


def test_up_to_date_terminal_downloads_nothing(tmp_path, repo):
    link = Link(repo, "3.0.8")
    session = run(UpdateSession(slots_at(tmp_path, "3.0.8")), link)
    assert session.state is State.UP_TO_DATE and link.chunks == 0


def test_an_offered_downgrade_is_not_taken(tmp_path):
    repo = FirmwareRepository("3.0.2")
    link = Link(repo, "3.0.2")
    link.running = "2.0.0"  # the host believes the terminal is old; the terminal knows better
    session = run(UpdateSession(slots_at(tmp_path, "3.0.8")), link)
    assert session.state is State.UP_TO_DATE and link.chunks == 0


def test_link_drop_mid_download_resumes_from_the_last_verified_chunk(tmp_path, repo):
    slots = slots_at(tmp_path)
    first = run(UpdateSession(slots), Link(repo, "2.3.6", drop={4}))
    assert first.state is State.FAILED and first.error_check == "link"
    assert "interrupted at 1440" in (first.error or "")
    assert slots.running == "2.3.6"
    # the terminal restarts: the record and the partial file say three chunks are kept
    reopened = Slots.load(slots.path, factory_version="2.3.6")
    assert reopened.offset == 3 * CHUNK and reopened.download["offset"] == 3 * CHUNK
    link = Link(repo, "2.3.6")
    second = run(UpdateSession(reopened), link)
    assert second.ok and second.resumed_from == 3 * CHUNK
    assert link.offsets == [3 * CHUNK, 4 * CHUNK, 5 * CHUNK]  # nothing fetched twice
    assert reopened.running == "3.0.8"


def test_surplus_bytes_after_the_recorded_offset_are_dropped_on_load(tmp_path, repo):
    slots = slots_at(tmp_path)
    run(UpdateSession(slots), Link(repo, "2.3.6", drop={3}))
    with open(slots.path + ".partial", "ab") as handle:  # a chunk written, then the power went
        handle.write(b"\x00" * 100)
    reopened = Slots.load(slots.path, factory_version="2.3.6")
    assert reopened.offset == 2 * CHUNK
    assert run(UpdateSession(reopened), Link(repo, "2.3.6")).ok


def test_a_new_image_on_the_host_restarts_the_download(tmp_path, repo):
    slots = slots_at(tmp_path)
    run(UpdateSession(slots), Link(repo, "2.3.6", drop={3}))
    repo.add(build_image("3.0.9", size=SIZE), latest=True)
    link = Link(repo, "2.3.6")
    session = run(UpdateSession(slots), link)
    assert session.ok and session.resumed_from is None and link.offsets[0] == 0 and slots.running == "3.0.9"


def test_corrupted_chunk_is_rejected_and_fetched_again(tmp_path, repo):
    slots = slots_at(tmp_path)
    link = Link(repo, "2.3.6", corrupt={2, 5})
    session = run(UpdateSession(slots), link)
    assert session.ok and slots.running == "3.0.8"
    rejected = [d for name, d in session.events if name == "chunk_rejected"]
    assert [r["offset"] for r in rejected] == [CHUNK, 3 * CHUNK] and "CRC-32" in rejected[0]["reason"]
    assert link.offsets == [0, CHUNK, CHUNK, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK, 4 * CHUNK, 5 * CHUNK]


def test_a_chunk_corrupted_every_time_fails_and_keeps_what_was_verified(tmp_path, repo):
    slots = slots_at(tmp_path)
    session = run(UpdateSession(slots, max_chunk_retries=2), Link(repo, "2.3.6", corrupt={2, 3, 4}))
    assert session.state is State.FAILED and session.error_check == "chunk" and "rejected 3 times" in session.error
    assert slots.offset == CHUNK and slots.running == "2.3.6"


@pytest.mark.parametrize(("tamper", "check"), [
    (lambda img: replace(img, signature="00" * 64), "signature"),
    (lambda img: replace(img, signature=""), "unsigned"),
    (lambda img: replace(img, payload=b"\x00" + img.payload[1:]), "hash"),
])
def test_a_bad_image_is_refused_after_download_and_never_installed(tmp_path, repo, tamper, check):
    repo.add(tamper(repo.image("3.0.8")))
    slots = slots_at(tmp_path)
    session = run(UpdateSession(slots), Link(repo, "2.3.6"))
    assert session.state is State.FAILED and session.error_check == check
    assert slots.running == "2.3.6" and slots.inactive_version is None and slots.download == {}
    assert slots.read_image(slots.inactive) is None


def test_an_image_from_another_vendor_is_refused_by_a_terminal_with_its_own_key(tmp_path, repo):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    vendor = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    session = run(UpdateSession(slots_at(tmp_path), public_key=vendor.public_key()), Link(repo, "2.3.6"))
    assert session.error_check == "signature"


@pytest.mark.parametrize("point", ["download", "install"])
def test_power_loss_during_download_or_install_leaves_the_old_version_running(tmp_path, repo, point):
    slots = slots_at(tmp_path)
    with pytest.raises(PowerCut):
        run(UpdateSession(slots, fault=fault_at(point)), Link(repo, "2.3.6"))
    reopened = Slots.load(slots.path, factory_version="2.3.6")  # power back on
    assert reopened.running == "2.3.6" and reopened.active == "A" and reopened.pending is None
    record = json.loads(Path(slots.path).read_text())
    assert record["versions"]["A"] == "2.3.6" and record["active"] == "A"
    # and the next attempt succeeds, reusing what was already downloaded
    link = Link(repo, "2.3.6")
    session = run(UpdateSession(reopened), link)
    assert session.ok and reopened.running == "3.0.8"
    if point == "install":
        assert link.chunks == 0  # the whole image was verified before the cut: straight to install


def test_power_loss_during_first_boot_rolls_back_at_the_next_power_on(tmp_path, repo):
    slots = slots_at(tmp_path)
    with pytest.raises(PowerCut):
        run(UpdateSession(slots, fault=fault_at("first_boot")), Link(repo, "2.3.6"))
    reopened = Slots.load(slots.path, factory_version="2.3.6")
    assert reopened.running == "2.3.6" and reopened.pending is None
    assert reopened.last_rollback == {"version": "3.0.8", "reason": "power lost during the first boot"}


def test_failed_first_boot_rolls_back_to_the_old_slot(tmp_path, repo):
    slots = slots_at(tmp_path, "3.0.2")
    session = run(UpdateSession(slots), Link(repo, "3.0.2"), boot_ok=False)
    assert session.state is State.FAILED and session.error_check == "first_boot"
    assert "rolled back to 3.0.2" in (session.error or "")
    assert session.running == "3.0.2" and slots.running == "3.0.2" and slots.active == "A"
    assert Slots.load(slots.path, factory_version="3.0.2").running == "3.0.2"
    assert ("rolled_back", {"version": "3.0.8", "running": "3.0.2"}) in session.events


def test_a_slot_image_damaged_after_install_fails_its_first_boot(tmp_path, repo):
    slots = slots_at(tmp_path)
    session = UpdateSession(slots)
    link = Link(repo, "2.3.6")
    request = session.start()
    while request is not None:
        request = session.receive(link(request))
    session.install()
    Path(slots.image_path(slots.pending)).write_bytes(b"bit rot")  # type: ignore[arg-type]
    assert session.reboot() == "2.3.6" and "recorded hash" in (session.error or "")


def test_in_memory_slots_work_without_files(repo):
    slots = Slots.load(None, factory_version="2.1.5")
    session = run(UpdateSession(slots), Link(repo, "2.1.5", drop={2}))
    assert session.state is State.FAILED and slots.offset == CHUNK
    assert run(UpdateSession(slots), Link(repo, "2.1.5")).ok and slots.running == "3.0.8"


def test_the_session_refuses_calls_out_of_order(tmp_path):
    session = UpdateSession(slots_at(tmp_path))
    with pytest.raises(RuntimeError, match="idle"):
        session.receive(Message("0810"))
    with pytest.raises(RuntimeError):
        session.install()
    session.start()
    with pytest.raises(RuntimeError):
        session.start()


def test_a_refused_or_malformed_announcement_fails_cleanly(tmp_path):
    session = UpdateSession(slots_at(tmp_path))
    session.start()
    assert session.receive(Message("0810", {39: "96"})) is None and session.error_check == "refused"
    session = UpdateSession(slots_at(tmp_path))
    session.start()
    assert session.receive(Message("0810", {39: "00", 62: b"VER=3.0.8;SIZE=-4"})) is None
    assert session.state is State.FAILED and session.error_check in ("announce", "size")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sets(st.integers(1, 12), max_size=3), min_size=1, max_size=4), st.sets(st.integers(1, 12)))
def test_any_mix_of_drops_and_corruption_ends_on_the_new_image_or_the_old(tmp_path_factory, drops_per_try, corrupt):
    repo = FirmwareRepository("3.0.8", {"3.0.8": build_image("3.0.8", size=SIZE)})
    path = str(tmp_path_factory.mktemp("fw") / "fw.json")
    slots = Slots.load(path, factory_version="2.3.6")
    for drops in [*drops_per_try, set()]:  # the last try has a clean link
        link = Link(repo, slots.running or "", drop=drops, corrupt=corrupt)
        session = run(UpdateSession(Slots.load(path, factory_version="2.3.6"), max_chunk_retries=20), link)
        running = Slots.load(path, factory_version="2.3.6").running
        assert running in ("2.3.6", "3.0.8")
        assert session.ok == (running == "3.0.8") or session.state is State.UP_TO_DATE
    assert Slots.load(path, factory_version="2.3.6").running == "3.0.8"


def test_in_memory_slots_recover_from_a_power_cut_during_the_first_boot(repo):
    slots = Slots.load(None, factory_version="2.3.6")
    with pytest.raises(PowerCut):
        run(UpdateSession(slots, fault=fault_at("first_boot")), Link(repo, "2.3.6"))
    assert slots.pending is not None and slots.boot_attempts == 1
    slots.recover()  # what Slots.load() does for a record on disk
    assert slots.pending is None and slots.running == "2.3.6"
    assert slots.last_rollback == {"version": "3.0.8", "reason": "power lost during the first boot"}
    slots.recover()  # nothing pending: nothing to do
    assert slots.running == "2.3.6" and run(UpdateSession(slots), Link(repo, "2.3.6")).ok


def test_new_events_hands_out_each_event_once(tmp_path, repo):
    session = UpdateSession(slots_at(tmp_path))
    link = Link(repo, "2.3.6", corrupt={1})
    seen: list[str] = []
    request = session.start()
    assert session.new_events() == []
    while request is not None:
        request = session.receive(link(request))
        seen += [name for name, _ in session.new_events()]
    session.finish()
    seen += [name for name, _ in session.new_events()]
    assert seen == [name for name, _ in session.events]
    assert seen == ["download.started", "chunk_rejected", "verified", "installed", "booted"]
    assert session.events[1][1]["version"] == "3.0.8"
