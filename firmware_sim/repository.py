"""The host side of firmware updates (a TMS on the acquirer host): images by version, in chunks."""

from __future__ import annotations

from functools import cache

from .image import Image, build_image
from .messages import CHUNK, chunk_trailer, encode_meta
from .profiles import LATEST


@cache
def shipped_image(version: str, size: int = 8192) -> Image:
    """The deterministic, test-key-signed image of a shipped version (built once per process)."""
    return build_image(version, size=size)


class FirmwareRepository:
    def __init__(self, latest: str = LATEST, images: dict[str, Image] | None = None) -> None:
        self.latest = latest
        self.images = dict(images or {})

    def image(self, version: str | None = None) -> Image:
        version = version or self.latest
        if version not in self.images:
            self.images[version] = shipped_image(version)
        return self.images[version]

    def announce(self) -> bytes:
        img = self.image()
        return encode_meta(img.version, img.size, img.sha256, img.signature, img.build_date)

    def chunk(self, version: str, offset: int) -> tuple[bytes, str]:
        img = self.image(version)
        if not 0 <= offset < img.size:
            raise ValueError(f"offset {offset} outside image {version} of {img.size} bytes")
        data = img.payload[offset:offset + CHUNK]
        return data, chunk_trailer(offset, data)
