"""The daemon's log: one JSON object per line and per event, card numbers masked.

Every line has `ts` (ISO time on the daemon's clock), `event`, and for terminal events `tid`, `state`
and, when there is one, `stan`. Any run of 13 to 19 digits in a string value is treated as a card number
and masked (first 6, last 4) before it is written: a PAN that slipped into a host message or an exception
text never reaches the log.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

from protocol.message import mask_pan

log = logging.getLogger("possim.daemon")

_PAN = re.compile(r"\d{13,}")  # a maximal digit run; 13..19 digits is PAN-like (see journal.vault)


#: Keys whose values are long digit runs that are not card numbers (a 15-digit merchant id, say).
NOT_PANS = frozenset({"mid", "merchant_id", "rrn", "serial_number"})


def mask(value: Any) -> Any:
    """`value` with every PAN-like digit run in its strings masked (recursively through lists and dicts)."""
    if isinstance(value, str):
        return _PAN.sub(lambda m: mask_pan(m[0]) if len(m[0]) <= 19 else m[0], value)
    if isinstance(value, dict):
        return {k: v if k in NOT_PANS else mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def line(event: str, when: float | None = None, **fields: Any) -> str:
    record: dict[str, Any] = {}
    if when is not None:
        record["ts"] = datetime.fromtimestamp(when).isoformat(timespec="milliseconds")
    record["event"] = event
    record.update({k: v for k, v in fields.items() if v is not None})
    return json.dumps(mask(record), ensure_ascii=False, default=str)


def emit(event: str, when: float | None = None, *, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, line(event, when, **fields))


def configure(log_file: str | None = None, *, stream: Any = None) -> list[logging.Handler]:
    """The daemon process's handlers: bare messages (they are JSON already) on stderr and in `log_file`."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers
