"""The host side of firmware updates (a TMS on the acquirer host): images by version, served in chunks.

`FirmwareRepository.handle(request, running=...)` answers a firmware 0800 (60.3 = 370 / 371) with its
0810, so a host only has to route those two codes to it. No I/O.
"""

from __future__ import annotations

from functools import cache

from protocol import catalogue, codes
from protocol.message import Message

from .image import DEFAULT_SIZE, FirmwareError, Image, build_image
from .messages import (
    CHUNK,
    MAX_CHUNK,
    Announcement,
    announce_reply,
    chunk_reply,
    chunk_trailer,
    kind_of,
    no_update_reply,
    parse_chunk_request,
)
from .profiles import LATEST, PROFILES, parse_version


@cache
def shipped_image(version: str, size: int = DEFAULT_SIZE) -> Image:
    """The deterministic, test-key-signed image of a version (built once per process)."""
    return build_image(version, size=size)


class FirmwareRepository:
    """Images by version; `latest` is what `announce()` offers. Shipped versions (and `latest`) are built
    on demand with the test vendor key; `add()` puts any other image (a custom, unsigned or tampered one)."""

    def __init__(self, latest: str = LATEST, images: dict[str, Image] | None = None, *, chunk_size: int = CHUNK
                 ) -> None:
        parse_version(latest)
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size {chunk_size} outside 1..{MAX_CHUNK}")
        self.latest = latest
        self.images = dict(images or {})
        self.chunk_size = chunk_size

    def add(self, image: Image, *, latest: bool = False) -> None:
        self.images[image.version] = image
        if latest:
            self.latest = image.version

    def versions(self) -> list[str]:
        return sorted(set(self.images) | set(PROFILES) | {self.latest}, key=parse_version)

    def image(self, version: str | None = None) -> Image:
        """The image of `version` (default: latest); KeyError for a version the repository cannot serve."""
        version = version or self.latest
        if version not in self.images:
            if version not in PROFILES and version != self.latest:
                raise KeyError(f"no firmware image {version}")
            self.images[version] = shipped_image(version)
        return self.images[version]

    def offers(self, running: str) -> bool:
        """Whether `latest` is newer than the terminal's running version."""
        try:
            return parse_version(running) < parse_version(self.latest)
        except ValueError:
            return True  # a terminal that reports garbage gets the latest

    def announcement(self, version: str | None = None) -> Announcement:
        return Announcement.of(self.image(version), self.chunk_size)

    def announce(self, version: str | None = None) -> bytes:
        """Field 62 of the 370 reply for `version` (default: latest)."""
        return self.announcement(version).encode()

    def chunk(self, version: str, offset: int, size: int | None = None) -> tuple[bytes, str]:
        """(bytes, field-59 trailer) of the chunk at `offset`; ValueError outside the image, KeyError for an
        unknown version."""
        img = self.image(version)
        size = min(size or self.chunk_size, self.chunk_size)
        if not 0 <= offset < img.size:
            raise ValueError(f"offset {offset} outside image {version} of {img.size} bytes")
        data = img.payload[offset:offset + size]
        return data, chunk_trailer(offset, data)

    def handle(self, request: Message, *, running: str | None = None) -> Message:
        """The 0810 for a firmware 0800: 370 -> announcement (or 39 = 25 NO UPDATE when `running` is already
        the latest), 371 -> chunk (39 = 30 for a bad request, unknown version or offset)."""
        kind = kind_of(request)
        if kind == "query":
            if running is not None and not self.offers(running):
                return no_update_reply(request)
            return announce_reply(request, self.announcement())
        if kind == "chunk":
            try:
                version, offset = parse_chunk_request(request.get(62) or b"")  # type: ignore[arg-type]
                data, _trailer = self.chunk(version, offset)
            except (FirmwareError, KeyError, ValueError):
                return catalogue.reply(request, codes.FORMAT_ERROR)
            return chunk_reply(request, offset, data)
        raise ValueError(f"not a firmware request: {request.mti} 60 = {request.get(60)!r}")
