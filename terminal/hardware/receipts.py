"""Receipts (签购单) and vouchers as the terminal's 32-column thermal printer renders them.

Builders take plain dataclasses (`ReceiptData`, `SettlementData`) so they do not depend on the journal:

- `transaction_receipt`: sale, void, refund, balance slip, merchant or customer copy, optional REPRINT
- `declined_receipt`: response code and its meaning, "NOT CHARGED"
- `settlement_voucher`: batch totals, host reconciliation result, settlement type, merchant serial no.
- `signoff_voucher`: the sign-off voucher (签退凭证) with the same totals and "amounts matched"

Labels are English (ASCII) with the usual Chinese titles. The card number is always masked (first 6 /
last 4), the expiry date is never printed. Width is counted in printer columns: a Chinese character
takes two, so every line fits 32 columns.
"""

from __future__ import annotations

import functools
import textwrap
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from protocol.codes import lookup as lookup_response
from protocol.message import mask_pan

WIDTH = 32
RULE = "-" * WIDTH

TXN_TYPES = {
    "SALE": "消费",
    "VOID": "消费撤销",
    "REFUND": "退货",
    "BALANCE": "余额查询",
}
ENTRY_METHODS = {
    "01": "MANUAL",
    "02": "SWIPE",
    "05": "CHIP",
    "07": "CONTACTLESS",
}
SIGNATURE_MODES = ("paper", "captured", "unsigned", "none")
SETTLEMENT_RESULTS = {"balanced": "对账平", "unbalanced": "对账不平", "error": "对账出错"}
SETTLEMENT_TYPES = ("T0", "T1")

# Layout ------------------------------------------------------------------------------------


def text_width(text: str) -> int:
    """Printer columns `text` takes: wide (CJK) characters take two.

    ASCII (nearly every value on a slip) is its length; other text - the few Chinese labels, the
    merchant's name - is measured once and remembered: asking unicodedata about each character was
    the largest cost of printing a receipt.
    """
    return len(text) if text.isascii() else _wide_text_width(text)


@functools.lru_cache(maxsize=1024)
def _wide_text_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _wrap(text: str) -> list[str]:
    if text_width(text) <= WIDTH:
        return [text]
    if text.isascii():
        return textwrap.wrap(text, WIDTH) or [""]
    lines, current = [], ""
    for ch in text:
        if text_width(current + ch) > WIDTH:
            lines.append(current)
            current = ""
        current += ch
    lines.append(current)
    return lines


def _center(text: str) -> list[str]:
    out = []
    for line in _wrap(text):
        pad = (WIDTH - text_width(line)) // 2
        out.append(" " * pad + line)
    return out


def _pair(label: str, value: str) -> list[str]:
    """Label left, value right on one line; on two lines when they do not fit together."""
    gap = WIDTH - text_width(label) - text_width(value)
    if gap >= 1:
        return [label + " " * gap + value]
    return [*_wrap(label), *(" " * (WIDTH - text_width(v)) + v for v in _wrap(value))]


