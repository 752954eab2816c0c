"""A/B firmware slots, persisted atomically: the running version survives any failed update.

The terminal runs from the active slot. An update is downloaded resumably (the verified bytes go to
`<path>.partial`, the verified offset into the slot record after every chunk), verified, and written into
the inactive slot (`<path>.A.img` / `<path>.B.img`); the slot is then marked *pending*. Only a successful
first boot of the pending slot (`confirm()`) makes it active. A power loss or failed check at any step
leaves the old firmware running:

- during download: the record still names the old active slot; the partial file is cut back to the
  recorded offset on load, so the download resumes from the last verified chunk;
- during install: the record is written last, so a half-written slot image is never referenced;
- during the first boot: `boot_attempts` was persisted before booting, so on the next load a pending
  slot that has used up its attempts (`BOOT_ATTEMPTS`) is rolled back.

Every record write is write-temp + fsync + rename (+ fsync of the directory): a power cut leaves the old
or the new record, never half of one. `path=None` keeps everything in memory (tests, ":memory:" journals).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How many times a pending slot is tried before the bootloader falls back to the old one.
BOOT_ATTEMPTS = 1


def atomic_write(path: str, data: bytes) -> None:
    """Write-temp + fsync + rename + fsync(dir)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Slots:
    path: str | None  # None: in memory only
    active: str = "A"
    versions: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    download: dict[str, Any] = field(default_factory=dict)  # version, sha256, size, offset
    partial: bytearray = field(default_factory=bytearray)
    pending: str | None = None  # the slot to try at the next boot
    boot_attempts: int = 0
    hashes: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    last_rollback: dict[str, Any] | None = None  # version, reason of the latest rollback
    images: dict[str, bytes] = field(default_factory=dict, repr=False)  # in-memory slot images (path None)

    # ------------------------------------------------------------------------------------------
    @property
    def inactive(self) -> str:
        return "B" if self.active == "A" else "A"

    @property
    def running(self) -> str | None:
        return self.versions[self.active]

    @property
    def active_version(self) -> str | None:
        return self.versions[self.active]

    @property
    def inactive_version(self) -> str | None:
        return self.versions[self.inactive]

    @property
    def pending_version(self) -> str | None:
        return self.versions[self.pending] if self.pending else None

    @property
    def offset(self) -> int:
        """Bytes of the current download verified and kept."""
        return len(self.partial)

    def as_dict(self) -> dict[str, Any]:
        return {"active": self.active, "versions": dict(self.versions), "download": dict(self.download),
                "pending": self.pending, "boot_attempts": self.boot_attempts, "hashes": dict(self.hashes),
                "last_rollback": self.last_rollback}

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | None, *, factory_version: str) -> Slots:
        """The slot record at `path`, or a fresh one with `factory_version` in slot A. A pending slot whose
        boot attempts are used up (power lost during its first boot) is rolled back here, as a bootloader
        would."""
        if path is not None and Path(path).exists():
            data = json.loads(Path(path).read_text("utf-8"))
            partial_path = Path(path + ".partial")
            partial = bytearray(partial_path.read_bytes()) if partial_path.exists() else bytearray()
            slots = cls(path, data["active"], data["versions"], data.get("download") or {}, partial,
                        data.get("pending"), int(data.get("boot_attempts", 0)),
                        data.get("hashes") or {"A": None, "B": None}, data.get("last_rollback"))
            # the partial file may hold bytes appended after the last record write: cut them off
            offset = min(int(slots.download.get("offset", 0)), len(slots.partial)) if slots.download else 0
            del slots.partial[offset:]
            if slots.download:
                slots.download["offset"] = offset
            slots.recover()
            return slots
        slots = cls(path)
        slots.versions["A"] = factory_version
        slots.save()
        return slots

    def save(self) -> None:
        """The record, atomically: a power cut leaves either the old or the new one, never half."""
        if self.path is None:
            return
        atomic_write(self.path, json.dumps(self.as_dict(), sort_keys=True).encode())

    def recover(self) -> None:
        """What the bootloader does at power-on: a pending slot that has used up its boot attempts (the power
        went during its first boot) is rolled back. `load()` calls it; so does a driver that keeps its Slots
        object across a power cut (in memory, or without reading the record again)."""
        if self.pending is not None and self.boot_attempts >= BOOT_ATTEMPTS:
            self.rollback("power lost during the first boot")

    # download ---------------------------------------------------------------------------------
    def begin_download(self, version: str, sha256: str, size: int) -> bool:
        """Start (or keep) the download of an image; True when an earlier one of the same image resumes."""
        if (self.download.get("version"), self.download.get("sha256"), self.download.get("size")) == \
                (version, sha256, size) and len(self.partial) <= size:
            return True
        self.partial = bytearray()
        self.download = {"version": version, "sha256": sha256, "size": size, "offset": 0}
        self._drop_partial_file()  # before the record: a cut in between resumes the old image at 0
        self.save()
        return False

    def append_chunk(self, data: bytes) -> None:
        """Keep a verified chunk: the bytes first (fsync), then the record's offset. The file never gets
        shorter than a recorded offset, so a cut in between only leaves surplus bytes that load() drops."""
        offset = len(self.partial)
        if self.path is not None:
            partial_path = self.path + ".partial"
            mode = "r+b" if os.path.exists(partial_path) else "wb"
            with open(partial_path, mode) as handle:
                handle.seek(offset)
                handle.truncate()
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        self.partial += data
        self.download["offset"] = len(self.partial)
        self.save()

    def reset_download(self) -> None:
        """Forget the download (a bad image is never resumed)."""
        self.download = {}
        self.partial = bytearray()
        self._drop_partial_file()
        self.save()

    def _drop_partial_file(self) -> None:
        if self.path is not None:
            Path(self.path + ".partial").unlink(missing_ok=True)

    # install and boot -------------------------------------------------------------------------
    def image_path(self, slot: str) -> str | None:
        return None if self.path is None else f"{self.path}.{slot}.img"

    def write_image(self, slot: str, payload: bytes) -> None:
        """Write an image into a slot's storage (not yet referenced by the record)."""
        if slot == self.active:
            raise ValueError(f"slot {slot} is the active slot: never overwritten")
        target = self.image_path(slot)
        if target is None:
            self.images[slot] = bytes(payload)
        else:
            atomic_write(target, payload)

    def read_image(self, slot: str) -> bytes | None:
        target = self.image_path(slot)
        if target is None:
            return self.images.get(slot)
        try:
            return Path(target).read_bytes()
        except FileNotFoundError:
            return None

    def mark_pending(self, version: str, sha256: str) -> None:
        """Reference the inactive slot's new image and ask for it at the next boot (one record write)."""
        slot = self.inactive
        self.versions[slot] = version
        self.hashes[slot] = sha256
        self.pending = slot
        self.boot_attempts = 0
        self.download = {}
        self.partial = bytearray()
        self.save()
        self._drop_partial_file()

    def begin_boot(self) -> str:
        """Count a boot attempt of the pending slot (persisted before booting it); returns its version."""
        if self.pending is None:
            raise ValueError("no slot is pending")
        self.boot_attempts += 1
        self.save()
        return self.versions[self.pending] or ""

    def pending_image_ok(self) -> bool:
        """The pending slot's stored image still has the hash recorded at install (when it was stored)."""
        if self.pending is None:
            return False
        stored, expected = self.read_image(self.pending), self.hashes.get(self.pending)
        if stored is None or expected is None:
            return True  # installed by a driver that keeps no slot image: nothing to check
        return hashlib.sha256(stored).hexdigest() == expected

    def confirm(self) -> str:
        """The pending slot booted: it becomes the active one. Returns the running version."""
        if self.pending is None:
            raise ValueError("no slot is pending")
        self.active, self.pending, self.boot_attempts = self.pending, None, 0
        self.save()
        return self.running or ""

    def rollback(self, reason: str) -> str:
        """Forget the pending slot: the old active slot keeps running. Returns the running version."""
        failed = self.pending_version
        self.pending, self.boot_attempts = None, 0
        self.last_rollback = {"version": failed, "reason": reason}
        self.save()
        return self.running or ""
