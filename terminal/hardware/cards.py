"""Cards the simulated reader can read, and the EMV data a chip or contactless read yields.

The catalogue starts from the acquirer's test-card table (`acquirer.testcards`), so the reader and
the reference host agree on every PAN, and takes user-defined cards (from a config file or code).

A chip or contactless read produces field-55 data: a small, plausible set of EMV tags (cryptogram,
unpredictable number, ATC, TVR, date, amount, currency 0156 ...) TLV-encoded with `tlv_encode`.
The cryptogram and unpredictable number come from the reader's seeded rng, so runs are reproducible.
The PAN is never one of the tags (it travels in fields 2 and 35), and a `Card`'s repr masks its PAN
and hides its PIN.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from acquirer.testcards import TEST_CARDS, TestCard, card_by_name
from protocol.message import mask_pan

# TLV ---------------------------------------------------------------------------------------


def _tag_bytes(tag: str | int | bytes) -> bytes:
    if isinstance(tag, bytes):
        raw = tag
    elif isinstance(tag, int):
        if tag < 0:
            raise ValueError(f"TLV tag must be >= 0, got {tag}")
        raw = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    else:
        try:
            raw = bytes.fromhex(tag)
        except ValueError:
            raise ValueError(f"TLV tag must be hex, got {tag!r}") from None
    if not raw:
        raise ValueError("TLV tag is empty")
    # the first byte says whether more tag bytes follow (low 5 bits all set), each next one by bit 8
    expected = 1
    if raw[0] & 0x1F == 0x1F:
        expected = 2
        while expected <= len(raw) and raw[expected - 1] & 0x80:
            expected += 1
    if expected != len(raw):
        raise ValueError(f"TLV tag {raw.hex().upper()} is not a well-formed BER tag")
    return raw


def _length_bytes(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82]) + length.to_bytes(2, "big")
    raise ValueError(f"TLV value too long: {length} bytes")


def tlv_encode(items: Iterable[tuple[str | int | bytes, bytes]] | Mapping[str, bytes]) -> bytes:
    """BER-TLV encode (tag, value) pairs in the order given: [("9F26", b"..."), ("95", b"...")]."""
    pairs = items.items() if isinstance(items, Mapping) else items
    out = bytearray()
    for tag, value in pairs:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"TLV value of tag {tag!r} must be bytes, got {type(value).__name__}")
        out += _tag_bytes(tag)
        out += _length_bytes(len(value))
        out += value
    return bytes(out)


def tlv_decode(data: bytes) -> list[tuple[str, bytes]]:
    """Decode a flat BER-TLV string into [(tag as upper-case hex, value)]; ValueError at a bad byte."""
    out: list[tuple[str, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        start = i
        if data[i] in (0x00, 0xFF):  # padding between objects is allowed by EMV
            i += 1
            continue
        i += 1
        if data[start] & 0x1F == 0x1F:
            while True:
                if i >= n:
                    raise ValueError(f"byte {start}: TLV tag runs past the end")
                i += 1
                if not data[i - 1] & 0x80:
                    break
        tag = data[start:i].hex().upper()
        if i >= n:
            raise ValueError(f"byte {i}: TLV tag {tag} has no length")
        first = data[i]
        i += 1
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3 or i + count > n:
                raise ValueError(f"byte {i - 1}: bad TLV length for tag {tag}")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > n:
            raise ValueError(f"byte {i}: TLV value of tag {tag} ({length} bytes) runs past the end")
        out.append((tag, bytes(data[i : i + length])))
        i += length
    return out


def _bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits = "0" + digits
    return bytes.fromhex(digits)


#: UnionPay debit application id (tag 84), terminal and transaction constants of the simulated kernel.
UNIONPAY_AID = bytes.fromhex("A000000333010101")
CNY = bytes.fromhex("0156")
CHINA = bytes.fromhex("0156")


def build_icc_data(
    *,
    rng: random.Random,
    amount_fen: int,
    when: datetime,
    atc: int,
    tsc: int,
    ifd_serial: str = "00000001",
    txn_type: str = "00",
    contactless: bool = False,
) -> bytes:
    """Field-55 data for one chip/contactless read: an ARQC request cryptogram and its context."""
    if not 0 <= amount_fen <= 999_999_999_999:
        raise ValueError(f"amount must be 0..999999999999 fen, got {amount_fen}")
    if not (len(txn_type) == 2 and txn_type.isdigit()):
        raise ValueError(f"EMV transaction type (9C) must be 2 digits, got {txn_type!r}")
    serial = ifd_serial.encode("ascii")[:8].ljust(8, b" ")
    cryptogram = rng.getrandbits(64).to_bytes(8, "big")
    unpredictable = rng.getrandbits(32).to_bytes(4, "big")
    return tlv_encode(
        [
            ("9F26", cryptogram),  # application cryptogram
            ("9F27", b"\x80"),  # cryptogram information data: ARQC
            ("9F10", bytes.fromhex("07010103A0A802010A010000000000")),  # issuer application data
            ("9F37", unpredictable),  # unpredictable number
            ("9F36", (atc & 0xFFFF).to_bytes(2, "big")),  # application transaction counter
            ("95", bytes(5)),  # terminal verification results: all checks passed
            ("9A", _bcd(when.strftime("%y%m%d"))),  # transaction date
            ("9C", _bcd(txn_type)),  # transaction type
            ("9F02", _bcd(f"{amount_fen:012d}")),  # amount, authorised
            ("5F2A", CNY),  # transaction currency
            ("82", bytes.fromhex("7C00")),  # application interchange profile
            ("9F1A", CHINA),  # terminal country
            ("9F03", bytes(6)),  # amount, other
            ("9F33", bytes.fromhex("E0E1C8")),  # terminal capabilities
            ("9F34", bytes.fromhex("420300") if not contactless else bytes.fromhex("1F0002")),  # CVM
            ("9F35", b"\x22"),  # terminal type: attended, merchant, online with offline capability
            ("9F1E", serial),  # interface device serial number
            ("84", UNIONPAY_AID),  # dedicated file name
            ("9F09", bytes.fromhex("0030")),  # application version number
            ("9F41", _bcd(f"{tsc % 100_000_000:08d}")),  # transaction sequence counter
        ]
    )


# Cards -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Card:
    """A payment card as the reader sees it. Its repr masks the PAN and never shows the PIN.

    `chip` defaults from the service code (first digit 2 or 6: chip card); `contactless` follows `chip`.
    """

    pan: str
    expiry: str  # YYMM
    pin: str = field(default="", repr=False)
    service_code: str = "201"
    name: str = ""
    chip: bool | None = None
    contactless: bool | None = None
    card_seq: str = "001"
    track2: str = ""  # derived from pan/expiry/service code when empty

    def __post_init__(self) -> None:
        if not (self.pan.isdigit() and 12 <= len(self.pan) <= 19):
            raise ValueError(f"card {self.name!r}: PAN must be 12..19 digits")
        if not (len(self.expiry) == 4 and self.expiry.isdigit() and 1 <= int(self.expiry[2:]) <= 12):
            raise ValueError(f"card {self.name!r}: expiry must be YYMM, got {self.expiry!r}")
        if not (len(self.service_code) == 3 and self.service_code.isdigit()):
            raise ValueError(f"card {self.name!r}: service code must be 3 digits, got {self.service_code!r}")
        if self.pin and not (self.pin.isdigit() and 4 <= len(self.pin) <= 12):
            raise ValueError(f"card {self.name!r}: PIN must be 4..12 digits")  # never echo the PIN
        if not (len(self.card_seq) == 3 and self.card_seq.isdigit()):
            raise ValueError(f"card {self.name!r}: card sequence number must be 3 digits")
        if self.chip is None:
            object.__setattr__(self, "chip", self.service_code[0] in "26")
        if self.contactless is None:
            object.__setattr__(self, "contactless", self.chip)
        if not self.track2:
            track2 = f"{self.pan}D{self.expiry}{self.service_code}0000000000"[:37]
            object.__setattr__(self, "track2", track2)
        elif not self.track2.startswith(f"{self.pan}D"):
            raise ValueError(f"card {self.name!r}: track 2 must start with the PAN and a 'D' separator")

    @classmethod
    def from_test_card(cls, card: TestCard) -> Card:
        return cls(
            pan=card.pan,
            expiry=card.expiry,
            pin=card.pin,
            service_code=card.service_code,
            name=card.name,
            track2=card.track2,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Card:
        """A user-defined card from config: {"name", "pan", "expiry", "pin", "service_code", ...}."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown card settings {sorted(unknown)}; known: {sorted(known)}")
        missing = {"pan", "expiry"} - set(data)
        if missing:
            raise ValueError(f"card {data.get('name', '')!r} needs {sorted(missing)}")
        return cls(**data)  # type: ignore[arg-type]

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    def expired(self, yymm: str) -> bool:
        """True when the card expired before month `yymm` (cards are valid through their expiry month)."""
        return self.expiry < yymm

    def __repr__(self) -> str:
        return f"Card(name={self.name!r}, pan={mask_pan(self.pan)!r}, chip={self.chip})"


