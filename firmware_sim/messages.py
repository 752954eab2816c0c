"""The firmware download messages: project-defined cup-pos 0800/0810 network management codes.

- **query** (announce): 0800, 60.1 = 00, 60.3 = 370, fields 11 41 42 60. The header's sub-version carries
  the terminal's running firmware. The 0810 answers 39 = 00 and 62 = ASCII
  `VER=3.0.8;SIZE=8192;SHA256=<64 hex>;SIG=<128 hex>;DATE=2023-05-20;CHUNK=480`, or 39 = 25 with
  44 = `NO UPDATE` when the terminal already runs the latest.
- **chunk**: 0800, 60.3 = 371, 62 = ASCII `VER=3.0.8;OFF=<offset>`. The 0810 answers 39 = 00,
  62 = up to `CHUNK` (480) payload bytes from that offset (field 62 holds at most 512), and
  59 = `OFF=<offset>;CRC=<CRC-32 of the chunk, 8 upper-case hex>`; 39 = 30 for an unknown version or
  an offset outside the image.

A terminal asks when a reply header carries processing requirement 6 (download firmware), or when an
operator tells it to. Nothing here does I/O: builders return `protocol.message.Message` objects and the
parsers raise `FirmwareError` (check "announce" or "chunk") for anything malformed.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from protocol import catalogue, codes
from protocol.composite import Field60, encode_device_info, parse_device_info
from protocol.errors import ProtocolError
from protocol.message import Message

from .image import MAX_IMAGE_SIZE, FirmwareError, Image
from .profiles import parse_version

#: Payload bytes per chunk (field 62 is b...512).
CHUNK = 480
MAX_CHUNK = 512
QUERY_NMC, CHUNK_NMC = "370", "371"
QUERY_NAME, CHUNK_NAME = "firmware_query", "firmware_chunk"
NO_UPDATE = codes.ORIGINAL_NOT_FOUND  # "25": nothing newer to offer
_HEX = re.compile(r"^[0-9a-fA-F]*$")


# ----------------------------------------------------------------------------------------------
# field 62 / 59 payloads
# ----------------------------------------------------------------------------------------------
def encode_meta(version: str, size: int, sha256: str, signature: str, build_date: str, chunk: int = CHUNK) -> bytes:
    return encode_device_info(VER=version, SIZE=size, SHA256=sha256, SIG=signature, DATE=build_date, CHUNK=chunk)


def chunk_request(version: str, offset: int) -> bytes:
    """Field 62 of a chunk request."""
    return encode_device_info(VER=version, OFF=offset)


def parse_chunk_request(raw: bytes) -> tuple[str, int]:
    """(version, offset) from a chunk request's field 62."""
    try:
        items = parse_device_info(raw)
        version, offset = items["VER"], int(items["OFF"])
        parse_version(version)
    except (ProtocolError, KeyError, ValueError) as exc:
        raise FirmwareError(f"chunk request field 62 is malformed: {exc}", "chunk") from None
    if offset < 0:
        raise FirmwareError(f"chunk request offset {offset} is negative", "chunk")
    return version, offset


def chunk_trailer(offset: int, data: bytes) -> str:
    """Field 59 of a chunk reply: the offset and CRC-32 of the chunk."""
    return f"OFF={offset};CRC={zlib.crc32(data):08X}"


@dataclass(frozen=True)
class Announcement:
    """What a host offers (the 370 reply's field 62)."""

    version: str
    size: int
    sha256: str
    signature: str
    build_date: str
    chunk: int = CHUNK

    @classmethod
    def of(cls, image: Image, chunk: int = CHUNK) -> Announcement:
        return cls(image.version, image.size, image.sha256, image.signature, image.build_date, chunk)

    def encode(self) -> bytes:
        return encode_meta(self.version, self.size, self.sha256, self.signature, self.build_date, self.chunk)

    @classmethod
    def parse(cls, raw: bytes) -> Announcement:
        try:
            items = parse_device_info(raw)
            ann = cls(items["VER"], int(items["SIZE"]), items["SHA256"].lower(), items.get("SIG", ""),
                      items.get("DATE", ""), int(items.get("CHUNK", CHUNK)))
            parse_version(ann.version)
        except (ProtocolError, KeyError, ValueError) as exc:
            raise FirmwareError(f"firmware announcement is malformed: {exc}", "announce") from None
        if not 0 < ann.size <= MAX_IMAGE_SIZE:
            raise FirmwareError(f"announced size {ann.size} outside 1..{MAX_IMAGE_SIZE}", "size")
        if len(ann.sha256) != 64 or not _HEX.match(ann.sha256):
            raise FirmwareError(f"announced SHA-256 {ann.sha256!r} is not 64 hex digits", "announce")
        if not _HEX.match(ann.signature) or len(ann.signature) % 2:
            raise FirmwareError("announced signature is not hex", "announce")
        if not 0 < ann.chunk <= MAX_CHUNK:
            raise FirmwareError(f"announced chunk size {ann.chunk} outside 1..{MAX_CHUNK}", "announce")
        return ann

    def image(self, payload: bytes) -> Image:
        """The downloaded image, ready for `image.verify()`."""
        return Image(self.version, self.build_date, self.size, self.sha256, self.signature, bytes(payload))


