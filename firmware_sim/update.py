"""The terminal-side firmware update engine, sans I/O (model: h11).

`UpdateSession` never touches a link. It hands out the next request, is fed the host's reply, and keeps
its progress in `Slots` (persisted, A/B):

    session = UpdateSession(slots, running=terminal.firmware, fault=hook)
    request = session.start()                      # the 370 query
    while request is not None:
        try:
            reply = exchange(request.to_message(tid=..., mid=..., stan=..., batch=...))
        except LinkDown as exc:
            session.link_lost(str(exc))            # download kept; the next session resumes
            break
        request = session.receive(reply)           # next chunk, the same chunk again, or None
        log(session.new_events())                  # what happened since the last call (session.events: all)
    if session.state is State.VERIFIED:
        session.install()                          # into the inactive slot, marked pending
        session.reboot(boot_ok=...)                # first boot: confirm, or roll back

States: IDLE -> QUERYING -> DOWNLOADING -> VERIFIED -> INSTALLED -> DONE, or UP_TO_DATE, or FAILED
(with `error` and `error_check`). Fault points: `fault(name)` is called at "download" (a chunk has
arrived and checked out, before it is kept), "install" (the slot image is written, before the record
references it) and "first_boot" (the boot attempt is counted, before the new image confirms). Raise from
the hook to simulate a power cut: the persisted slots still run the old version (see slots.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import codes
from protocol.message import Message

from .image import FirmwareError, verify
from .messages import (
    CHUNK_NAME,
    CHUNK_NMC,
    NO_UPDATE,
    QUERY_NAME,
    QUERY_NMC,
    Announcement,
    chunk_message,
    chunk_request,
    parse_chunk_reply,
    query_message,
)
from .profiles import get_profile, parse_version
from .slots import Slots

FAULT_POINTS = ("download", "install", "first_boot")


class State(enum.Enum):
    IDLE = "idle"
    QUERYING = "querying"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLED = "installed"
    DONE = "done"
    UP_TO_DATE = "up_to_date"
    FAILED = "failed"


class LinkDown(Exception):
    """Raised by an exchange function (see `run`) when the link drops or a reply times out."""


@dataclass(frozen=True)
class Request:
    """The next message the terminal must send: `name` is its catalogue name, `payload` its field 62."""

    kind: str  # "query" | "chunk"
    payload: bytes | None = None
    version: str | None = None
    offset: int | None = None

    @property
    def name(self) -> str:
        return QUERY_NAME if self.kind == "query" else CHUNK_NAME

    @property
    def nmc(self) -> str:
        return QUERY_NMC if self.kind == "query" else CHUNK_NMC

    def to_message(self, *, tid: str, mid: str, stan: str, batch: str) -> Message:
        if self.kind == "query":
            return query_message(tid=tid, mid=mid, stan=stan, batch=batch)
        assert self.version is not None and self.offset is not None
        return chunk_message(self.version, self.offset, tid=tid, mid=mid, stan=stan, batch=batch)


class UpdateSession:
    """One update attempt. `slots` carries everything that must survive a power cut; a new session over the
    same slots resumes an interrupted download of the same image (same version, size and SHA-256)."""

    def __init__(self, slots: Slots, *, running: str | None = None,
                 public_key: Ed25519PublicKey | bytes | str | None = None,
                 fault: Callable[[str], None] | None = None, max_chunk_retries: int = 3,
                 allow_downgrade: bool = False) -> None:
        self.slots = slots
        self.running = running or slots.running or ""
        self.public_key = public_key
        self.fault = fault
        self.max_chunk_retries = max_chunk_retries
        self.allow_downgrade = allow_downgrade
        self.state = State.IDLE
        self.error: str | None = None
        self.error_check: str | None = None
        self.announcement: Announcement | None = None
        self.resumed_from: int | None = None
        self.retries = 0  # rejections of the chunk now being asked for
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._handed_out = 0  # events already returned by new_events()

    # ------------------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.state is State.DONE

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.UP_TO_DATE, State.FAILED)

    @property
    def target(self) -> str | None:
        return self.announcement.version if self.announcement else None

    @property
    def offset(self) -> int:
        return self.slots.offset

    @property
    def progress(self) -> int:
        """Percent of the image downloaded."""
        if not self.announcement:
            return 0
        return min(100, 100 * self.slots.offset // self.announcement.size)

    def new_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The events since the last call (a driver journals them as they happen); `events` keeps them all."""
        fresh = self.events[self._handed_out:]
        self._handed_out = len(self.events)
        return fresh

    def _event(self, name: str, **detail: Any) -> None:
        self.events.append((name, detail))

    def _point(self, name: str) -> None:
        if self.fault is not None:
            self.fault(name)

    def _fail(self, message: str, check: str) -> None:
        self.state, self.error, self.error_check = State.FAILED, message, check
        self._event("failed", check=check, message=message)

    def _expect(self, *states: State) -> None:
        if self.state not in states:
            raise RuntimeError(f"update session is {self.state.value}, expected {'/'.join(s.value for s in states)}")

    def _chunk(self) -> Request:
        assert self.announcement is not None
        offset = self.slots.offset
        return Request("chunk", chunk_request(self.announcement.version, offset), self.announcement.version, offset)

    # ------------------------------------------------------------------------------------------
    def start(self) -> Request:
        """The first request: the 370 query."""
        self._expect(State.IDLE)
        self.state = State.QUERYING
        return Request("query")

    def receive(self, reply: Message) -> Request | None:
        """Feed the reply to the last request; returns the next request, or None when there is nothing more
        to send (state VERIFIED, UP_TO_DATE or FAILED)."""
        if self.state is State.QUERYING:
            return self._on_announcement(reply)
        if self.state is State.DOWNLOADING:
            return self._on_chunk(reply)
        raise RuntimeError(f"update session is {self.state.value}: no reply expected")

    def link_lost(self, reason: str = "link lost") -> None:
        """The exchange failed (drop, timeout). What was verified is kept; a new session resumes there."""
        self._expect(State.QUERYING, State.DOWNLOADING)
        self._fail(f"download interrupted at {self.slots.offset} bytes: {reason}", "link")

    def _on_announcement(self, reply: Message) -> Request | None:
        rc = reply.response_code
        if rc == NO_UPDATE:
            self.state = State.UP_TO_DATE
            self._event("up_to_date", running=self.running)
            return None
        if rc != codes.APPROVED:
            self._fail(f"firmware query refused by the host (39 = {rc})", "refused")
            return None
        raw = reply.get(62)
        try:
            if not isinstance(raw, bytes):
                raise FirmwareError("firmware announcement carries no field 62", "announce")
            ann = Announcement.parse(raw)
        except FirmwareError as exc:
            self._fail(str(exc), exc.check)
            return None
        self.announcement = ann
        try:
            newer = parse_version(ann.version) > parse_version(self.running)
        except ValueError:
            newer = True
        if not newer and not self.allow_downgrade:
            self.state = State.UP_TO_DATE
            self._event("up_to_date", running=self.running, offered=ann.version)
            return None
        if self.slots.begin_download(ann.version, ann.sha256, ann.size):
            self.resumed_from = self.slots.offset
            self._event("download.resumed", version=ann.version, offset=self.slots.offset)
        else:
            self._event("download.started", version=ann.version, size=ann.size)
        self.state = State.DOWNLOADING
        return self._next_or_verify()

    def _next_or_verify(self) -> Request | None:
        assert self.announcement is not None
        if self.slots.offset < self.announcement.size:
            return self._chunk()
        image = self.announcement.image(bytes(self.slots.partial))
        try:
            verify(image, self.public_key)
        except FirmwareError as exc:
            self.slots.reset_download()  # a bad image is never resumed: start from zero next time
            self._fail(str(exc), exc.check)
            return None
        self.state = State.VERIFIED
        self._event("verified", version=image.version, sha256=image.sha256)
        return None

    def _on_chunk(self, reply: Message) -> Request | None:
        assert self.announcement is not None
        offset = self.slots.offset
        try:
            data = parse_chunk_reply(reply, offset, size=self.announcement.size)
        except FirmwareError as exc:
            if exc.check == "refused":
                self._fail(str(exc), "refused")
                return None
            self.retries += 1
            self._event("chunk_rejected", version=self.announcement.version, offset=offset, reason=str(exc),
                        attempt=self.retries)
            if self.retries > self.max_chunk_retries:
                self._fail(f"chunk at {offset} rejected {self.retries} times: {exc}", "chunk")
                return None
            return self._chunk()  # ask for the same chunk again
        self._point("download")
        self.slots.append_chunk(data)
        self.retries = 0
        return self._next_or_verify()

    # ------------------------------------------------------------------------------------------
    def install(self) -> None:
        """Write the verified image into the inactive slot and mark it pending (the active slot is untouched)."""
        self._expect(State.VERIFIED)
        assert self.announcement is not None
        payload = bytes(self.slots.partial)
        self.slots.write_image(self.slots.inactive, payload)
        self._point("install")  # a cut here: the record does not reference the new image yet
        self.slots.mark_pending(self.announcement.version, self.announcement.sha256)
        self.state = State.INSTALLED
        self._event("installed", version=self.announcement.version, slot=self.slots.pending)

    def reboot(self, *, boot_ok: bool = True) -> str:
        """Boot the pending slot. It is confirmed (becomes active) when its stored image still checks out, its
        profile boots and `boot_ok`; otherwise the old slot is kept (rollback). Returns the running version."""
        self._expect(State.INSTALLED)
        version = self.slots.begin_boot()
        self._point("first_boot")  # a cut here: the next Slots.load() rolls back (attempts used up)
        reason = None
        if not self.slots.pending_image_ok():
            reason = "slot image does not match its recorded hash"
        elif not get_profile(version).boots:
            reason = f"firmware {version} does not boot"
        elif not boot_ok:
            reason = "first boot failed"
        if reason is None:
            self.running = self.slots.confirm()
            self.state = State.DONE
            self._event("booted", version=version)
            return self.running
        self.running = self.slots.rollback(reason)
        self._fail(f"first boot of {version} failed ({reason}): rolled back to {self.running}", "first_boot")
        self._event("rolled_back", version=version, running=self.running)
        return self.running

    def finish(self, *, boot_ok: bool = True) -> str:
        """install() then reboot(); returns the running version."""
        self.install()
        return self.reboot(boot_ok=boot_ok)


def run(session: UpdateSession, exchange: Callable[[Request], Message], *, boot_ok: bool = True) -> UpdateSession:
    """Drive a session to its end with a synchronous `exchange(request) -> reply` (which may raise
    `LinkDown`). For tests, tools and in-memory pairs; the terminal's async driver does the same with awaits."""
    request: Request | None = session.start()
    while request is not None:
        try:
            reply = exchange(request)
        except LinkDown as exc:
            session.link_lost(str(exc) or "link down")
            return session
        request = session.receive(reply)
    if session.state is State.VERIFIED:
        session.finish(boot_ok=boot_ok)
    return session