def format_amount(fen: int) -> str:
    """Minor units to the printed amount: 1234 -> "RMB 12.34"."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"RMB {sign}{fen // 100}.{fen % 100:02d}"


def _when(when: datetime) -> str:
    """2026/12/02 01:09:26 - from isoformat, in half the instructions of strftime (two slips a sale)."""
    return when.isoformat(" ", "seconds").replace("-", "/")


def entry_method_label(entry_mode: str) -> str:
    return ENTRY_METHODS.get(entry_mode[:2], "UNKNOWN")


# Data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiptData:
    """What a transaction slip shows. `pan` is the full PAN: it is masked when rendered."""

    merchant_name: str
    merchant_id: str
    terminal_id: str
    txn_type: str  # SALE | VOID | REFUND | BALANCE
    amount_fen: int
    when: datetime
    pan: str
    entry_mode: str = "021"  # field 22
    operator: str = "001"
    batch: str = "000001"
    stan: str = ""
    rrn: str = ""
    auth_code: str = ""
    response_code: str = "00"
    response_text: str | None = None  # overrides the built-in meaning of the response code
    balance_fen: int | None = None  # BALANCE
    original_stan: str | None = None  # VOID / REFUND
    original_rrn: str | None = None
    signature: str = "paper"  # paper (signature line) | captured | unsigned | none
    issuer: str = ""
    reference: str = ""  # free text (field 63 / notes)

    def __post_init__(self) -> None:
        if self.txn_type not in TXN_TYPES:
            raise ValueError(f"txn_type must be one of {', '.join(TXN_TYPES)}, got {self.txn_type!r}")
        if self.signature not in SIGNATURE_MODES:
            raise ValueError(f"signature must be one of {', '.join(SIGNATURE_MODES)}, got {self.signature!r}")


@dataclass(frozen=True, slots=True)
class SettlementData:
    """What a settlement or sign-off voucher shows: the batch totals and the host's verdict."""

    merchant_name: str
    merchant_id: str
    terminal_id: str
    batch: str
    when: datetime
    debit_count: int
    debit_fen: int
    credit_count: int
    credit_fen: int
    result: str = "balanced"  # balanced | unbalanced | error (0510 field 48 reconciliation code 1/2/3)
    settlement_type: str = "T1"  # T0 | T1
    merchant_serial: str = ""  # 12 digits (商户流水号)
    operator: str = "001"
    uploaded_records: int = 0  # batch upload (0320) records sent after an unbalanced answer
    unsigned_stans: tuple[str, ...] = ()  # approved transactions without a signature
    host_debit_count: int | None = None  # the host's totals, shown when they differ
    host_debit_fen: int | None = None
    host_credit_count: int | None = None
    host_credit_fen: int | None = None

    def __post_init__(self) -> None:
        if self.result not in SETTLEMENT_RESULTS:
            raise ValueError(f"result must be one of {', '.join(SETTLEMENT_RESULTS)}, got {self.result!r}")
        if self.settlement_type not in SETTLEMENT_TYPES:
            raise ValueError(f"settlement_type must be T0 or T1, got {self.settlement_type!r}")
        if self.merchant_serial and not (len(self.merchant_serial) == 12 and self.merchant_serial.isdigit()):
            raise ValueError(f"merchant serial number must be 12 digits, got {self.merchant_serial!r}")

    @property
    def net_fen(self) -> int:
        return self.debit_fen - self.credit_fen


@dataclass(frozen=True, slots=True)
class Receipt:
    """One printed document: its lines (at most 32 columns each) and what QA needs to find it."""

    kind: str  # transaction | declined | settlement | signoff
    lines: tuple[str, ...]
    copy: str | None = None  # merchant | customer
    reprint: bool = False
    stan: str | None = None
    batch: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and text in self.text

    def __str__(self) -> str:
        return self.text


# Builders ----------------------------------------------------------------------------------


def _header(title_cn: str, title_en: str, reprint: bool) -> list[str]:
    return list(_header_lines(title_cn, title_en, reprint))


@functools.lru_cache(maxsize=32)
def _header_lines(title_cn: str, title_en: str, reprint: bool) -> tuple[str, ...]:
    """A slip's title block: a handful of variants, laid out once each."""
    lines = [*_center(title_cn), *_center(title_en)]
    if reprint:
        lines += _center("*** 重打印 REPRINT ***")
    lines.append(RULE)
    return tuple(lines)


def _merchant_block(name: str, merchant_id: str, terminal_id: str, operator: str) -> list[str]:
    return [
        "MERCHANT NAME 商户名称:",
        *_wrap(" " + name),
        *_pair("MERCHANT NO.", merchant_id),
        *_pair("TERMINAL NO.", terminal_id),
        *_pair("OPERATOR NO.", operator),
    ]


