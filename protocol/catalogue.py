"""The message catalogue: which MTI, processing code and 60.x make each transaction, and builders.

Both sides use it: the terminal builds requests with the functions below, the host classifies what
it received with `identify` and checks it with `validate` (a request missing a mandatory field is
answered 30). Builders leave field 64 out: the caller MACs the message with `protocol.security.sign`
once every other field is final.
"""

from __future__ import annotations

from dataclasses import dataclass

from .composite import (
    BatchRecord,
    Field60,
    Field61,
    SettlementTotals,
    encode_batch_records,
)
from .message import Message

CURRENCY_CNY = "156"
PIN_SECURITY_CONTROL = "2600000000000000"


@dataclass(frozen=True)
class Transaction:
    """One row of the catalogue table in cup-pos.md."""

    name: str
    request_mti: str
    reply_mti: str
    processing_code: str | None
    condition_code: str | None
    tx_type: str  # 60.1
    nmc: str  # 60.3
    mac: bool  # request and reply carry field 64
    financial: bool  # moves money: journaled reversal before sending
    required: tuple[int, ...]  # fields a request must carry

    @property
    def key(self) -> tuple[str, str | None, str, str]:
        return (self.request_mti, self.processing_code, self.tx_type, self.nmc)


_BASE = (11, 41, 42, 60)
CATALOGUE: dict[str, Transaction] = {
    t.name: t
    for t in [
        Transaction("sign_in", "0800", "0810", None, None, "00", "004", False, False, _BASE),
        Transaction("sign_in_003", "0800", "0810", None, None, "00", "003", False, False, _BASE),
        Transaction("sign_in_001", "0800", "0810", None, None, "00", "001", False, False, _BASE),
        Transaction("sign_off", "0820", "0830", None, None, "00", "002", False, False, _BASE),
        Transaction("echo", "0820", "0830", None, None, "00", "301", False, False, _BASE),
        Transaction("parameter_download", "0800", "0810", None, None, "00", "360", False, False, _BASE),
        Transaction("status_upload", "0820", "0830", None, None, "00", "362", False, False, _BASE),
        Transaction("balance", "0200", "0210", "310000", "00", "01", "000", True, False, (*_BASE, 2, 3, 22, 25, 49)),
        Transaction("sale", "0200", "0210", "000000", "00", "22", "000", True, True, (*_BASE, 2, 3, 4, 22, 25, 49)),
        Transaction("void", "0200", "0210", "200000", "00", "23", "000", True, True,
                    (*_BASE, 2, 3, 4, 22, 25, 37, 49, 61)),
        Transaction("refund", "0220", "0230", "200000", "00", "25", "000", True, True,
                    (*_BASE, 2, 3, 4, 22, 25, 49, 61)),
        Transaction("reversal", "0400", "0410", None, None, "", "", True, False, (*_BASE, 3, 4, 39)),
        Transaction("settlement", "0500", "0510", None, None, "00", "201", False, False, (*_BASE, 48)),
        Transaction("batch_upload", "0320", "0330", None, None, "00", "201", False, False, (*_BASE, 48)),
        Transaction("batch_upload_end", "0320", "0330", None, None, "00", "202", False, False, (*_BASE, 48)),
        Transaction("signature_upload", "0820", "0830", None, None, "07", "800", False, False, (*_BASE, 61, 62)),
        # project-defined firmware download (firmware_sim/messages.py)
        Transaction("firmware_query", "0800", "0810", None, None, "00", "370", False, False, _BASE),
        Transaction("firmware_chunk", "0800", "0810", None, None, "00", "371", False, False, (*_BASE, 62)),
    ]
}

#: Request MTIs that carry a MAC (and whose replies do).
MAC_MTIS = frozenset({"0200", "0210", "0220", "0230", "0400", "0410"})


def identify(message: Message) -> Transaction | None:
    """Which catalogue transaction a request is, or None when it matches no row."""
    if message.mti == "0400":
        return CATALOGUE["reversal"]
    raw60 = message.get(60)
    if not isinstance(raw60, str) or len(raw60) < 8:
        return None
    tx_type, nmc = raw60[0:2], raw60[8:11] or "000"
    processing = message.get(3)
    for t in CATALOGUE.values():
        if t.request_mti != message.mti or t.tx_type != tx_type:
            continue
        if t.processing_code is not None:
            if processing == t.processing_code:
                return t
        elif t.nmc == nmc:
            return t
    return None


def missing_fields(message: Message, transaction: Transaction) -> list[int]:
    """Mandatory fields a request lacks (the host answers 30 naming them)."""
    missing = [n for n in transaction.required if n not in message]
    if transaction.financial and transaction.name != "void" and 2 not in message and 35 not in message:
        missing = [n for n in missing if n != 2]
    return missing


# ----------------------------------------------------------------------------------------------
# Builders (terminal side)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardData:
    """What a card read gives the request: PAN, expiry, tracks, entry mode, chip data."""

    pan: str
    expiry: str = ""
    track2: str = ""
    track3: str = ""
    entry_mode: str = "021"  # 02 swipe, 05 chip, 07 contactless; third digit 1 PIN capable
    card_seq: str = ""
    icc: bytes = b""


def _base(mti: str, stan: str, tid: str, mid: str, f60: Field60) -> Message:
    return Message(mti, {11: stan, 41: tid, 42: mid, 60: f60.encode()})


def sign_in(*, tid: str, mid: str, stan: str, batch: str, mode: str = "004", operator: str = "001",
            device_info: bytes | None = None) -> Message:
    """0800 sign-in; 60.3 = 004 (PIN, MAC and track keys), 003 or 001; 63.1 operator; 62 device info."""
    msg = _base("0800", stan, tid, mid, Field60("00", batch, mode))
    msg[63] = operator
    if device_info:
        msg[62] = device_info
    return msg