class CardCatalogue:
    """Named cards: the acquirer's test cards plus user-defined ones. Names and PANs are unique."""

    __slots__ = ("_by_name", "_by_pan")

    def __init__(self, cards: Iterable[Card] = (), *, include_test_cards: bool = True) -> None:
        self._by_name: dict[str, Card] = {}
        self._by_pan: dict[str, Card] = {}
        if include_test_cards:
            for test_card in TEST_CARDS:
                self.add(Card.from_test_card(test_card))
        for card in cards:
            self.add(card)

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, object]], *, include_test_cards: bool = True):
        return cls((Card.from_dict(e) for e in entries), include_test_cards=include_test_cards)

    def add(self, card: Card) -> Card:
        if not card.name:
            raise ValueError(f"a catalogue card needs a name ({card!r})")
        if card.name in self._by_name:
            raise ValueError(f"card name {card.name!r} already in the catalogue")
        if card.pan in self._by_pan:
            other = self._by_pan[card.pan].name
            raise ValueError(f"card {card.name!r}: PAN {card.masked_pan} already used by {other!r}")
        self._by_name[card.name] = card
        self._by_pan[card.pan] = card
        return card

    def by_name(self, name: str) -> Card:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown card {name!r}; known cards: {', '.join(sorted(self._by_name))}") from None

    def by_pan(self, pan: str) -> Card | None:
        return self._by_pan.get(pan)

    def __getitem__(self, name: str) -> Card:
        return self.by_name(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Card]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)


def named_card(name: str) -> Card:
    """The acquirer test card `name` as a readable card ("approved", "insufficient", ...)."""
    return Card.from_test_card(card_by_name(name))
