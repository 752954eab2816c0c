"""`possim decode`: show what a captured ISO 8583 frame says, field by field.

    possim decode HEX... | --file F [--dialect NAME | --spec FILE] [--json] [--unmask]

The input is hex text (whitespace ignored) or, from a file, raw bytes; the frame's length prefix is
stripped when it matches the bytes that follow, and the TPDU and 6-byte header are split off when the
dialect's framing has them (a TPDU starts with 0x60). The human output is a table of fields with the
PAN masked (unless --unmask) and PIN blocks and keys always hidden, followed by the typed views of the
composite fields (60.x, 61.x, settlement totals, batch records, balance, device information).
`--json` prints one object: {"tpdu": HEX|null, "header": HEX|null, "mti": "0200", "fields": {...}},
values as text (binary as upper-case hex); the PAN and track data are masked unless --unmask, and the
PIN block (52) and keys (62) are hidden even with --unmask, in both outputs.

Exit codes: 0 decoded, 1 the input is not a decodable frame (bad hex, DecodeError: the message names
the field and the byte offset), 2 usage (including an unknown dialect or a bad spec file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import DecodeError, Dialect, DialectError, Message, get_dialect, load_dialect
from protocol import catalogue as cat
from protocol.codes import lookup
from protocol.composite import (
    Field60,
    Field61,
    SettlementTotals,
    Totals,
    parse_balance,
    parse_batch_records,
    parse_device_info,
)
from protocol.dialect import FramingSpec, builtin_dialects
from protocol.framing import Header
from protocol.message import mask_pan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

TPDU_ID = 0x60
TPDU_SIZE = 5
HEADER_SIZE = 6
PROCESSING = {0: "none", 1: "download parameters", 3: "sign in again", 6: "download firmware"}


class InputError(Exception):
    """The input is not hex text or not a frame (exit 1)."""


class InputFileError(InputError):
    """--file names a file that cannot be read: a usage error (exit 2), like a --spec file that cannot."""


# ---------------------------------------------------------------------------------------------
# Input: hex text or raw bytes
# ---------------------------------------------------------------------------------------------

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(text: str) -> bytes:
    """Hex text with any whitespace -> bytes; errors say which character is wrong and where."""
    digits = 0
    for position, char in enumerate(text):
        if char.isspace():
            continue
        if char not in _HEX_DIGITS:
            raise InputError(f"not hex text: {char!r} at character {position + 1}")
        digits += 1
    if not digits:
        raise InputError("no hex digits in the input")
    if digits % 2:
        raise InputError(f"odd number of hex digits ({digits}): a byte is cut in half")
    return bytes.fromhex("".join(text.split()))


def looks_like_hex(data: bytes) -> bool:
    """Whether file content is hex text rather than a raw frame."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return False
    compact = "".join(text.split())
    return bool(compact) and len(compact) % 2 == 0 and set(compact) <= _HEX_DIGITS


def read_input(args: argparse.Namespace, dialect: Dialect) -> list[bytes]:
    """The candidate byte strings to decode, most likely first.

    File content that is hex text is decoded as hex; on an ASCII dialect a raw message can itself be
    all hex digits ("0200" + hex bitmap + digits), so the raw content is kept as a second candidate.
    """
    if args.file is None:
        return [parse_hex(" ".join(args.hex))]
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{args.file} is empty")
    if looks_like_hex(data):
        decoded = parse_hex(data.decode("ascii"))
        return [decoded, data.strip()] if dialect.mti_encoding == "ascii" else [decoded]
    return [data]


# ---------------------------------------------------------------------------------------------
# Frame: length prefix, TPDU, header (switch to protocol.framing's Tpdu/Header once it lands)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A frame taken apart: what came before the message, and where the message starts in the input."""

    length: int | None  # the length prefix, when one was present and matched
    tpdu: bytes | None
    header: bytes | None
    body: bytes
    body_offset: int


def _prefix_width_and_value(data: bytes, framing: FramingSpec) -> tuple[int, int | None]:
    """(width of the length prefix, the length it declares or None when it is not one)."""
    kind = framing.length
    if kind == "BINARY2" and len(data) >= 2:
        return 2, int.from_bytes(data[:2], "big")
    if kind == "BCD2" and len(data) >= 2 and data[:2].hex().isdigit():
        return 2, int(data[:2].hex())
    if kind == "ASCII4" and len(data) >= 4 and data[:4].isdigit():
        return 4, int(data[:4])
    return 0, None


def _split_after(data: bytes, offset: int, length: int | None, framing: FramingSpec) -> Split:
    tpdu = header = None
    if framing.tpdu and len(data) - offset >= TPDU_SIZE and data[offset] == TPDU_ID:
        tpdu = data[offset:offset + TPDU_SIZE]
        offset += TPDU_SIZE
        if framing.header and len(data) - offset >= HEADER_SIZE:
            header = data[offset:offset + HEADER_SIZE]
            offset += HEADER_SIZE
    return Split(length, tpdu, header, data[offset:], offset)


def split_frame(data: bytes, framing: FramingSpec) -> list[Split]:
    """Ways to read `data` as a frame, most likely first.

    With its length prefix stripped when the prefix matches the bytes that follow, then as it is (a
    message whose first bytes happen to equal the remaining length). Either way the TPDU and header
    are split off when the dialect's framing has them and a TPDU (0x60) is there.
    """
    width, declared = _prefix_width_and_value(data, framing)
    ways = []
    if width and declared == len(data) - width:
        ways.append(_split_after(data, width, declared, framing))
    ways.append(_split_after(data, 0, None, framing))
    return ways


def length_mismatch(data: bytes, framing: FramingSpec) -> str | None:
    """A diagnosis for a frame whose length prefix is followed by a TPDU but disagrees with it."""
    width, declared = _prefix_width_and_value(data, framing)
    if (width and declared != len(data) - width and framing.tpdu and len(data) > width
            and data[width] == TPDU_ID and data[0] != TPDU_ID):
        return (f"the {width}-byte length prefix declares {declared} bytes but {len(data) - width} follow "
                f"(a truncated or concatenated capture?)")
    return None


def describe_tpdu(tpdu: bytes) -> str:
    return f"id {tpdu[0]:02X}, destination {tpdu[1:3].hex().upper()}, source {tpdu[3:5].hex().upper()}"


def firmware_version(header: bytes) -> str | None:
    """The software sub-version (3 BCD bytes) as the firmware version: 03 00 08 -> 3.0.8."""
    version = Header.from_bytes(header[:6]).firmware
    return version if "." in version else None


def describe_header(header: bytes) -> str:
    status, requirement = header[2] >> 4, header[2] & 0x0F
    parts = [
        f"application {header[0]:02X}",
        f"version {header[1]:02X}",
        f"terminal {'normal' if status == 0 else 'test' if status == 1 else f'status {status}'}",
        f"processing {requirement} ({PROCESSING.get(requirement, 'unknown')})",
    ]
    version = firmware_version(header)
    parts.append(f"firmware {version}" if version else f"sub-version {header[3:6].hex().upper()} (not BCD)")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Decoding and composite views
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    split: Split
    message: Message


def decode_input(candidates: list[bytes], dialect: Dialect) -> Decoded:
    """Decode the first reading of the input that works; otherwise explain why the likeliest failed."""
    first_error: InputError | None = None
    for data in candidates:
        for split in split_frame(data, dialect.framing):
            if not split.body:
                first_error = first_error or InputError("the frame holds no message after its TPDU and header")
                continue
            try:
                return Decoded(split, dialect.decode(split.body))
            except DecodeError as err:
                first_error = first_error or InputError(decode_error_text(err, dialect, split.body_offset))
    hint = length_mismatch(candidates[0], dialect.framing)
    if hint:
        raise InputError(hint)
    assert first_error is not None
    raise first_error


def decode_error_text(err: DecodeError, dialect: Dialect, body_offset: int) -> str:
    if err.field is None:
        where = "message"
    elif err.field == 0:
        where = "MTI"
    elif err.field == 1:
        where = "bitmap"
    else:
        where = f"field {err.field} ({dialect.describe(err.field)})"
    if err.offset is not None:
        where += f" at byte {err.offset} of the message"
        if body_offset:
            where += f" (byte {err.offset + body_offset} of the input)"
    return f"cannot decode: {where}: {err.reason}"


