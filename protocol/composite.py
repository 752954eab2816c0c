"""Typed views of the composite fields: 60, 61, 48 (settlement totals, batch upload), 62 (device info), 54.

On the wire these are digit strings whose sub-fields sit at fixed offsets; terminal and host both
need them, so they are parsed here once, with errors that name the sub-field, instead of being
sliced by hand in every flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DecodeError, EncodeError


def _is_digits(value: object) -> bool:
    """ASCII digits only: str.isdigit() alone also accepts '²' or '٣', which int() or BCD cannot take."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _digits(value: str, width: int, what: str, number: int) -> str:
    if not (_is_digits(value) and len(value) == width):
        raise EncodeError(f"{what} must be {width} digits, got {value!r}", field=number)
    return value


def _num(value: int, width: int, what: str, number: int) -> str:
    if not 0 <= value < 10**width:
        raise EncodeError(f"{what} {value} does not fit {width} digits", field=number)
    return f"{value:0{width}d}"


@dataclass(frozen=True)
class Field60:
    """60.1 transaction type, 60.2 batch, 60.3 network management code, 60.4, 60.5, then the rest."""

    tx_type: str
    batch: str
    nmc: str = "000"
    read_capability: str = ""
    ic_condition: str = ""
    extra: str = ""

    @classmethod
    def parse(cls, value: str) -> Field60:
        if not _is_digits(value) or len(value) < 8:
            raise DecodeError(f"field 60 {value!r} is shorter than 60.1 + 60.2 or not digits", field=60)
        if len(value) in (9, 10):
            raise DecodeError(f"field 60 {value!r} ends inside 60.3 (n3)", field=60)
        if len(value) == 12:
            raise DecodeError(f"field 60 {value!r} has 60.4 without 60.5", field=60)
        return cls(value[0:2], value[2:8], value[8:11], value[11:12], value[12:13], value[13:])

    def encode(self) -> str:
        out = _digits(self.tx_type, 2, "60.1", 60) + _digits(self.batch, 6, "60.2", 60)
        if not (self.nmc or self.read_capability or self.ic_condition or self.extra):
            return out  # 60.1 + 60.2 only (parse gives nmc='' for an 8-digit field 60)
        out += _digits(self.nmc, 3, "60.3", 60)
        if self.read_capability or self.ic_condition or self.extra:
            out += _digits(self.read_capability or "0", 1, "60.4", 60)
            out += _digits(self.ic_condition or "0", 1, "60.5", 60)
            if self.extra and not _is_digits(self.extra):
                raise EncodeError(f"60 extra digits {self.extra!r} are not digits", field=60)
            out += self.extra
        return out


@dataclass(frozen=True)
class Field61:
    """61.1 original batch, 61.2 original STAN, 61.3 original date MMDD (optional)."""

    batch: str
    stan: str
    date: str = ""
    extra: str = ""

    @classmethod
    def parse(cls, value: str) -> Field61:
        if not _is_digits(value) or len(value) < 12:
            raise DecodeError(f"field 61 {value!r} is shorter than 61.1 + 61.2 or not digits", field=61)
        if 12 < len(value) < 16:
            raise DecodeError(f"field 61 {value!r} ends inside 61.3 (n4)", field=61)
        return cls(value[0:6], value[6:12], value[12:16], value[16:])

    def encode(self) -> str:
        out = _digits(self.batch, 6, "61.1", 61) + _digits(self.stan, 6, "61.2", 61)
        if self.date or self.extra:  # extra digits follow 61.3, which must then be present
            out += _digits(self.date, 4, "61.3", 61)
        if self.extra and not _is_digits(self.extra):
            raise EncodeError(f"61 extra digits {self.extra!r} are not digits", field=61)
        return out + self.extra


@dataclass(frozen=True)
class Totals:
    """One half (domestic or foreign) of the settlement totals in field 48."""

    debit_amount: int = 0
    debit_count: int = 0
    credit_amount: int = 0
    credit_count: int = 0
    reconciliation: int = 0  # 0 in a request; 1 balanced, 2 unbalanced, 3 error in a reply

    def encode(self) -> str:
        return (_num(self.debit_amount, 12, "debit amount", 48) + _num(self.debit_count, 3, "debit count", 48)
                + _num(self.credit_amount, 12, "credit amount", 48)
                + _num(self.credit_count, 3, "credit count", 48) + _num(self.reconciliation, 1, "code", 48))

    @classmethod
    def parse(cls, value: str) -> Totals:
        return cls(int(value[0:12]), int(value[12:15]), int(value[15:27]), int(value[27:30]), int(value[30]))

    def same_amounts(self, other: Totals) -> bool:
        return (self.debit_amount, self.debit_count, self.credit_amount, self.credit_count) == (
            other.debit_amount, other.debit_count, other.credit_amount, other.credit_count)


