"""Dialects: a table of field specs plus how the MTI, bitmap and frame are written.

A dialect is data (DESIGN principle 3): the built-in ones are TOML files in `protocol/dialects/`,
and a user loads their acquirer's variant with `load_dialect(path)` (TOML or JSON), no code.

Encoding and decoding go through `construct`: for each set of present fields the dialect builds a
`Struct` of their `FieldCodec`s and compiles it. Real traffic repeats a handful of bitmaps (every
sale has the same fields), so compiled structs are cached by bitmap; a bitmap seen for the first
time is handled by the interpreted loop instead, so random input (fuzzing, a hostile peer) costs
no compilation.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Any

import construct

from .errors import DecodeError, DialectError, EncodeError, ProtocolError
from .fields import FORMATS, FieldCodec, FieldSet, FieldSpec, bind_compiled, parse_format
from .message import Message

_COMPILE_AFTER = 2  # compile a bitmap's struct the second time it is seen
_CACHE_LIMIT = 512

# The construct compiler wants a context with these keys; parsing never reads them.
_BASE_CONTEXT = construct.Container(_params={}, _root=None, _parsing=True, _building=False,
                                    _sizing=False, _subcons=None, _io=None, _index=None)


@dataclass(frozen=True)
class FramingSpec:
    """How frames of this dialect are delimited: length prefix, TPDU, 6-byte header."""

    length: str = "BINARY2"  # a protocol.framing.LengthFormat name: BINARY2 | BCD2 | ASCII4 | NONE
    tpdu: bool = True
    header: bool = True
    max_size: int = 4096

    def __post_init__(self) -> None:
        if self.length not in _LENGTH_FORMATS:
            raise DialectError(f"framing length {self.length!r} is not one of {', '.join(_LENGTH_FORMATS)}")

    @property
    def length_format(self) -> Any:
        """The `protocol.framing.LengthFormat` member (imported late: framing does not need dialects)."""
        from .framing import LengthFormat

        return LengthFormat[self.length]


_LENGTH_FORMATS = ("BINARY2", "BCD2", "ASCII4", "NONE")


@dataclass
class Dialect:
    """A named table of field specs with the MTI and bitmap encodings."""

    name: str
    specs: dict[int, FieldSpec]
    mti_encoding: str = "bcd"  # bcd (2 bytes) | ascii (4 chars)
    bitmap_encoding: str = "binary"  # binary (8/16 bytes) | hex (16/32 ASCII hex chars)
    framing: FramingSpec = field(default_factory=FramingSpec)
    description: str = ""

    def __post_init__(self) -> None:
        if self.mti_encoding not in ("bcd", "ascii"):
            raise DialectError(f"dialect {self.name}: mti encoding must be bcd or ascii")
        if self.bitmap_encoding not in ("binary", "hex"):
            raise DialectError(f"dialect {self.name}: bitmap encoding must be binary or hex")
        for number, spec in self.specs.items():
            if not 2 <= number <= 128 or spec.number != number:
                raise DialectError(f"dialect {self.name}: bad field number {number}")
        self.codecs: dict[int, FieldCodec] = {n: FieldCodec(s) for n, s in self.specs.items()}
        self._parsers = {n: c.parse_io for n, c in self.codecs.items()}
        self._builders = {n: c.build_value for n, c in self.codecs.items()}
        self._seen: dict[tuple[int, ...], int] = {}
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._bitmaps: dict[bytes, tuple[int, ...]] = {}
        self._wire_bitmaps: dict[tuple[int, ...], bytes] = {}

    # -- MTI and bitmap ------------------------------------------------------------------
    def _read_mti(self, io: BytesIO) -> str:
        if self.mti_encoding == "bcd":
            raw = io.read(2)
            text = raw.hex()
            if len(raw) != 2:
                raise DecodeError("message shorter than its MTI", field=0, offset=0)
        else:
            raw = io.read(4)
            if len(raw) != 4:
                raise DecodeError("message shorter than its MTI", field=0, offset=0)
            text = raw.decode("ascii", "replace")
        if not text.isdigit() or not text.isascii():
            raise DecodeError(f"MTI {raw.hex().upper()} is not 4 digits", field=0, offset=0)
        return text

    def _read_bitmap(self, io: BytesIO) -> tuple[bytes, int]:
        start = io.tell()
        width = 8 if self.bitmap_encoding == "binary" else 16
        raw = io.read(width)
        if len(raw) != width:
            raise DecodeError("message ends inside the bitmap", field=1, offset=start)
        if self.bitmap_encoding == "hex":
            raw = self._unhex_bitmap(raw, start)
        if raw[0] & 0x80:
            more = io.read(width)
            if len(more) != width:
                raise DecodeError("message ends inside the secondary bitmap", field=1, offset=start + width)
            raw += self._unhex_bitmap(more, start + width) if self.bitmap_encoding == "hex" else more
        return raw, start

    @staticmethod
    def _unhex_bitmap(raw: bytes, offset: int) -> bytes:
        try:
            value = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            value = b""
        # bytes.fromhex skips whitespace, which would shorten the bitmap and shift every field number
        if len(value) * 2 != len(raw):
            raise DecodeError(f"bitmap {raw!r} is not hex text", field=1, offset=offset)
        return value

    @staticmethod
    def fields_in_bitmap(bitmap: bytes) -> tuple[int, ...]:
        """Field numbers whose bits are set (bit 1, the secondary-bitmap flag, excluded)."""
        value = int.from_bytes(bitmap, "big")
        width = len(bitmap) * 8
        return tuple(n for n in range(2, width + 1) if value >> (width - n) & 1)

    @staticmethod
    def bitmap_for(numbers: Iterable[int]) -> bytes:
        numbers = list(numbers)
        secondary = any(n > 64 for n in numbers)
        width = 128 if secondary else 64
        value = 1 << (width - 1) if secondary else 0
        for n in numbers:
            value |= 1 << (width - n)
        return value.to_bytes(width // 8, "big")

    # -- compiled field sets ---------------------------------------------------------
    def _fieldset_for(self, numbers: tuple[int, ...]) -> Any:
        """The compiled field set for these fields, or None while it is still cold."""
        compiled = self._compiled.get(numbers)
        if compiled is not None:
            return compiled
        seen = self._seen.get(numbers, 0) + 1
        if seen < _COMPILE_AFTER:
            if len(self._seen) >= _CACHE_LIMIT:
                self._seen.clear()
            self._seen[numbers] = seen
            return None
        if len(self._compiled) >= _CACHE_LIMIT:
            self._compiled.clear()
        compiled = bind_compiled(FieldSet([self.codecs[n] for n in numbers]).compile())
        self._compiled[numbers] = compiled
        return compiled

    def compiled_source(self, numbers: Iterable[int]) -> str:
        """The Python source `construct` generated for a field set (for docs and debugging)."""
        return FieldSet([self.codecs[n] for n in sorted(numbers)]).compile().source

    def _numbers_for(self, bitmap: bytes, offset: int) -> tuple[int, ...]:
        numbers = self._bitmaps.get(bitmap)
        if numbers is None:
            numbers = self.fields_in_bitmap(bitmap)
            for n in numbers:
                if n not in self._parsers:
                    raise DecodeError(f"field {n} is set in the bitmap but not defined in dialect {self.name}",
                                      field=1, offset=offset)
            if len(self._bitmaps) >= _CACHE_LIMIT:
                self._bitmaps.clear()
            self._bitmaps[bitmap] = numbers
        return numbers

    # -- decode / encode ---------------------------------------------------------------
    def decode(self, data: bytes) -> Message:
        """Bytes from the MTI to the end of the message -> Message. Raises only DecodeError."""
        try:
            return self._decode(data)
        except ProtocolError:
            raise
        except Exception as exc:  # defensive: no foreign exception may escape a decoder
            raise DecodeError(f"undecodable message ({type(exc).__name__}: {exc})") from exc

    def _decode(self, data: bytes) -> Message:
        io = BytesIO(data)
        mti = self._read_mti(io)
        bitmap, bitmap_offset = self._read_bitmap(io)
        numbers = self._numbers_for(bitmap, bitmap_offset)
        compiled = self._fieldset_for(numbers)
        if compiled is not None:
            fields = compiled.parsefunc(io, _BASE_CONTEXT)
        else:
            parsers = self._parsers
            fields = {n: parsers[n](io) for n in numbers}
        if io.tell() != len(data):
            raise DecodeError(f"{len(data) - io.tell()} bytes after the last field", offset=io.tell())
        return Message(mti, fields)

    def decode_partial(self, data: bytes) -> Message | None:
        """The fields that decode before the first error (None when even the MTI does not).

        A host uses this to answer a malformed request with 30 - it needs the MTI, 11 and 41 - rather
        than dropping a terminal that merely sent one bad field.
        """
        io = BytesIO(data)
        try:
            mti = self._read_mti(io)
        except ProtocolError:
            return None
        fields: dict[int, Any] = {}
        try:
            bitmap, _ = self._read_bitmap(io)
            for n in self.fields_in_bitmap(bitmap):
                parser = self._parsers.get(n)
                if parser is None:
                    break
                fields[n] = parser(io)
        except (ProtocolError, ValueError):
            pass
        return Message(mti, fields)

    def layout(self, data: bytes) -> list[tuple[int, int, int]]:
        """Where each part of a message sits: (number, start, end) byte spans, 0 the MTI, 1 the bitmap.

        A trace masks the hex of a frame at the bytes of the PAN, track data, PIN block and keys, and
        only the parsers know where a variable-length field ends, so this walks the same parsers as
        `decode` (offsets from the MTI; a field's data starts `specs[n].prefix_size` bytes in). It
        never raises: it stops at the first part that does not parse and returns the spans before
        it, so for an undecodable frame the spans say how far the frame could be read.
        """
        io = BytesIO(data)
        spans: list[tuple[int, int, int]] = []
        try:
            self._read_mti(io)
            spans.append((0, 0, io.tell()))
            bitmap, start = self._read_bitmap(io)
            spans.append((1, start, io.tell()))
            for n in self.fields_in_bitmap(bitmap):
                start = io.tell()
                self._parsers[n](io)
                spans.append((n, start, io.tell()))
        except (ProtocolError, KeyError, ValueError):
            pass
        return spans

    def encode(self, message: Message) -> bytes:
        """Message -> bytes from the MTI on. Raises only EncodeError."""
        try:
            return self._encode(message)
        except ProtocolError:
            raise
        except Exception as exc:  # e.g. an MTI assigned after construction, non-int field keys
            raise EncodeError(f"unencodable message ({type(exc).__name__}: {exc})") from exc

    def _encode(self, message: Message) -> bytes:
        mti = message.mti
        if not (isinstance(mti, str) and len(mti) == 4 and mti.isascii() and mti.isdigit()):
            raise EncodeError(f"MTI {mti!r} is not 4 digits", field=0)
        out = bytes.fromhex(mti) if self.mti_encoding == "bcd" else mti.encode("ascii")
        numbers = tuple(sorted(message.fields))
        for n in numbers:
            if n not in self._builders:
                raise EncodeError(f"field {n} is not defined in dialect {self.name}", field=n)
        wire_bitmap = self._wire_bitmaps.get(numbers)
        if wire_bitmap is None:
            bitmap = self.bitmap_for(numbers)
            wire_bitmap = bitmap.hex().upper().encode() if self.bitmap_encoding == "hex" else bitmap
            if len(self._wire_bitmaps) >= _CACHE_LIMIT:
                self._wire_bitmaps.clear()
            self._wire_bitmaps[numbers] = wire_bitmap
        out += wire_bitmap
        fields = message.fields
        compiled = self._fieldset_for(numbers)
        if compiled is not None:
            return out + compiled.buildfunc(fields, None, _BASE_CONTEXT)
        builders = self._builders
        return out + b"".join([builders[n](fields[n]) for n in numbers])

    def field_bytes(self, number: int, value: Any) -> bytes:
        """One field's encoding (length prefix included): the MAC code cuts field 64 off by its size."""
        try:
            return self._builders[number](value)  # type: ignore[no-any-return]
        except KeyError:
            raise EncodeError(f"field {number} is not defined in dialect {self.name}", field=number) from None

    def validate(self, message: Message) -> None:
        """Raise EncodeError naming the first field that cannot be encoded."""
        self.encode(message)

    def describe(self, number: int) -> str:
        spec = self.specs.get(number)
        return spec.name if spec else f"field {number}"


# ---------------------------------------------------------------------------------------------
# Loading dialects from spec files
# ---------------------------------------------------------------------------------------------


def dialect_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> Dialect:
    """Build a dialect from the parsed content of a spec file; errors name the entry at fault."""
    try:
        name = str(data.get("name") or Path(source).stem)
        defaults = dict(data.get("defaults", {}))
        _check_defaults(defaults, source)
        framing_raw = dict(data.get("framing", {}))
        framing = FramingSpec(
            length=str(framing_raw.get("length", "BINARY2")).upper(),
            tpdu=bool(framing_raw.get("tpdu", True)),
            header=bool(framing_raw.get("header", True)),
            max_size=int(framing_raw.get("max_size", 4096)),
        )
        raw_fields = data.get("fields")
        if not isinstance(raw_fields, (list, dict)) or not raw_fields:
            raise DialectError(f"{source}: no [fields] table")
        if isinstance(raw_fields, dict):
            entries = list(raw_fields.items())
        else:
            entries = []
            for index, entry in enumerate(raw_fields, 1):
                if not isinstance(entry, Mapping):
                    raise DialectError(f"{source}: fields entry #{index}: expected a table, got {entry!r}")
                entries.append((entry.get("number"), entry))
        specs: dict[int, FieldSpec] = {}
        for key, entry in entries:
            specs_entry = _field_from_entry(key, entry, defaults, source)
            if specs_entry.number in specs:
                raise DialectError(f"{source}: field {specs_entry.number} defined twice")
            specs[specs_entry.number] = specs_entry
        return Dialect(
            name=name,
            specs=specs,
            mti_encoding=str(data.get("mti_encoding", "bcd")),
            bitmap_encoding=str(data.get("bitmap_encoding", "binary")),
            framing=framing,
            description=str(data.get("description", "")),
        )
    except DialectError as exc:
        if str(exc).startswith(source):
            raise
        raise DialectError(f"{source}: {exc}") from None  # from Dialect / FramingSpec: name the file
    except (KeyError, ValueError, TypeError) as exc:
        raise DialectError(f"{source}: {exc}") from exc


_SETTING_KEYS = frozenset({"length_encoding", "data_encoding", "align", "charset"})
_ENTRY_KEYS = _SETTING_KEYS | {"number", "name", "format"}


def _check_defaults(defaults: dict[str, Any], source: str) -> None:
    for key, value in defaults.items():
        if key in FORMATS and isinstance(value, Mapping):
            unknown = sorted(set(value) - _SETTING_KEYS)
            where = f"[defaults.{key}]"
        else:
            unknown = [] if key in _SETTING_KEYS else [key]
            where = "[defaults]"
        if unknown:
            raise DialectError(f"{source}: {where}: unknown key(s) {', '.join(map(repr, unknown))} "
                               f"(allowed: {', '.join(sorted(_SETTING_KEYS))})")


def _field_from_entry(key: Any, entry: Any, defaults: dict[str, Any], source: str) -> FieldSpec:
    try:
        number = int(key)
    except (TypeError, ValueError):
        raise DialectError(f"{source}: field key {key!r} is not a number") from None
    if not isinstance(entry, Mapping):
        raise DialectError(f"{source}: field {number}: expected a table")
    where = f"{source}: field {number}"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:  # a typo such as 'lenght_encoding' would otherwise silently give a different dialect
        raise DialectError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                           f"(allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    if "format" not in entry:
        raise DialectError(f"{where}: missing 'format' (like 'n6', 'an..25', 'b64')")
    try:
        kind, length, prefix = parse_format(str(entry["format"]))
        by_kind = dict(defaults.get(kind, {})) if isinstance(defaults.get(kind), Mapping) else {}
        settings = {**{k: v for k, v in defaults.items() if not isinstance(v, Mapping)}, **by_kind}
        settings.update({k: v for k, v in entry.items() if k not in ("format", "name", "number")})
        data_default = "bcd" if kind in ("n", "z") else "binary" if kind == "b" else "ascii"
        return FieldSpec(
            number=number,
            name=str(entry.get("name", f"field {number}")),
            kind=kind,
            length=length,
            prefix=prefix,
            length_encoding=str(settings.get("length_encoding", "bcd")),
            data_encoding=str(settings.get("data_encoding", data_default)),
            align=str(settings.get("align", "left")),
            charset=str(settings.get("charset", "ascii")),
        )
    except ValueError as exc:
        raise DialectError(f"{where}: {exc}") from None


def load_dialect(path: str | Path) -> Dialect:
    """Load a dialect from a TOML or JSON spec file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise DialectError(f"cannot read dialect file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DialectError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise DialectError(f"{path}: expected a table at the top level")
    return dialect_from_mapping(data, source=str(path))


_BUILTIN: dict[str, Dialect] = {}


def builtin_dialects() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("protocol.dialects").iterdir()
                  if p.name.endswith(".toml"))


def get_dialect(name: str = "cup-pos") -> Dialect:
    """A built-in dialect by name (cached: dialects are immutable once built)."""
    dialect = _BUILTIN.get(name)
    if dialect is None:
        resource = resources.files("protocol.dialects") / f"{name}.toml"
        if not resource.is_file():
            raise DialectError(f"unknown dialect {name!r}; built-in dialects: {', '.join(builtin_dialects())}")
        data = tomllib.loads(resource.read_text("utf-8"))
        dialect = dialect_from_mapping(data, source=f"{name}.toml")
        _BUILTIN[name] = dialect
    return dialect
