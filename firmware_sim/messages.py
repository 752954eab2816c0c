"""The firmware download messages (project-defined, cup-pos 0800/0810).

- query: 0800 with 60.3 = 370. The 0810 carries 39 = 00 and 62 = ASCII
  `VER=3.0.8;SIZE=8192;SHA256=<hex>;SIG=<hex>;DATE=2023-05-20;CHUNK=480`, or 39 = 25 when there is none.
- chunk: 0800 with 60.3 = 371 and 62 = ASCII `VER=3.0.8;OFF=<offset>`. The 0810 carries 62 = up to 480
  payload bytes and 59 = `OFF=<offset>;CRC=<crc32 hex>`.

A terminal asks when a reply header carries processing requirement 6 (download firmware), or when told.
"""

from __future__ import annotations

import zlib

from protocol.composite import encode_device_info, parse_device_info

CHUNK = 480
QUERY_NMC, CHUNK_NMC = "370", "371"


def encode_meta(version: str, size: int, sha256: str, signature: str, build_date: str) -> bytes:
    return encode_device_info(VER=version, SIZE=size, SHA256=sha256, SIG=signature, DATE=build_date, CHUNK=CHUNK)


def parse_meta(raw: bytes) -> dict[str, str]:
    return parse_device_info(raw)


def chunk_request(version: str, offset: int) -> bytes:
    return encode_device_info(VER=version, OFF=offset)


def chunk_trailer(offset: int, data: bytes) -> str:
    return f"OFF={offset};CRC={zlib.crc32(data):08X}"


def chunk_ok(trailer: str, offset: int, data: bytes) -> bool:
    return trailer == chunk_trailer(offset, data)
