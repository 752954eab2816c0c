"""What one terminal operation produced: the machine-readable contract of `possim terminal --json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpResult:
    """The outcome of one operation, as a merchant and a script would see it.

    `rc` is the host's response code (None when the host never answered), `amount` is in fen,
    `display` the terminal's display lines after the operation, `receipt` the text printed (None
    when nothing printed), `state` the terminal state afterwards.
    """

    op: str
    ok: bool
    rc: str | None = None
    stan: str | None = None
    batch: str | None = None
    amount: int | None = None
    state: str = ""
    display: list[str] = field(default_factory=list)
    receipt: str | None = None
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {
            "op": self.op,
            "ok": self.ok,
            "rc": self.rc,
            "stan": self.stan,
            "batch": self.batch,
            "amount": self.amount,
            "state": self.state,
            "display": list(self.display),
            "receipt": self.receipt,
            "message": self.message,
        }
        out.update(self.detail)
        return out
