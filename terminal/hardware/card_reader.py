"""The card reader: swipe (track 2), chip insert and contactless tap, with read faults and worn contacts.

`read(card, method)` returns a `CardRead` (what the terminal puts in fields 2, 14, 22, 23, 35 and 55) or
raises `CardReadError` whose `reason` is the text the merchant sees ("read error, swipe again").

Worn contacts (source: oxidised MAG-swipe contacts, about 2 failures a month; cleaning cut failures by
90%): the probability that a contact read (swipe or chip) fails is
``min(wear_cap, base_error_rate + wear_rate * reads_since_clean)``; `clean()` resets the wear. Contactless
reads touch no contacts: only `base_error_rate` and the fault points apply to them. The default wear is
0 (a pristine reader, no random draws); `FIELD_WEAR_RATE` / `FIELD_WEAR_CAP` reproduce the field figure
for a shop doing about 50 reads a day.

Fault points: `read_error` (the read fails as a worn head would) and `no_card` (no card detected).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from protocol.message import mask_pan, mask_track
from terminal.hardware.cards import Card, build_icc_data
from terminal.hardware.faults import FaultPoints, declare

if TYPE_CHECKING:
    from terminal.hardware.battery import Battery

ReadMethod = Literal["swipe", "chip", "contactless"]
READ_METHODS: tuple[str, ...] = ("swipe", "chip", "contactless")
#: First two digits of field 22 per read method; the third is 1 (PIN capable) or 2.
ENTRY_MODE_PREFIX = {"swipe": "02", "chip": "05", "contactless": "07"}
#: What the merchant sees when a read fails, per method.
READ_ERROR_TEXT = {
    "swipe": "read error, swipe again",
    "chip": "chip read error, insert again",
    "contactless": "read error, tap again",
}
NO_CARD_TEXT = "no card detected, present card again"

#: With about 1500 contact reads a month: ~0.2 failures in the month after a cleaning, and a worn reader
#: (at the cap) ~2 failures a month, ten times as many: the figures of the source case.
FIELD_WEAR_RATE = 1.8e-7
FIELD_WEAR_CAP = 0.0015

#: Calendar date used in EMV data when neither `when=` nor a calendar is given (plus the clock's seconds).
SIM_EPOCH = datetime(2025, 1, 1)


class CardReadError(Exception):
    """A read that yielded no card data. `reason` is the merchant-facing text shown on the display.

    kind: "read_error" (retry the same way), "no_card", or "not_supported" (use another method).
    cause: "fault" (fault point), "worn_contacts" (wear model), "no_card", "no_chip", "no_contactless".
    """

    def __init__(self, reason: str, *, kind: str, method: str, cause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.method = method
        self.cause = cause


@dataclass(frozen=True, slots=True, repr=False)
class CardRead:
    """The data a successful read yields. repr masks the PAN and track data."""

    pan: str
    expiry: str  # YYMM; goes to field 14, never onto a receipt
    track2: str  # 'D' separator, as on the wire (field 35)
    icc: bytes | None  # field 55 for chip and contactless reads
    entry_mode: str  # field 22: "021" swipe, "051" chip, "071" contactless
    card_seq: str  # field 23: "000" swipe, the card's sequence number ("001") for chip/contactless
    method: str
    service_code: str

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:
        icc = f"{len(self.icc)} bytes" if self.icc is not None else None
        return (
            f"CardRead(pan={mask_pan(self.pan)!r}, track2={mask_track(self.track2)!r}, "
            f"entry_mode={self.entry_mode!r}, card_seq={self.card_seq!r}, icc={icc})"
        )


class CardReader:
    FAULT_NAMES = declare(
        "reader",
        {
            "read_error": "the read fails: CardReadError 'read error, swipe again'; counts as a reader error",
            "no_card": "no card detected: CardReadError 'no card detected, present card again'",
        },
    )

    __slots__ = (
        "_atc",
        "_battery",
        "_clock",
        "_rng",
        "_tsc",
        "base_error_rate",
        "cleanings",
        "errors",
        "errors_since_clean",
        "faults",
        "ifd_serial",
        "last_error",
        "no_card",
        "pin_capable",
        "reads",
        "reads_since_clean",
        "wear_cap",
        "wear_rate",
    )

    @staticmethod
    def check(*, base_error_rate: float, wear_rate: float, wear_cap: float) -> None:
        """ValueError for settings a reader cannot have (`Hardware` checks them before it builds one)."""
        for label, value in (("base_error_rate", base_error_rate), ("wear_rate", wear_rate), ("wear_cap", wear_cap)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be within 0..1, got {value!r}")

    def __init__(
        self,
        *,
        rng: random.Random,
        clock: Callable[[], float] | None = None,
        battery: Battery | None = None,
        pin_capable: bool = True,
        base_error_rate: float = 0.0,
        wear_rate: float = 0.0,
        wear_cap: float = 0.5,
        ifd_serial: str = "00000001",
    ) -> None:
        self.check(base_error_rate=base_error_rate, wear_rate=wear_rate, wear_cap=wear_cap)
        self._rng = rng
        self._clock = clock
        self._battery = battery
        self.pin_capable = pin_capable
        self.base_error_rate = float(base_error_rate)
        self.wear_rate = float(wear_rate)
        self.wear_cap = float(wear_cap)
        self.ifd_serial = ifd_serial
        self.faults = FaultPoints("reader", self.FAULT_NAMES, rng)
        self._atc: dict[str, int] | None = None
        self._tsc = 0
        self.reads = 0  # read attempts that reached the card (successful or failed)
        self.errors = 0  # failed reads (fault or worn contacts)
        self.errors_since_clean = 0
        self.reads_since_clean = 0  # contact reads (swipe, chip) since the last clean()
        self.no_card = 0
        self.cleanings = 0
        self.last_error: str | None = None

    # Wear ----------------------------------------------------------------------------------
    def failure_probability(self, method: str = "swipe") -> float:
        """Chance that the next read by `method` fails from wear (and the base rate), faults aside."""
        if method == "contactless":
            return self.base_error_rate
        return min(self.wear_cap, self.base_error_rate + self.wear_rate * self.reads_since_clean)

    def clean(self) -> None:
        """Clean the contacts (the source's remedy): wear back to zero."""
        self.reads_since_clean = 0
        self.errors_since_clean = 0
        self.cleanings += 1

    # Reading -------------------------------------------------------------------------------
    def read(
        self,
        card: Card,
        method: ReadMethod | str,
        *,
        amount_fen: int = 0,
        txn_type: str = "00",
        when: datetime | None = None,
    ) -> CardRead:
        """Read `card` by "swipe", "chip" or "contactless"; raise CardReadError when no data results.

        `amount_fen`, `txn_type` (EMV 9C: "00" goods, "31" balance, "20" refund) and `when` (transaction
        date) go into the chip data; give them for chip and contactless reads.
        """
        if method not in ENTRY_MODE_PREFIX:
            raise ValueError(f"unknown read method {method!r}; use one of {', '.join(READ_METHODS)}")
        if method == "chip" and not card.chip:
            raise CardReadError("card has no chip, swipe card", kind="not_supported", method=method, cause="no_chip")
        if method == "contactless" and not card.contactless:
            raise CardReadError(
                "card not contactless, insert or swipe", kind="not_supported", method=method, cause="no_contactless"
            )
        if self.faults.fires("no_card"):
            self.no_card += 1
            self.last_error = NO_CARD_TEXT
            raise CardReadError(NO_CARD_TEXT, kind="no_card", method=method, cause="no_card")

        self.reads += 1
        if method != "contactless":
            self.reads_since_clean += 1
        if self._battery is not None:
            self._battery.consume(method)

        if self.faults.fires("read_error"):
            self._fail(method, "fault")
        p = self.failure_probability(method)
        if p > 0.0 and self._rng.random() < p:
            self._fail(method, "worn_contacts")

        pin_digit = "1" if self.pin_capable else "2"
        entry_mode = ENTRY_MODE_PREFIX[method] + pin_digit
        if method == "swipe":
            icc = None
            card_seq = "000"
        else:
            icc = build_icc_data(
                rng=self._rng,
                amount_fen=amount_fen,
                when=when if when is not None else self._now(),
                atc=self._next_atc(card.pan),
                tsc=self._next_tsc(),
                ifd_serial=self.ifd_serial,
                txn_type=txn_type,
                contactless=method == "contactless",
            )
            card_seq = card.card_seq
        return CardRead(
            pan=card.pan,
            expiry=card.expiry,
            track2=card.track2,
            icc=icc,
            entry_mode=entry_mode,
            card_seq=card_seq,
            method=method,
            service_code=card.service_code,
        )

    def _fail(self, method: str, cause: str) -> None:
        self.errors += 1
        self.errors_since_clean += 1
        reason = READ_ERROR_TEXT[method]
        self.last_error = reason
        raise CardReadError(reason, kind="read_error", method=method, cause=cause)

    def _now(self) -> datetime:
        seconds = self._clock() if self._clock is not None else 0.0
        return SIM_EPOCH + timedelta(seconds=max(0.0, seconds))

    def _next_atc(self, pan: str) -> int:
        if self._atc is None:
            self._atc = {}
        atc = self._atc.get(pan, 0) + 1
        self._atc[pan] = atc
        return atc

    def _next_tsc(self) -> int:
        self._tsc += 1
        return self._tsc

    # Diagnostics ---------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, object]:
        return {
            "reads": self.reads,
            "errors": self.errors,
            "errors_since_clean": self.errors_since_clean,
            "reads_since_clean": self.reads_since_clean,
            "no_card": self.no_card,
            "cleanings": self.cleanings,
            "failure_probability": self.failure_probability("swipe"),
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        return f"CardReader(reads={self.reads}, errors={self.errors}, since_clean={self.reads_since_clean})"
