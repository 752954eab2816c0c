"""Frame traces carry no card data: what lands in the `--trace` file, byte for byte.

A trace is attached to bug reports, so these tests read the file a `FrameTracer` writes (the object
`possim host --trace` and `possim terminal --trace` use) and look for the card data in it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from protocol import Message, get_dialect
from protocol import catalogue as cat
from protocol.composite import BatchRecord
from terminal.trace import FrameTracer

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("POSSIM_SHARED", ROOT.parent / "shared"))
VECTOR_HEX = SHARED / "protocol" / "vectors" / "cup_0200_sale.hex"
VECTOR_JSON = SHARED / "protocol" / "vectors" / "cup_0200_sale.json"

# The card of the QA report: PAN, track 2 and PIN block as the simulator's test card sends them.
PAN = "6222020000000015"
TRACK2 = PAN + "D30122010000000000"
TRACK2_TAIL = "30122010000000000"  # expiry, service code, discretionary data
PIN_BLOCK = "40FFA6CF861CAE88"
KEYS = "9F1C4B2A7E3D60518877AA55CC330F11" * 3 + "A1B2C3D4E5F60718"
HEAD = "6000060000" + "603100311003"  # TPDU + header
COMMON = {"tid": "10000019", "mid": "850100082410002", "batch": "000024"}


def framed(message: Message, dialect: str = "cup-pos") -> bytes:
    d = get_dialect(dialect)
    body = d.encode(message)
    if dialect == "iso87-ascii":
        return f"{len(body):04d}".encode() + body
    body = bytes.fromhex(HEAD) + body
    return len(body).to_bytes(2, "big") + body


@pytest.fixture(scope="module")
def sale() -> Message:
    """The shared 0200 vector carrying the QA report's card (so track 2 and PIN block are known)."""
    assert VECTOR_HEX.is_file(), f"the shared vector is missing: {VECTOR_HEX} (set POSSIM_SHARED)"
    message = get_dialect().decode(bytes.fromhex(VECTOR_HEX.read_text())[13:])
    message[2], message[35], message[52] = PAN, TRACK2, bytes.fromhex(PIN_BLOCK)
    return message


def trace_of(tmp_path: Path, *frames: bytes, dialect: str = "cup-pos") -> str:
    path = tmp_path / "trace.log"
    path.unlink(missing_ok=True)
    tracer = FrameTracer.open(path, dialect=dialect)
    for frame in frames:
        tracer("rx", frame)
    tracer.close()
    return path.read_text(encoding="utf-8")


def hex_lines(text: str) -> list[str]:
    """The hex part of each frame line (`stamp direction NB HEX`)."""
    return [line.split(" ", 3)[3] for line in text.splitlines() if not line.startswith(" ")]


def assert_no_card_data(text: str) -> None:
    upper = text.upper()
    for secret in (PAN, PAN[:10], TRACK2_TAIL, PIN_BLOCK, KEYS[:16], KEYS[-16:]):
        assert secret not in upper, f"{secret} in the trace:\n{text}"


# ---------------------------------------------------------------------------------------------
# Frames that do not decode
# ---------------------------------------------------------------------------------------------


def test_a_flipped_bitmap_bit_leaves_no_card_data_in_the_trace(tmp_path: Path, sale: Message) -> None:
    frame = bytearray(framed(sale))
    frame[13 + 3] ^= 0x02  # bit 15 on: the fields shift and field 48 reads a length of 3030
    text = trace_of(tmp_path, bytes(frame))
    assert_no_card_data(text)
    line, decoded = text.splitlines()
    prefix = bytes(frame[:13 + 10]).hex().upper()  # length, TPDU, header, MTI, bitmap
    assert line.endswith(f" 428B {prefix}<405 bytes withheld>")
    assert decoded.strip() == "undecodable: field 48, byte 76: length 3030 exceeds the maximum 322"


