"""Field codecs: how one ISO 8583 data element is laid out on the wire.

A field is described by a `FieldSpec` (format `n`, `z`, `an`, `ans` or `b`; fixed, LLVAR or LLLVAR;
how its length prefix and its data are encoded). `FieldCodec` turns a spec into a `construct`
construct that parses straight to the message model's value type and builds from it.

Why custom constructs rather than `construct`'s stock Adapters: the dialect compiles one `Struct`
per set of present fields (see `protocol.dialect`), and `construct`'s compiler inlines constructs
that can emit code. Each codec emits a call to a pre-bound parse/build function, so a compiled
message costs one function call per field, with BCD handled by `bytes.hex` / `bytes.fromhex`
instead of nibble loops. The same functions serve the interpreted path, so both agree by design.

Every failure raises `DecodeError` / `EncodeError` with the field number and the byte offset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import construct

from .errors import DecodeError, EncodeError

FORMATS = ("n", "z", "an", "ans", "b")
ENCODINGS = ("bcd", "ascii", "binary")

_FORMAT_RE = re.compile(r"^(?P<kind>ans|an|n|z|b)(?P<dots>\.{0,3})(?P<length>\d+)$")


@dataclass(frozen=True)
class FieldSpec:
    """One data element of a dialect.

    `length` is the fixed length or the maximum length, in the unit of the format: digits for n/z,
    characters for an/ans, bytes for b (a fixed `b64` in ISO notation is 64 *bits*: `parse_format`
    converts). `prefix` is 0 (fixed), 2 (LLVAR) or 3 (LLLVAR).
    """

    number: int
    name: str
    kind: str
    length: int
    prefix: int = 0
    length_encoding: str = "bcd"  # how an LL/LLL prefix is written: bcd | ascii | binary
    data_encoding: str = "bcd"  # n/z: bcd | ascii; an/ans: ascii; b: binary | ascii (hex text)
    align: str = "left"  # odd-digit n/z in BCD: left (trailing pad nibble) or right (leading pad)
    charset: str = "ascii"  # an/ans text encoding (e.g. gbk for Chinese free text)

    def __post_init__(self) -> None:
        if self.kind not in FORMATS:
            raise ValueError(f"field {self.number}: unknown format {self.kind!r} (expected one of {FORMATS})")
        if self.prefix not in (0, 2, 3):
            raise ValueError(f"field {self.number}: prefix must be 0, 2 or 3, got {self.prefix}")
        if self.length <= 0:
            raise ValueError(f"field {self.number}: length must be positive")
        if self.prefix and self.length >= 10**self.prefix:
            raise ValueError(f"field {self.number}: max length {self.length} does not fit an L*{self.prefix}")
        if self.length_encoding not in ENCODINGS:
            raise ValueError(f"field {self.number}: unknown length encoding {self.length_encoding!r}")
        if self.data_encoding not in ENCODINGS:
            raise ValueError(f"field {self.number}: unknown data encoding {self.data_encoding!r}")
        if self.align not in ("left", "right"):
            raise ValueError(f"field {self.number}: align must be left or right")

    @property
    def variable(self) -> bool:
        return self.prefix != 0

    @property
    def prefix_size(self) -> int:
        """Bytes of the LL/LLL length prefix on the wire (0 for a fixed field): where the data starts."""
        if not self.prefix:
            return 0
        if self.length_encoding == "bcd":
            return (self.prefix + 1) // 2
        if self.length_encoding == "ascii":
            return self.prefix
        return 1 if self.prefix == 2 else 2

    @property
    def format(self) -> str:
        """The ISO notation of this spec ("n..19", "b64", "ans...999")."""
        length = self.length * 8 if self.kind == "b" and not self.prefix else self.length
        return f"{self.kind}{'.' * self.prefix}{length}"


def parse_format(notation: str) -> tuple[str, int, int]:
    """'n..19' -> ('n', 19, 2); 'b64' -> ('b', 8, 0) since fixed binary lengths are in bits."""
    match = _FORMAT_RE.match(notation.strip())
    if not match:
        raise ValueError(f"bad field format {notation!r}: expected like 'n6', 'an..25', 'b...255', 'b64'")
    kind, dots, length = match["kind"], len(match["dots"]), int(match["length"])
    if dots == 1:
        raise ValueError(f"bad field format {notation!r}: use '..' (LLVAR) or '...' (LLLVAR)")
    if kind == "b" and dots == 0:
        if length % 8:
            raise ValueError(f"bad field format {notation!r}: fixed binary length is in bits, a multiple of 8")
        length //= 8
    return kind, length, dots


# ---------------------------------------------------------------------------------------------
# Parse and build functions. Each returns (parse(io) -> value, build(value) -> bytes); they are
# closures over the spec so the hot path does no dictionary look-ups.
# ---------------------------------------------------------------------------------------------

ParseFn = Callable[[BinaryIO], Any]
BuildFn = Callable[[Any], bytes]


def _short(field: int, io: BinaryIO, wanted: int, got: int, what: str) -> DecodeError:
    return DecodeError(f"{what}: needed {wanted} bytes, only {got} left", field=field, offset=io.tell() - got)


def _length_reader(spec: FieldSpec) -> Callable[[BinaryIO], int]:
    """A reader of the LL/LLL prefix returning the declared length (in the format's unit)."""
    field, prefix, maximum = spec.number, spec.prefix, spec.length
    if spec.length_encoding == "bcd":
        nbytes = (prefix + 1) // 2

        def read(io: BinaryIO) -> int:
            raw = io.read(nbytes)
            text = raw.hex()
            if len(raw) != nbytes or not text.isdigit():
                if len(raw) != nbytes:
                    raise _short(field, io, nbytes, len(raw), "length prefix")
                raise DecodeError(f"length prefix of {nbytes} bytes is not BCD", field=field,
                                  offset=io.tell() - nbytes)
            value = int(text)
            if value > maximum:
                raise DecodeError(f"length {value} exceeds the maximum {maximum}", field=field,
                                  offset=io.tell() - nbytes)
            return value

    elif spec.length_encoding == "ascii":
        nbytes = prefix

        def read(io: BinaryIO) -> int:
            raw = io.read(nbytes)
            if len(raw) != nbytes:
                raise _short(field, io, nbytes, len(raw), "length prefix")
            if not raw.isdigit():
                raise DecodeError(f"length prefix of {nbytes} bytes is not ASCII digits", field=field,
                                  offset=io.tell() - nbytes)
            value = int(raw)
            if value > maximum:
                raise DecodeError(f"length {value} exceeds the maximum {maximum}", field=field,
                                  offset=io.tell() - nbytes)
            return value

    else:  # binary: 1 byte for LL, 2 bytes for LLL
        nbytes = 1 if prefix == 2 else 2

        def read(io: BinaryIO) -> int:
            raw = io.read(nbytes)
            if len(raw) != nbytes:
                raise _short(field, io, nbytes, len(raw), "length prefix")
            value = int.from_bytes(raw, "big")
            if value > maximum:
                raise DecodeError(f"length {value} exceeds the maximum {maximum}", field=field,
                                  offset=io.tell() - nbytes)
            return value

    return read


def _length_writer(spec: FieldSpec) -> Callable[[int], bytes]:
    prefix = spec.prefix
    if spec.length_encoding == "bcd":
        width = prefix + (prefix % 2)
        return lambda n: bytes.fromhex(f"{n:0{width}d}")
    if spec.length_encoding == "ascii":
        return lambda n: f"{n:0{prefix}d}".encode()
    nbytes = 1 if prefix == 2 else 2
    return lambda n: n.to_bytes(nbytes, "big")


def _digits_decoder(spec: FieldSpec) -> Callable[[BinaryIO, bytes, int], str]:
    """Turn the data bytes of an n/z field holding `ndigits` digits into its text."""
    field, kind, right = spec.number, spec.kind, spec.align == "right"
    allowed = "0123456789" if kind == "n" else "0123456789D"

    if spec.data_encoding == "ascii":

        def decode_ascii(io: BinaryIO, raw: bytes, ndigits: int) -> str:
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("data is not ASCII", field=field, offset=io.tell() - len(raw)) from None
            if kind == "z":
                text = text.replace("=", "D")
            if text.strip(allowed):
                raise DecodeError(f"data of {len(raw)} bytes has characters not allowed in {kind}", field=field,
                                  offset=io.tell() - len(raw))
            return text

        return decode_ascii

    def slow_path(io: BinaryIO, raw: bytes, ndigits: int) -> str:
        # Odd-digit values carry a pad nibble; senders write 0, some real terminals write F.
        text = raw.hex().upper()
        if ndigits % 2:
            pad, body = (text[0], text[1:]) if right else (text[-1], text[:-1])
            if pad not in "0F":
                raise DecodeError(f"pad nibble {pad} is not 0 or F", field=field, offset=io.tell() - len(raw))
            text = body
        if text.strip(allowed):
            raise DecodeError(f"data of {len(raw)} bytes is not valid {kind} (BCD)", field=field,
                              offset=io.tell() - len(raw))
        return text

    if kind == "n":
        if right:

            def decode_n(io: BinaryIO, raw: bytes, ndigits: int) -> str:
                text = raw.hex()
                if text.isdigit() and (not ndigits & 1 or text[0] == "0"):
                    return text[1:] if ndigits & 1 else text
                return slow_path(io, raw, ndigits)  # F pad, bad pad or non-BCD
        else:

            def decode_n(io: BinaryIO, raw: bytes, ndigits: int) -> str:
                text = raw.hex()
                if text.isdigit() and (not ndigits & 1 or text[-1] == "0"):
                    return text[:ndigits]
                return slow_path(io, raw, ndigits)  # F pad, bad pad or non-BCD

        return decode_n

    return slow_path  # z: 'D' separators always need the upper-case path


def _digits_encoder(spec: FieldSpec) -> Callable[[str], bytes]:
    field, kind, right = spec.number, spec.kind, spec.align == "right"
    allowed = "0123456789" if kind == "n" else "0123456789D="

    def encode(value: str) -> bytes:
        if not isinstance(value, str) or value.strip(allowed):
            raise EncodeError(f"value {_safe(spec, value)} is not valid {kind} data", field=field)
        if spec.data_encoding == "ascii":
            # ASCII dialects keep the ISO '=' separator on the wire; the model always says 'D'.
            return (value.replace("D", "=") if kind == "z" else value).encode("ascii")
        if kind == "z":
            value = value.replace("=", "D")
        if len(value) % 2:
            value = "0" + value if right else value + "0"
        return bytes.fromhex(value)

    return encode


def _safe(spec: FieldSpec, value: object) -> str:
    """A value for an encode error message: never a PAN, track or PIN block in clear.

    Only for values from the message model, whose field number is certain. Decode errors never
    quote wire data: in a misframed message (a flipped bitmap bit) any field may be reading the
    bytes of the PAN, track 2 or PIN block, and the error text ends up in traces and logs.
    """
    if spec.number in (2, 35, 36, 52, 62):
        return f"<{type(value).__name__} of length {len(value) if hasattr(value, '__len__') else '?'}>"
    return repr(value)


def make_parser(spec: FieldSpec) -> ParseFn:
    """A function reading one field's value from a binary stream positioned at its first byte."""
    field, kind, fixed = spec.number, spec.kind, spec.length
    read_length = _length_reader(spec) if spec.prefix else None

    if kind in ("n", "z"):
        decode = _digits_decoder(spec)
        ascii_data = spec.data_encoding == "ascii"
        if read_length is None:
            nbytes = fixed if ascii_data else (fixed + 1) // 2

            def parse_fixed_digits(io: BinaryIO) -> str:
                raw = io.read(nbytes)
                if len(raw) != nbytes:
                    raise _short(field, io, nbytes, len(raw), "data")
                return decode(io, raw, fixed)

            return parse_fixed_digits

        def parse_var_digits(io: BinaryIO) -> str:
            ndigits = read_length(io)
            nbytes = ndigits if ascii_data else (ndigits + 1) // 2
            raw = io.read(nbytes)
            if len(raw) != nbytes:
                raise _short(field, io, nbytes, len(raw), "data")
            return decode(io, raw, ndigits)

        return parse_var_digits

    if kind in ("an", "ans"):
        charset = spec.charset

        def decode_text(io: BinaryIO, raw: bytes) -> str:
            try:
                return raw.decode(charset)
            except UnicodeDecodeError:
                raise DecodeError(f"data is not {charset} text", field=field,
                                  offset=io.tell() - len(raw)) from None

        if read_length is None:

            def parse_fixed_text(io: BinaryIO) -> str:
                raw = io.read(fixed)
                if len(raw) != fixed:
                    raise _short(field, io, fixed, len(raw), "data")
                return decode_text(io, raw)

            return parse_fixed_text

        def parse_var_text(io: BinaryIO) -> str:
            n = read_length(io)
            raw = io.read(n)
            if len(raw) != n:
                raise _short(field, io, n, len(raw), "data")
            return decode_text(io, raw)

        return parse_var_text

    # b: binary bytes, or hex text on ASCII dialects
    hex_text = spec.data_encoding == "ascii"

    def unhex(io: BinaryIO, raw: bytes) -> bytes:
        try:
            value = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            value = None
        # bytes.fromhex skips whitespace: "12 3456 " would give fewer bytes than the prefix declared
        if value is None or 2 * len(value) != len(raw):
            raise DecodeError("data is not hex text", field=field, offset=io.tell() - len(raw))
        return value

    if read_length is None:
        nbytes = fixed * 2 if hex_text else fixed

        def parse_fixed_binary(io: BinaryIO) -> bytes:
            raw = io.read(nbytes)
            if len(raw) != nbytes:
                raise _short(field, io, nbytes, len(raw), "data")
            return unhex(io, raw) if hex_text else raw

        return parse_fixed_binary

    def parse_var_binary(io: BinaryIO) -> bytes:
        n = read_length(io)
        nbytes = n * 2 if hex_text else n
        raw = io.read(nbytes)
        if len(raw) != nbytes:
            raise _short(field, io, nbytes, len(raw), "data")
        return unhex(io, raw) if hex_text else raw

    return parse_var_binary


def make_builder(spec: FieldSpec) -> BuildFn:
    """A function turning one field's value into its wire bytes (prefix included)."""
    field, kind, length = spec.number, spec.kind, spec.length
    write_length = _length_writer(spec) if spec.prefix else None

    if kind in ("n", "z"):
        encode_digits = _digits_encoder(spec)

        def build_digits(value: str) -> bytes:
            if not isinstance(value, str):
                raise EncodeError(f"expected digits as str, got {type(value).__name__}", field=field)
            n = len(value)
            if write_length is None:
                if n != length:
                    raise EncodeError(f"value has {n} digits, the field is {spec.format}", field=field)
                return encode_digits(value)
            if n > length:
                raise EncodeError(f"value has {n} digits, more than the maximum {length}", field=field)
            return write_length(n) + encode_digits(value)

        return build_digits

    if kind in ("an", "ans"):
        charset = spec.charset

        def build_text(value: str) -> bytes:
            if not isinstance(value, str):
                raise EncodeError(f"expected text, got {type(value).__name__}", field=field)
            try:
                raw = value.encode(charset)
            except UnicodeEncodeError:
                raise EncodeError(f"value {_safe(spec, value)} is not {charset} text", field=field) from None
            n = len(raw)
            if write_length is None:
                if n != length:
                    raise EncodeError(f"value has {n} characters, the field is {spec.format}", field=field)
                return raw
            if n > length:
                raise EncodeError(f"value has {n} characters, more than the maximum {length}", field=field)
            return write_length(n) + raw

        return build_text

    hex_text = spec.data_encoding == "ascii"

    def build_binary(value: bytes) -> bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise EncodeError(f"expected bytes, got {type(value).__name__}", field=field)
        n = len(value)
        raw = value.hex().upper().encode() if hex_text else bytes(value)
        if write_length is None:
            if n != length:
                raise EncodeError(f"value has {n} bytes, the field is {spec.format}", field=field)
            return raw
        if n > length:
            raise EncodeError(f"value has {n} bytes, more than the maximum {length}", field=field)
        return write_length(n) + raw

    return build_binary


class FieldCodec(construct.Construct):
    """A `construct` construct for one field, compilable.

    Parses to the message model's value (str or bytes) and builds from it. When compiled inside a
    `Struct`, it emits a call to a module-level name that `bind_compiled` points at this codec's
    pre-built function: `construct`'s compiler cannot see closures, and re-generating source for
    every field format would duplicate the logic above.
    """

    def __init__(self, spec: FieldSpec) -> None:
        super().__init__()
        self.spec = spec
        self.parse_io = make_parser(spec)
        self.build_value = make_builder(spec)

    # interpreted path
    def _parse(self, stream: BinaryIO, context: Any, path: str) -> Any:
        return self.parse_io(stream)

    def _build(self, obj: Any, stream: BinaryIO, context: Any, path: str) -> Any:
        stream.write(self.build_value(obj))
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        if self.spec.prefix:
            raise construct.SizeofError("variable-length field", path=path)
        return len(self.build_value(_sample(self.spec)))

    # compiled path
    def _emitparse(self, code: Any) -> str:
        code.linkedinstances[id(self)] = self
        return f"fp_{id(self)}(io)"

    def _emitbuild(self, code: Any) -> str:
        code.linkedinstances[id(self)] = self
        return f"(io.write(fb_{id(self)}(obj)), obj)[1]"

    def parse_bytes(self, data: bytes) -> Any:
        """Parse one field from `data` (prefix included); the whole input must be consumed."""
        io = BytesIO(data)
        value = self.parse_io(io)
        if io.tell() != len(data):
            raise DecodeError(f"{len(data) - io.tell()} bytes left over", field=self.spec.number,
                              offset=io.tell())
        return value


class FieldSet(construct.Construct):
    """The data elements of one message shape (a given set of present fields), in order.

    Parses to ``{number: value}`` and builds from that mapping. Compiled, it emits one function
    holding a dict display of direct codec calls - no per-field context bookkeeping - which is
    what makes the compiled codec faster than a generic `Struct` (and than pyiso8583).
    """

    def __init__(self, codecs: list[FieldCodec]) -> None:
        super().__init__()
        self.codecs = codecs

    def _parse(self, stream: BinaryIO, context: Any, path: str) -> dict[int, Any]:
        return {codec.spec.number: codec.parse_io(stream) for codec in self.codecs}

    def _build(self, obj: Any, stream: BinaryIO, context: Any, path: str) -> Any:
        for codec in self.codecs:
            stream.write(codec.build_value(obj[codec.spec.number]))
        return obj

    def _emitparse(self, code: Any) -> str:
        name = f"parse_fieldset_{code.allocateId()}"
        entries = []
        for codec in self.codecs:
            codec._emitparse(code)
            entries.append(f"{codec.spec.number}: fp_{id(codec)}(io)")
        code.append(f"def {name}(io, this):\n    return {{{', '.join(entries)}}}\n")
        return f"{name}(io, this)"

    def _emitbuild(self, code: Any) -> str:
        # Also returns the bytes, so the dialect can join them after MTI and bitmap without a stream.
        name = f"build_fieldset_{code.allocateId()}"
        parts = []
        for codec in self.codecs:
            codec._emitbuild(code)
            parts.append(f"fb_{id(codec)}(obj[{codec.spec.number}])")
        # a message with no data elements is legal: "(,)" would not compile, so join an empty tuple
        joined = f"b''.join(({', '.join(parts)},))" if parts else "b''"
        code.append(
            f"def {name}(obj, io, this):\n"
            f"    data = {joined}\n"
            f"    if io is not None:\n        io.write(data)\n"
            f"    return data\n"
        )
        return f"{name}(obj, io, this)"


def bind_compiled(compiled: Any) -> Any:
    """Point a compiled struct's emitted names at the codecs' functions (see `FieldCodec`)."""
    namespace = compiled.module.__dict__
    for codec in compiled.module.linkedinstances.values():
        if isinstance(codec, FieldCodec):
            namespace[f"fp_{id(codec)}"] = codec.parse_io
            namespace[f"fb_{id(codec)}"] = codec.build_value
    return compiled


def _sample(spec: FieldSpec) -> Any:
    if spec.kind in ("n", "z"):
        return "0" * spec.length
    if spec.kind in ("an", "ans"):
        return " " * spec.length
    return b"\x00" * spec.length