def transaction_receipt(data: ReceiptData, *, copy: str = "merchant", reprint: bool = False) -> Receipt:
    """An approved transaction's slip (签购单): merchant copy carries the signature area."""
    if copy not in ("merchant", "customer"):
        raise ValueError(f"copy must be 'merchant' or 'customer', got {copy!r}")
    lines = _header("POS签购单", "POS SALES SLIP", reprint)
    lines += _pair("MERCHANT COPY", "商户存根") if copy == "merchant" else _pair("CUSTOMER COPY", "持卡人存根")
    lines += _merchant_block(data.merchant_name, data.merchant_id, data.terminal_id, data.operator)
    lines.append(RULE)
    lines += _card_block(data)
    lines += _pair("TRANS TYPE", f"{data.txn_type} {TXN_TYPES[data.txn_type]}")
    lines += _pair("BATCH NO.", data.batch)
    lines += _pair("TRACE NO.", data.stan)
    if data.rrn:
        lines += _pair("REF NO.", data.rrn)
    if data.auth_code:
        lines += _pair("AUTH NO.", data.auth_code)
    if data.original_stan:
        lines += _pair("ORIG TRACE NO.", data.original_stan)
    if data.original_rrn:
        lines += _pair("ORIG REF NO.", data.original_rrn)
    lines += _pair("DATE/TIME", _when(data.when))
    if data.txn_type == "BALANCE":
        balance = data.balance_fen if data.balance_fen is not None else data.amount_fen
        lines += ["BALANCE 余额:", *_pair("", format_amount(balance))]
    else:
        lines += ["AMOUNT 金额:", *_pair("", format_amount(data.amount_fen))]
    lines.append(RULE)
    if data.reference:
        lines += _wrap(f"REFERENCE: {data.reference}")
    if copy == "merchant" and data.txn_type != "BALANCE":
        lines += _signature_block(data.signature)
    lines += ["", ""]
    return Receipt("transaction", tuple(lines), copy=copy, reprint=reprint, stan=data.stan, batch=data.batch)


def _card_block(data: ReceiptData) -> list[str]:
    lines = ["CARD NO. 卡号:", *_pair("", mask_pan(data.pan))]
    lines += _pair("ENTRY MODE", f"{entry_method_label(data.entry_mode)} ({data.entry_mode})")
    if data.issuer:
        lines += _pair("ISSUER", data.issuer)
    return lines


_ACKNOWLEDGE = "I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES"


def _signature_block(signature: str) -> list[str]:
    if signature == "paper":
        return [
            "CARDHOLDER SIGNATURE 持卡人签名:",
            "",
            "",
            "_" * WIDTH,
            *_wrap(_ACKNOWLEDGE),
        ]
    if signature == "captured":
        return [
            "E-SIGNATURE CAPTURED 电子签名",
            *_wrap(_ACKNOWLEDGE),
        ]
    if signature == "unsigned":
        return ["*** UNSIGNED 未签名 ***", "signature not captured"]
    return ["NO SIGNATURE REQUIRED 免签"]


def declined_receipt(data: ReceiptData, *, reprint: bool = False) -> Receipt:
    """A declined slip: what was asked, the response code and its meaning, and NOT CHARGED."""
    meaning = data.response_text or lookup_response(data.response_code).meaning
    lines = _header("交易失败", "TRANSACTION DECLINED", reprint)
    lines += _merchant_block(data.merchant_name, data.merchant_id, data.terminal_id, data.operator)
    lines.append(RULE)
    lines += _card_block(data)
    lines += _pair("TRANS TYPE", f"{data.txn_type} {TXN_TYPES[data.txn_type]}")
    lines += _pair("TRACE NO.", data.stan)
    lines += _pair("DATE/TIME", _when(data.when))
    if data.txn_type != "BALANCE":
        lines += ["AMOUNT 金额:", *_pair("", format_amount(data.amount_fen))]
    lines.append(RULE)
    lines += _pair("RESP CODE 应答码", data.response_code)
    lines += _wrap(meaning.upper())
    lines += _center("*** NOT CHARGED 未扣款 ***")
    lines += ["", ""]
    return Receipt("declined", tuple(lines), copy="merchant", reprint=reprint, stan=data.stan, batch=data.batch)