def test_no_single_bitmap_bit_flip_leaks_card_data(tmp_path: Path, sale: Message) -> None:
    """Whichever field the misframing makes fail, neither the hex nor the error quotes card data."""
    good = framed(sale)
    frames = []
    for bit in range(64):
        frame = bytearray(good)
        frame[15 + bit // 8] ^= 0x80 >> (bit % 8)
        frames.append(bytes(frame))
    text = trace_of(tmp_path, *frames)
    assert text.count("undecodable") == 64
    assert_no_card_data(text)


def test_a_frame_cut_short_shows_only_what_precedes_the_fields(tmp_path: Path, sale: Message) -> None:
    frame = framed(sale)[:40]
    text = trace_of(tmp_path, frame)
    assert_no_card_data(text)
    assert hex_lines(text) == [frame[:23].hex().upper() + "<17 bytes withheld>"]


def test_a_frame_without_its_tpdu_and_header_shows_only_its_length(tmp_path: Path, sale: Message) -> None:
    """Skipping 11 bytes of a bare message puts the PAN where the MTI and bitmap are expected."""
    body = get_dialect().encode(sale)
    frame = len(body).to_bytes(2, "big") + body
    text = trace_of(tmp_path, frame)
    assert_no_card_data(text)
    assert hex_lines(text) == [frame[:2].hex().upper() + f"<{len(body)} bytes withheld>"]


# ---------------------------------------------------------------------------------------------
# Frames that decode: the hex is masked where the decoded part is, byte for byte
# ---------------------------------------------------------------------------------------------


def test_decoded_sale_hex_masks_pan_track2_and_pin_block_in_place(tmp_path: Path, sale: Message) -> None:
    frame = framed(sale)
    text = trace_of(tmp_path, frame)
    assert_no_card_data(text)
    (hexed,) = hex_lines(text)
    assert len(hexed) == 2 * len(frame)  # masked in place: every other byte is where it was
    assert "16622202******0015" in hexed  # field 2: LL prefix, then the PAN as the decoded part shows it
    assert "34622202******0015D" + "*" * 17 in hexed  # field 35: PAN masked, all after the separator hidden
    assert "*" * 16 + "2600000000000000" in hexed  # field 52 hidden, field 53 next to it in clear
    assert " 35=622202******0015D***************** " in text and " 52=<8 bytes hidden> " in text
    unmasked = json.loads(VECTOR_JSON.read_text())["fields"]
    assert unmasked["55"] in hexed and hexed.startswith("01AA" + HEAD)  # the rest is all there


def test_sign_in_reply_keys_are_hidden_in_the_hex(tmp_path: Path) -> None:
    reply = cat.reply(cat.sign_in(stan="000001", **COMMON), "00", f62=bytes.fromhex(KEYS))
    text = trace_of(tmp_path, framed(reply))
    assert_no_card_data(text)
    assert "0056" + "*" * 112 in hex_lines(text)[0] and "62=<56 bytes hidden>" in text


def test_batch_upload_record_pans_are_masked_in_the_hex(tmp_path: Path) -> None:
    upload = cat.batch_upload(stan="000011", records=[BatchRecord("000007", PAN, 12345)], **COMMON)
    text = trace_of(tmp_path, framed(upload))
    assert_no_card_data(text)
    assert "0000622202******0015" in hex_lines(text)[0]


def test_ascii_dialect_masks_each_character_byte(tmp_path: Path) -> None:
    message = Message("0200", {2: PAN, 3: "000000", 35: TRACK2, 52: bytes.fromhex(PIN_BLOCK)})
    text = trace_of(tmp_path, framed(message, "iso87-ascii"), dialect="iso87-ascii")
    (hexed,) = hex_lines(text)
    assert_no_card_data(text)
    assert PAN.encode().hex().upper() not in hexed and TRACK2_TAIL.encode().hex().upper() not in hexed
    masked_pan = b"622202".hex().upper() + "*" * 12 + b"0015".hex().upper()
    assert b"16".hex().upper() + masked_pan in hexed  # LL "16" in ASCII, then the masked PAN
    assert PIN_BLOCK.encode().hex().upper() not in hexed and hexed.endswith("*" * 32)
