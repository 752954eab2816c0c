"""Response codes (field 39): meaning and what the terminal does about each.

One table drives the terminal's reaction, the declined slip's wording and the host's choice of
code, so a new code is added in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    """What a terminal does on receiving a response code."""

    APPROVE = "print"  # approved: print the receipt
    DECLINE = "decline"
    RETRY_PIN = "decline, may retry PIN"
    PARAMETERS = "decline; download parameters"
    RETRY_LATER = "retry later"
    SIGN_IN = "sign in again"
    STOP = "stop; configuration error"
    NEVER_CHARGE_TWICE = "decline; never charge twice"


@dataclass(frozen=True)
class ResponseCode:
    code: str
    meaning: str
    action: Action
    display: str  # short text for the terminal display (16-20 chars)

    @property
    def approved(self) -> bool:
        return self.action is Action.APPROVE


_TABLE = [
    ResponseCode("00", "approved", Action.APPROVE, "APPROVED"),
    ResponseCode("01", "refer to issuer", Action.DECLINE, "CALL ISSUER"),
    ResponseCode("03", "invalid merchant", Action.PARAMETERS, "INVALID MERCHANT"),
    ResponseCode("05", "do not honour", Action.DECLINE, "DO NOT HONOUR"),
    ResponseCode("06", "error", Action.DECLINE, "ERROR"),
    ResponseCode("12", "invalid transaction", Action.DECLINE, "INVALID TXN"),
    ResponseCode("13", "invalid amount", Action.DECLINE, "INVALID AMOUNT"),
    ResponseCode("14", "invalid card number", Action.DECLINE, "INVALID CARD"),
    ResponseCode("25", "original transaction not found", Action.DECLINE, "ORIGINAL NOT FOUND"),
    ResponseCode("30", "format error", Action.DECLINE, "FORMAT ERROR"),
    ResponseCode("51", "insufficient funds", Action.DECLINE, "INSUFFICIENT FUNDS"),
    ResponseCode("54", "expired card", Action.DECLINE, "EXPIRED CARD"),
    ResponseCode("55", "wrong PIN", Action.RETRY_PIN, "WRONG PIN"),
    ResponseCode("58", "transaction not permitted on this terminal", Action.DECLINE, "NOT PERMITTED"),
    ResponseCode("61", "amount over limit", Action.DECLINE, "OVER LIMIT"),
    ResponseCode("64", "amount differs from original", Action.DECLINE, "AMOUNT MISMATCH"),
    ResponseCode("75", "PIN tries exceeded", Action.DECLINE, "PIN TRIES EXCEEDED"),
    ResponseCode("77", "batch number differs from host", Action.SIGN_IN, "BATCH MISMATCH"),
    ResponseCode("94", "duplicate transaction", Action.NEVER_CHARGE_TWICE, "DUPLICATE TXN"),
    ResponseCode("96", "system malfunction / host maintenance", Action.RETRY_LATER, "HOST UNAVAILABLE"),
    ResponseCode("97", "terminal not registered", Action.STOP, "TERMINAL NOT REGISTERED"),
    ResponseCode("98", "no reply from issuer", Action.DECLINE, "NO ISSUER REPLY"),
    ResponseCode("99", "PIN format error", Action.SIGN_IN, "PIN FORMAT ERROR"),
    ResponseCode("A0", "MAC verification failed", Action.SIGN_IN, "MAC ERROR"),
]

RESPONSE_CODES: dict[str, ResponseCode] = {rc.code: rc for rc in _TABLE}

APPROVED = "00"
FORMAT_ERROR = "30"
MAC_FAILED = "A0"
DUPLICATE = "94"
SYSTEM_MALFUNCTION = "96"
NOT_REGISTERED = "97"
INVALID_MERCHANT = "03"
BATCH_MISMATCH = "77"
ORIGINAL_NOT_FOUND = "25"

#: Reversal reasons (field 39 of a 0400).
REVERSAL_NO_REPLY = "98"
REVERSAL_MAC_FAILED = "A0"
REVERSAL_OTHER = "06"


def lookup(code: str | None) -> ResponseCode:
    """The table entry for a code; an unknown code is treated as a decline, never as approval."""
    if code is None:
        return ResponseCode("--", "no response code", Action.DECLINE, "NO RESPONSE CODE")
    return RESPONSE_CODES.get(code) or ResponseCode(code, f"unknown response code {code}", Action.DECLINE,
                                                    f"DECLINED {code}")


def describe(code: str | None) -> str:
    return lookup(code).meaning