RECONCILED = {1: "balanced", 2: "unbalanced", 3: "error"}


@dataclass(frozen=True)
class SettlementTotals:
    """Field 48 of 0500 / 0510: domestic then foreign totals, 31 digits each."""

    domestic: Totals = field(default_factory=Totals)
    foreign: Totals = field(default_factory=Totals)

    @classmethod
    def parse(cls, value: str) -> SettlementTotals:
        if not _is_digits(value) or len(value) != 62:
            length = len(value) if isinstance(value, str) else 0
            raise DecodeError(f"settlement totals are 62 digits, got {length} characters", field=48)
        return cls(Totals.parse(value[:31]), Totals.parse(value[31:62]))

    def encode(self) -> str:
        return self.domestic.encode() + self.foreign.encode()

    def with_reconciliation(self, code: int) -> SettlementTotals:
        d, f = self.domestic, self.foreign
        return SettlementTotals(
            Totals(d.debit_amount, d.debit_count, d.credit_amount, d.credit_count, code),
            Totals(f.debit_amount, f.debit_count, f.credit_amount, f.credit_count, code),
        )

    @property
    def result(self) -> str:
        """'balanced', 'unbalanced' or 'error' from the domestic reconciliation code of a reply."""
        return RECONCILED.get(self.domestic.reconciliation, "unknown")


#: Batch upload records per 0320 message.
RECORDS_PER_UPLOAD = 8


@dataclass(frozen=True)
class BatchRecord:
    """One batch-upload record: card organisation n2, STAN n6, PAN n20 (right-aligned), amount n12."""

    stan: str
    pan: str
    amount: int
    organisation: str = "00"

    def encode(self) -> str:
        if not (_is_digits(self.pan) and len(self.pan) <= 20):
            raise EncodeError("batch record PAN must be at most 20 digits", field=48)
        return (_digits(self.organisation, 2, "card organisation", 48) + _digits(self.stan, 6, "STAN", 48)
                + self.pan.rjust(20, "0") + _num(self.amount, 12, "amount", 48))

    @classmethod
    def parse(cls, value: str) -> BatchRecord:
        return cls(stan=value[2:8], pan=value[8:28].lstrip("0"), amount=int(value[28:40]), organisation=value[0:2])


def encode_batch_records(records: list[BatchRecord]) -> str:
    if not 1 <= len(records) <= RECORDS_PER_UPLOAD:
        raise EncodeError(f"a batch upload carries 1..{RECORDS_PER_UPLOAD} records, got {len(records)}", field=48)
    return f"{len(records):02d}" + "".join(r.encode() for r in records)


def parse_batch_records(value: str) -> list[BatchRecord]:
    if not _is_digits(value) or len(value) < 2:
        raise DecodeError("batch upload field 48 must start with a 2-digit record count", field=48)
    count = int(value[:2])
    if not 1 <= count <= RECORDS_PER_UPLOAD:
        raise DecodeError(f"a batch upload carries 1..{RECORDS_PER_UPLOAD} records, declares {count}", field=48)
    if len(value) != 2 + 40 * count:
        raise DecodeError(f"batch upload declares {count} records but carries {len(value) - 2} digits", field=48)
    return [BatchRecord.parse(value[2 + 40 * i: 42 + 40 * i]) for i in range(count)]


def parse_device_info(value: bytes) -> dict[str, str]:
    """0800 field 62 (project-defined): ASCII `SN=...;FW=3.0.8;BAT=87`."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("device information is not ASCII", field=62) from None
    out: dict[str, str] = {}
    for part in filter(None, text.split(";")):
        key, sep, val = part.partition("=")
        if not sep:
            raise DecodeError(f"device information item {part!r} has no '='", field=62)
        out[key.strip()] = val.strip()
    return out


def encode_device_info(**items: object) -> bytes:
    return ";".join(f"{k}={v}" for k, v in items.items()).encode("ascii")


def encode_balance(amount_fen: int, *, currency: str = "156") -> str:
    """Field 54 of a balance reply: account type 10, amount type 02, currency, sign C/D, 12 digits."""
    if abs(amount_fen) >= 10**12:
        raise EncodeError(f"balance {amount_fen} does not fit 12 digits", field=54)
    if not (_is_digits(currency) and len(currency) == 3):
        raise EncodeError(f"balance currency {currency!r} is not n3", field=54)
    sign = "C" if amount_fen >= 0 else "D"
    return f"1002{currency}{sign}{abs(amount_fen):012d}"


def parse_balance(value: str) -> int:
    if (not isinstance(value, str) or len(value) != 20 or not _is_digits(value[:7]) or value[7] not in "CD"
            or not _is_digits(value[8:])):
        raise DecodeError(f"balance {value!r} is not 1002 + currency + C/D + 12 digits", field=54)
    amount = int(value[8:])
    return amount if value[7] == "C" else -amount