# ----------------------------------------------------------------------------------------------
# whole messages
# ----------------------------------------------------------------------------------------------
def _request(nmc: str, *, tid: str, mid: str, stan: str, batch: str, f62: bytes | None) -> Message:
    msg = Message("0800", {11: stan, 41: tid, 42: mid, 60: Field60("00", batch, nmc).encode()})
    if f62 is not None:
        msg[62] = f62
    return msg


def query_message(*, tid: str, mid: str, stan: str, batch: str) -> Message:
    """0800 / 60.3 = 370: is there firmware for me? (the header carries the running version)."""
    return _request(QUERY_NMC, tid=tid, mid=mid, stan=stan, batch=batch, f62=None)


def chunk_message(version: str, offset: int, *, tid: str, mid: str, stan: str, batch: str) -> Message:
    """0800 / 60.3 = 371: the chunk of `version` that starts at `offset`."""
    return _request(CHUNK_NMC, tid=tid, mid=mid, stan=stan, batch=batch, f62=chunk_request(version, offset))


def kind_of(message: Message) -> str | None:
    """"query" or "chunk" for a firmware 0800/0810, else None."""
    if message.mti not in ("0800", "0810"):
        return None
    try:
        nmc = Field60.parse(str(message.get(60, ""))).nmc
    except ProtocolError:
        return None
    return {QUERY_NMC: "query", CHUNK_NMC: "chunk"}.get(nmc)


def announce_reply(request: Message, announcement: Announcement) -> Message:
    return catalogue.reply(request, codes.APPROVED, f62=announcement.encode())


def no_update_reply(request: Message) -> Message:
    return catalogue.reply(request, NO_UPDATE, f44="NO UPDATE")


def chunk_reply(request: Message, offset: int, data: bytes) -> Message:
    return catalogue.reply(request, codes.APPROVED, f62=bytes(data), f59=chunk_trailer(offset, data))


def parse_chunk_reply(reply: Message, offset: int, *, size: int | None = None) -> bytes:
    """The chunk bytes of a 371 reply for `offset`, checked: 39 = 00, 59 names the same offset and the CRC
    of the bytes in 62, the chunk is not empty and (with `size`) does not run past the image.
    FirmwareError(check="chunk") otherwise."""
    rc = reply.response_code
    if rc != codes.APPROVED:
        raise FirmwareError(f"chunk at {offset} refused by the host (39 = {rc})", "refused")
    data = reply.get(62)
    if not isinstance(data, bytes) or not data:
        raise FirmwareError(f"chunk reply at {offset} carries no data in field 62", "chunk")
    trailer = str(reply.get(59, ""))
    try:
        items = dict(part.split("=", 1) for part in trailer.split(";") if part)
        got_offset, crc = int(items["OFF"]), int(items["CRC"], 16)
    except (KeyError, ValueError):
        raise FirmwareError(f"chunk reply at {offset}: field 59 {trailer!r} is malformed", "chunk") from None
    if got_offset != offset:
        raise FirmwareError(f"chunk reply for offset {got_offset}, asked for {offset}", "chunk")
    if zlib.crc32(data) != crc:
        raise FirmwareError(f"chunk at {offset}: CRC-32 {zlib.crc32(data):08X} does not match {crc:08X}", "chunk")
    if size is not None and offset + len(data) > size:
        raise FirmwareError(f"chunk at {offset} of {len(data)} bytes runs past the image size {size}", "chunk")
    return bytes(data)