def request_view(message: Message) -> Message:
    """A reply seen as its request (0210 -> 0200) so the catalogue can name the transaction."""
    if not message.is_response:
        return message
    mti = f"{message.mti[:2]}{int(message.mti[2]) - 1}{message.mti[3]}"
    return Message(mti, message.fields)


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _totals_line(half: Totals) -> str:
    return (f"debit {yuan(half.debit_amount)} x{half.debit_count}, credit {yuan(half.credit_amount)} "
            f"x{half.credit_count}, reconciliation {half.reconciliation}")


def composite_views(message: Message, *, unmask: bool = False) -> list[tuple[str, str]]:
    """(label, value) rows for the sub-fields of 39, 48, 54, 60, 61 and 62 that apply to this message."""
    rows: list[tuple[str, str]] = []
    transaction = cat.identify(request_view(message))
    if transaction is not None:
        rows.append(("transaction", f"{transaction.name} ({'reply' if message.is_response else 'request'})"))

    def view(number: int, parse: Callable[[Any], list[tuple[str, str]]]) -> None:
        if number in message:
            try:
                rows.extend(parse(message[number]))
            except DecodeError as err:
                rows.append((str(number), f"(not a valid layout: {err.reason})"))

    if 39 in message and isinstance(message[39], str):
        rc = lookup(message[39])
        rows.append(("39 response", f"{rc.code} {rc.meaning} -> {rc.action.value}"))

    def f60(value: str) -> list[tuple[str, str]]:
        f = Field60.parse(value)
        out = [("60.1 transaction type", f.tx_type), ("60.2 batch number", f.batch)]
        for label, sub in (("60.3 network management code", f.nmc), ("60.4 read capability", f.read_capability),
                           ("60.5 IC condition", f.ic_condition), ("60 further digits", f.extra)):
            if sub:
                out.append((label, sub))
        return out

    def f61(value: str) -> list[tuple[str, str]]:
        f = Field61.parse(value)
        out = [("61.1 original batch", f.batch), ("61.2 original STAN", f.stan)]
        if f.date:
            out.append(("61.3 original date", f.date))
        if f.extra:
            out.append(("61 further digits", f.extra))
        return out

    def f48(value: str) -> list[tuple[str, str]]:
        name = transaction.name if transaction else ""
        if name == "settlement":
            totals = SettlementTotals.parse(value)
            out = [("48 domestic", _totals_line(totals.domestic)), ("48 foreign", _totals_line(totals.foreign))]
            if message.is_response:
                out.append(("48 result", totals.result))
            return out
        if name == "batch_upload":
            out = []
            for i, record in enumerate(parse_batch_records(value), 1):
                pan = record.pan if unmask else mask_pan(record.pan)
                out.append((f"48 record {i}", f"organisation {record.organisation}, STAN {record.stan}, "
                                              f"PAN {pan}, amount {yuan(record.amount)}"))
            return out
        if name == "batch_upload_end":
            return [("48 total records", value)]
        return []

    def f54(value: str) -> list[tuple[str, str]]:
        return [("54 balance", f"{'-' if parse_balance(value) < 0 else ''}{yuan(abs(parse_balance(value)))} "
                               f"(currency {value[4:7]})")]

    def f62(value: bytes) -> list[tuple[str, str]]:
        if message.mti not in ("0800", "0820") or (transaction and transaction.name == "signature_upload"):
            return []  # keys (0810) stay hidden; a signature image is not text
        return [(f"62 {key}", val) for key, val in parse_device_info(value).items()]

    view(60, f60)
    view(61, f61)
    view(48, f48)
    view(54, f54)
    view(62, f62)
    return rows


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def masked_batch_records(message: Message) -> str | None:
    """Field 48 of a batch upload with the PAN of each record masked (None when 48 is not that)."""
    transaction = cat.identify(request_view(message))
    value = message.get(48)
    if transaction is None or transaction.name != "batch_upload" or not isinstance(value, str):
        return None
    try:
        records = parse_batch_records(value)
    except DecodeError:
        return "*" * len(value)  # unreadable records may still hold PANs
    out = value[:2]
    for record in records:
        pan = mask_pan(record.pan)
        out += record.organisation + record.stan + pan.rjust(20, "0") + f"{record.amount:012d}"
    return out


