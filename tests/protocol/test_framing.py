"""Framing: the captured vector, chunked feeding, length formats, errors, serial resync."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import FramingError
from protocol.framing import Frame, FrameDecoder, Header, LengthFormat, Tpdu, decode_frame, encode_frame

VECTOR = Path(__file__).resolve().parents[3] / "shared" / "protocol" / "vectors" / "cup_0200_sale.hex"
RAW = bytes.fromhex(VECTOR.read_text().strip())


def test_vector_splits_and_re_encodes_byte_for_byte():
    frame = decode_frame(RAW)
    assert frame.tpdu is not None and frame.tpdu.hex == "6000060000"
    assert frame.header is not None and frame.header.hex == "603100311003"
    assert frame.payload[:2] == b"\x02\x00"
    assert encode_frame(frame) == RAW


def test_header_carries_the_firmware_version_and_requirement():
    header = Header.for_firmware("3.0.8", requirement=6)
    assert header.hex == "603106030008"
    assert Header.from_bytes(header.to_bytes()).firmware == "3.0.8"
    assert Tpdu(dest=6).swapped() == Tpdu(src=6)


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_any_chunking_yields_the_same_frame(sizes):
    decoder = FrameDecoder()
    data, frames, pos = RAW * 2, [], 0
    for size in sizes:
        frames += decoder.feed(data[pos:pos + size])
        pos += size
    frames += decoder.feed(data[pos:])
    assert frames == [decode_frame(RAW)] * 2
    assert decoder.pending == b""


@pytest.mark.parametrize("length", [LengthFormat.BINARY2, LengthFormat.BCD2, LengthFormat.ASCII4])
def test_length_formats_round_trip(length):
    frame = Frame(Tpdu(), Header(), b"\x08\x00" + bytes(8))
    raw = encode_frame(frame, length)
    assert FrameDecoder(length=length).feed(raw) == [frame]


def test_zero_and_oversize_lengths_are_errors_with_offsets():
    with pytest.raises(FramingError, match="zero-length") as err:
        FrameDecoder().feed(RAW + b"\x00\x00")
    assert err.value.offset == len(RAW)
    with pytest.raises(FramingError, match="exceeds"):
        FrameDecoder().feed(b"\x10\x01" + bytes(10))
    with pytest.raises(FramingError, match="exceeds"):
        encode_frame(Frame(None, None, bytes(5000)))


def test_bad_tpdu_on_tcp_is_fatal():
    with pytest.raises(FramingError, match="TPDU"):
        FrameDecoder().feed(b"\x00\x20\x61" + bytes(40))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=60), min_size=3, max_size=3))
def test_resync_never_loses_a_good_frame_among_garbage(garbage):
    decoder = FrameDecoder(resync=True)
    stream = garbage[0] + RAW + garbage[1] + RAW + garbage[2] + RAW
    frames = []
    for i in range(0, len(stream), 7):
        frames += decoder.feed(stream[i:i + 7])
    assert frames.count(decode_frame(RAW)) >= 3


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_tcp_decoder_raises_only_framing_errors(data):
    with contextlib.suppress(FramingError):
        FrameDecoder().feed(data)