def network(name: str, *, tid: str, mid: str, stan: str, batch: str, device_info: bytes | None = None) -> Message:
    """The administrative 08x0 messages: sign_off, echo, parameter_download, status_upload."""
    t = CATALOGUE[name]
    msg = _base(t.request_mti, stan, tid, mid, Field60(t.tx_type, batch, t.nmc))
    if device_info:
        msg[62] = device_info
    return msg


def _card_fields(msg: Message, card: CardData, pin_block: bytes | None) -> None:
    msg[2] = card.pan
    if card.expiry:
        msg[14] = card.expiry
    msg[22] = card.entry_mode[:2] + ("1" if pin_block else "2")
    if card.card_seq:
        msg[23] = card.card_seq
    msg[25] = "00"
    if pin_block:
        msg[26] = "12"
        msg[52] = pin_block
        msg[53] = PIN_SECURITY_CONTROL
    if card.track2:
        msg[35] = card.track2
    if card.track3:
        msg[36] = card.track3
    msg[49] = CURRENCY_CNY
    if card.icc:
        msg[55] = card.icc


def _read_capability(card: CardData) -> tuple[str, str]:
    """60.4 (terminal read capability: 6 = chip + contactless capable) and 60.5 (IC condition)."""
    return "6", "0"


def financial(name: str, *, tid: str, mid: str, stan: str, batch: str, card: CardData, amount_fen: int | None,
              pin_block: bytes | None = None, original: Field61 | None = None, original_rrn: str | None = None,
              operator: str | None = None) -> Message:
    """A 0200 / 0220 request: balance, sale, void or refund."""
    t = CATALOGUE[name]
    rc4, rc5 = _read_capability(card)
    msg = _base(t.request_mti, stan, tid, mid, Field60(t.tx_type, batch, t.nmc, rc4, rc5))
    msg[3] = t.processing_code or "000000"
    if amount_fen is not None:
        if not 0 < amount_fen < 10**12:
            raise ValueError(f"amount {amount_fen} fen out of range")
        msg[4] = f"{amount_fen:012d}"
    _card_fields(msg, card, pin_block)
    if original is not None:
        msg[61] = original.encode()
    if original_rrn:
        msg[37] = original_rrn
    if operator:
        msg[63] = operator
    return msg


def sale(**kw: object) -> Message:
    return financial("sale", **kw)  # type: ignore[arg-type]


def balance(**kw: object) -> Message:
    return financial("balance", amount_fen=None, **kw)  # type: ignore[arg-type]


def void(*, original_rrn: str, original: Field61, **kw: object) -> Message:
    return financial("void", original_rrn=original_rrn, original=original, **kw)  # type: ignore[arg-type]


def refund(*, original: Field61, original_rrn: str | None = None, **kw: object) -> Message:
    return financial("refund", original=original, original_rrn=original_rrn, **kw)  # type: ignore[arg-type]


#: Fields of an original request copied into its reversal (no track or PIN data).
REVERSAL_FIELDS = (2, 3, 4, 11, 14, 22, 23, 25, 41, 42, 49, 60, 61)


def reversal(original: Message, reason: str) -> Message:
    """0400 for an unanswered financial request: its identifying fields, 39 = reason (98, A0, 06)."""
    msg = Message("0400", {n: original[n] for n in REVERSAL_FIELDS if n in original})
    msg[39] = reason
    return msg


def settlement(*, tid: str, mid: str, stan: str, batch: str, totals: SettlementTotals,
               operator: str = "001") -> Message:
    msg = _base("0500", stan, tid, mid, Field60("00", batch, "201"))
    msg[48] = totals.encode()
    msg[49] = CURRENCY_CNY
    msg[63] = operator
    return msg


def batch_upload(*, tid: str, mid: str, stan: str, batch: str, records: list[BatchRecord]) -> Message:
    msg = _base("0320", stan, tid, mid, Field60("00", batch, "201"))
    msg[48] = encode_batch_records(records)
    return msg


def batch_upload_end(*, tid: str, mid: str, stan: str, batch: str, total_records: int) -> Message:
    msg = _base("0320", stan, tid, mid, Field60("00", batch, "202"))
    msg[48] = f"{total_records:04d}"
    return msg


def signature_upload(*, tid: str, mid: str, stan: str, batch: str, original: Field61, image: bytes) -> Message:
    """Project-defined e-signature upload: 0820, 60.1 = 07, 60.3 = 800, 61 = original, 62 = image."""
    msg = _base("0820", stan, tid, mid, Field60("07", batch, "800"))
    msg[61] = original.encode()
    msg[62] = image[:512]
    return msg


# ----------------------------------------------------------------------------------------------
# Replies (host side)
# ----------------------------------------------------------------------------------------------

#: Fields a reply echoes from its request.
ECHOED = (2, 3, 4, 11, 14, 22, 23, 25, 41, 42, 49, 60, 61)


def reply(request: Message, response_code: str, **fields: str | bytes) -> Message:
    """The reply to `request`: MTI + 1 in the function digit, echoed fields, 39, extra fields by number.

    Extra fields are given as ``f37="..."``; the PAN is echoed only for financial messages.
    """
    msg = Message(request.response_mti)
    for n in ECHOED:
        if n in request and (n != 2 or request.mti in MAC_MTIS):
            msg[n] = request[n]
    msg[39] = response_code
    for key, value in fields.items():
        msg[int(key.lstrip("f"))] = value
    return msg
