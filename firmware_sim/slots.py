"""A/B firmware slots, persisted atomically: the running version survives any failed update.

The terminal runs from the active slot; an update is downloaded (resumably: the verified offset is
stored after every chunk), verified, and written into the inactive slot, and only a successful first
boot of the new image makes it active. A power loss or failed check at any step leaves the old
firmware running; a first boot that fails rolls back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Slots:
    path: str | None  # None: in memory only
    active: str = "A"
    versions: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    download: dict[str, Any] = field(default_factory=dict)  # version, offset, sha256, size
    partial: bytearray = field(default_factory=bytearray)

    @property
    def inactive(self) -> str:
        return "B" if self.active == "A" else "A"

    @property
    def running(self) -> str | None:
        return self.versions[self.active]

    @classmethod
    def load(cls, path: str | None, *, factory_version: str) -> Slots:
        if path is not None and Path(path).exists():
            data = json.loads(Path(path).read_text("utf-8"))
            partial_path = Path(path + ".partial")
            partial = bytearray(partial_path.read_bytes()) if partial_path.exists() else bytearray()
            slots = cls(path, data["active"], data["versions"], data.get("download", {}), partial)
            slots.partial = slots.partial[: int(slots.download.get("offset", 0))]
            return slots
        slots = cls(path)
        slots.versions["A"] = factory_version
        slots.save()
        return slots

    def save(self) -> None:
        """Write-then-rename with fsync: a power cut leaves either the old or the new record, never half."""
        if self.path is None:
            return
        data = json.dumps({"active": self.active, "versions": self.versions, "download": self.download})
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def save_partial(self) -> None:
        if self.path is None:
            return
        with open(self.path + ".partial", "wb") as handle:
            handle.write(self.partial)
            handle.flush()
            os.fsync(handle.fileno())
        self.save()

    def reset_download(self) -> None:
        self.download = {}
        self.partial = bytearray()
        if self.path is not None:
            Path(self.path + ".partial").unlink(missing_ok=True)
        self.save()
