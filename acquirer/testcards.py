"""Test cards and magic amounts: the one table of how the reference host treats a card or an amount.

Like Stripe's or Adyen's test cards, each decline a failure mode needs has a card (or an amount) that
produces it, so a QA engineer can ask for "insufficient funds" without configuring anything. The
terminal's card-reader catalogue is built from the same table, so both sides agree on the PANs.

Magic amounts: any amount from 900.00 to 900.99 yuan is answered with the response code equal to its
fen part when that code is in `MAGIC_AMOUNT_CODES` (900.51 -> 51, 900.05 -> 05, 900.96 -> 96 ...);
other amounts in that range are approved as usual.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    """One test card: what the reader yields and what the reference host answers."""

    __test__ = False  # not a pytest test class

    name: str
    pan: str
    expiry: str  # YYMM
    pin: str
    service_code: str
    response_code: str  # what the reference host answers for a sale with this card
    description: str
    #: the balance the host reports (balance enquiry) and checks each amount against (51 when over). It is
    #: never debited: every terminal, scenario and load run shares these cards, and a fleet selling for
    #: an hour must not drain the card into 51s that no test asked for.
    balance_fen: int = 1_000_000_00

    @property
    def track2(self) -> str:
        """Track 2 equivalent data as the reader yields it ('D' separator, as on the wire)."""
        return f"{self.pan}D{self.expiry}{self.service_code}0000000000"[:37]


TEST_CARDS: tuple[TestCard, ...] = (
    TestCard("approved", "6222020000000015", "3012", "123456", "201", "00", "approved (default card)"),
    TestCard("approved2", "6217000000000097", "3106", "111111", "201", "00", "approved (second card)"),
    TestCard("insufficient", "6222020000000023", "3012", "123456", "201", "51",
             "insufficient funds", balance_fen=10_00),
    TestCard("do-not-honour", "6222020000000031", "3012", "123456", "201", "05", "do not honour"),
    TestCard("expired", "6222020000000049", "2001", "123456", "201", "54", "expired card"),
    TestCard("over-limit", "6222020000000056", "3012", "123456", "201", "61", "amount over limit"),
    TestCard("issuer-down", "6222020000000064", "3012", "123456", "201", "96", "system malfunction"),
    TestCard("no-issuer-reply", "6222020000000072", "3012", "123456", "201", "98", "no reply from issuer"),
    TestCard("refer", "6222020000000080", "3012", "123456", "201", "01", "refer to issuer"),
)

#: Response codes a magic amount (900.00 .. 900.99 yuan) can ask for.
MAGIC_AMOUNT_CODES = frozenset(
    {"01", "03", "05", "12", "13", "14", "51", "54", "55", "58", "61", "75", "96", "98"}
)
MAGIC_AMOUNT_BASE_FEN = 900_00

_BY_PAN = {card.pan: card for card in TEST_CARDS}
_BY_NAME = {card.name: card for card in TEST_CARDS}


def card_by_pan(pan: str) -> TestCard | None:
    return _BY_PAN.get(pan)


def card_by_name(name: str) -> TestCard:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise KeyError(f"unknown test card {name!r}; known cards: {known}") from None


def magic_amount_code(amount_fen: int) -> str | None:
    """The response code a magic amount asks for, or None for an ordinary amount."""
    if MAGIC_AMOUNT_BASE_FEN <= amount_fen < MAGIC_AMOUNT_BASE_FEN + 100:
        code = f"{amount_fen - MAGIC_AMOUNT_BASE_FEN:02d}"
        return code if code in MAGIC_AMOUNT_CODES else None
    return None