def _totals_block(data: SettlementData) -> list[str]:
    lines = [
        *_pair("TYPE   COUNT", "AMOUNT"),
        *_pair(f"DEBIT  {data.debit_count:>5}", format_amount(data.debit_fen)),
        *_pair(f"CREDIT {data.credit_count:>5}", format_amount(data.credit_fen)),
        *_pair("NET", format_amount(data.net_fen)),
    ]
    if data.host_debit_count is not None or data.host_credit_count is not None:
        lines.append("HOST TOTALS 主机:")
        if data.host_debit_count is not None:
            lines += _pair(f"DEBIT  {data.host_debit_count:>5}", format_amount(data.host_debit_fen or 0))
        if data.host_credit_count is not None:
            lines += _pair(f"CREDIT {data.host_credit_count:>5}", format_amount(data.host_credit_fen or 0))
    return lines


def _settlement_common(data: SettlementData) -> list[str]:
    lines = _merchant_block(data.merchant_name, data.merchant_id, data.terminal_id, data.operator)
    lines += _pair("BATCH NO.", data.batch)
    lines += _pair("DATE/TIME", _when(data.when))
    lines += _pair("SETTLEMENT TYPE", data.settlement_type)
    if data.merchant_serial:
        lines += _pair("MERCHANT SERIAL", data.merchant_serial)
    lines.append(RULE)
    lines += _totals_block(data)
    lines.append(RULE)
    return lines


def settlement_voucher(data: SettlementData, *, reprint: bool = False) -> Receipt:
    """The settlement voucher (结算单): totals and whether the host's totals matched."""
    lines = _header("结算单", "SETTLEMENT", reprint)
    lines += _settlement_common(data)
    verdict = {"balanced": "BALANCED", "unbalanced": "UNBALANCED", "error": "RECONCILIATION ERROR"}
    lines += _pair("RESULT", f"{verdict[data.result]} {SETTLEMENT_RESULTS[data.result]}")
    if data.uploaded_records:
        lines += _pair("BATCH UPLOADED", f"{data.uploaded_records} RECORDS")
    if data.unsigned_stans:
        lines += _pair("UNSIGNED TXNS 未签名", str(len(data.unsigned_stans)))
        lines += _wrap("TRACE " + " ".join(data.unsigned_stans))
    lines += ["", ""]
    return Receipt("settlement", tuple(lines), reprint=reprint, batch=data.batch)


def signoff_voucher(data: SettlementData, *, reprint: bool = False) -> Receipt:
    """The sign-off voucher (签退凭证): settlement type, merchant serial no., totals matched or not."""
    lines = _header("签退凭证", "SIGN-OFF VOUCHER", reprint)
    lines += _settlement_common(data)
    if data.result == "balanced":
        lines += _center("AMOUNTS MATCHED 金额已核对")
    else:
        lines += _center("AMOUNTS NOT MATCHED 金额不符")
    if data.unsigned_stans:
        lines += _pair("UNSIGNED TXNS 未签名", str(len(data.unsigned_stans)))
    lines += _center("SIGNED OFF 已签退")
    lines += ["", ""]
    return Receipt("signoff", tuple(lines), reprint=reprint, batch=data.batch)


def as_reprint(receipt: Receipt) -> Receipt:
    """The same document marked REPRINT (重打印) under its title; a reprint of a reprint is unchanged."""
    if receipt.reprint:
        return receipt
    lines = list(receipt.lines)
    at = lines.index(RULE) if RULE in lines else 0
    lines[at:at] = _center("*** 重打印 REPRINT ***")
    return Receipt(receipt.kind, tuple(lines), copy=receipt.copy, reprint=True, stan=receipt.stan, batch=receipt.batch)