def field_texts(message: Message, *, unmask: bool) -> dict[str, str]:
    """Field values as text: `as_json_fields`, plus the PANs inside batch-upload records masked."""
    fields = message.as_json_fields(unmask=unmask)
    if not unmask:
        masked = masked_batch_records(message)
        if masked is not None:
            fields["48"] = masked
    return fields


def as_json(decoded: Decoded, *, unmask: bool) -> dict[str, Any]:
    split = decoded.split
    return {
        "tpdu": split.tpdu.hex().upper() if split.tpdu is not None else None,
        "header": split.header.hex().upper() if split.header is not None else None,
        "mti": decoded.message.mti,
        "fields": field_texts(decoded.message, unmask=unmask),
    }


def render(decoded: Decoded, dialect: Dialect, *, unmask: bool) -> str:
    split, message = decoded.split, decoded.message
    lines = [f"dialect  {dialect.name}"]
    if split.length is not None:
        lines.append(f"length   {split.length}")
    if split.tpdu is not None:
        lines.append(f"TPDU     {split.tpdu.hex().upper():<14} {describe_tpdu(split.tpdu)}")
    if split.header is not None:
        lines.append(f"header   {split.header.hex().upper():<14} {describe_header(split.header)}")
    lines.append(f"MTI      {message.mti}")
    lines.append(f"bitmap   {Dialect.bitmap_for(message.fields).hex().upper()}")
    lines.append("")
    texts = field_texts(message, unmask=unmask)  # PIN block and keys hidden even with --unmask
    rows = [(str(n), dialect.describe(n), dialect.specs[n].format, texts[str(n)]) for n in sorted(message.fields)]
    name_width = max([len(r[1]) for r in rows] + [4])
    fmt_width = max([len(r[2]) for r in rows] + [6])
    lines.append(f"{'no':>3}  {'name':<{name_width}}  {'format':<{fmt_width}}  value")
    for number, name, fmt, value in rows:
        lines.append(f"{number:>3}  {name:<{name_width}}  {fmt:<{fmt_width}}  {value}")
    views = composite_views(message, unmask=unmask)
    if views:
        lines.append("")
        label_width = max(len(label) for label, _ in views)
        lines.extend(f"{label:<{label_width}}  {value}" for label, value in views)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="decode a captured ISO 8583 frame (hex or raw bytes)",
        description="Decode a captured ISO 8583 frame: hex text or raw bytes, with or without the length "
                    "prefix, TPDU and header. PAN and track data masked unless --unmask; the PIN "
                    "block (52) and keys (62) are always hidden.",
        epilog="exit codes: 0 decoded, 1 not a decodable frame (the error names field and byte), 2 usage",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("hex", nargs="*", default=[], metavar="HEX",
                        help="the frame as hex text (whitespace ignored; several words are joined)")
    source.add_argument("--file", "-f", metavar="F",
                        help="read the frame from F ('-' for stdin): hex text or raw bytes")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dialect", choices=builtin_dialects(), default="cup-pos",
                       help="built-in dialect (default: cup-pos)")
    which.add_argument("--spec", metavar="FILE", help="a dialect spec file (TOML or JSON)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--unmask", action="store_true",
                        help="show the PAN and track data in clear, in the table and in --json (the PIN block "
                             "and keys stay hidden)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        dialect = load_dialect(args.spec) if args.spec else get_dialect(args.dialect)
    except DialectError as err:
        print(f"possim decode: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        decoded = decode_input(read_input(args, dialect), dialect)
    except InputError as err:
        print(f"possim decode: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, InputFileError) else EXIT_FAILED
    if args.json:
        print(json.dumps(as_json(decoded, unmask=args.unmask), ensure_ascii=False))
    else:
        print(render(decoded, dialect, unmask=args.unmask))
    return EXIT_OK
