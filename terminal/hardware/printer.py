"""The thermal printer: a paper roll counted in lines, jams, failures, and what was actually printed.

`print(receipt)` either outputs the whole receipt (appended to `printed`, what QA inspects) or raises
`PrinterError(kind, lines_printed)` part-way: the partial slip is not in `printed` (it is kept as
`last_partial` for inspection). A receipt consumes one line of paper per line.

- out of paper: the roll ends (naturally, or when the `out_of_paper` fault fires); stays out until
  `load_paper()`.
- jam: the `jam` fault; stays jammed until `clear_jam()`.
- failure: the `fail_after_lines` fault; transient, the next print works.

A print fault strikes at line `param` of the receipt being printed (``arm(..., param=N)``), or at a line
drawn from the rng when no param is given. A fault whose line lies beyond the receipt does not strike it
and stays armed for a longer one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from terminal.hardware.faults import FaultPoints, declare
from terminal.hardware.receipts import Receipt

if TYPE_CHECKING:
    from terminal.hardware.battery import Battery

#: A 57 mm x 30 m thermal roll at about 3.75 mm a line.
DEFAULT_PAPER_LINES = 8000
#: The near-end sensor trips when this many lines are left.
DEFAULT_PAPER_LOW_LINES = 400

PRINTER_ERROR_TEXT = {
    "out_of_paper": "printer out of paper, load paper and reprint",
    "jam": "paper jam, clear the printer and reprint",
    "failure": "print failed, reprint",
}


class PrinterError(Exception):
    """A receipt that did not come out whole. `message` is what the display shows."""

    def __init__(self, kind: str, lines_printed: int, receipt: Receipt | None = None) -> None:
        self.kind = kind
        self.lines_printed = lines_printed
        self.receipt = receipt
        self.message = PRINTER_ERROR_TEXT[kind]
        super().__init__(f"{self.message} ({kind} after {lines_printed} lines)")


@dataclass(frozen=True, slots=True)
class PrintResult:
    receipt: Receipt
    lines: int
    paper_left: int
    paper_low: bool


class Printer:
    FAULT_NAMES = declare(
        "printer",
        {
            "out_of_paper": "the roll ends at line `param` (or a random line) of a receipt; until load_paper()",
            "jam": "the paper jams at line `param` (or a random line) of a receipt; until clear_jam()",
            "fail_after_lines": "the print fails at line `param` (or a random line) of a receipt; transient",
        },
    )

    __slots__ = (
        "_battery",
        "_printed",
        "_rng",
        "failures",
        "faults",
        "jammed",
        "keep_printed",
        "last_partial",
        "lines_total",
        "paper_capacity",
        "paper_left",
        "paper_low_lines",
        "receipts_total",
    )

    def __init__(
        self,
        *,
        rng: random.Random,
        battery: Battery | None = None,
        paper_lines: int = DEFAULT_PAPER_LINES,
        paper_low_lines: int = DEFAULT_PAPER_LOW_LINES,
        keep_printed: int = 10,
    ) -> None:
        self.check(paper_lines=paper_lines, paper_low_lines=paper_low_lines, keep_printed=keep_printed)
        self._rng = rng
        self._battery = battery
        self.paper_capacity = paper_lines
        self.paper_left = paper_lines
        self.paper_low_lines = paper_low_lines
        self.keep_printed = keep_printed
        self.jammed = False
        self._printed: list[Receipt] | None = None
        self.last_partial: tuple[Receipt, int] | None = None
        self.lines_total = 0
        self.receipts_total = 0
        self.failures = 0
        self.faults = FaultPoints("printer", self.FAULT_NAMES, rng)

    @staticmethod
    def check(*, paper_lines: int, paper_low_lines: int, keep_printed: int) -> None:
        """ValueError for settings a printer cannot have (`Hardware` checks them before it builds one)."""
        if paper_lines < 0 or paper_low_lines < 0 or keep_printed < 1:
            raise ValueError("paper_lines and paper_low_lines must be >= 0, keep_printed >= 1")

    @property
    def printed(self) -> list[Receipt]:
        """Receipts that came out whole, oldest first (the last `keep_printed` of them)."""
        if self._printed is None:
            self._printed = []
        return self._printed

    @property
    def out_of_paper(self) -> bool:
        return self.paper_left <= 0

    @property
    def paper_low(self) -> bool:
        return self.paper_left <= self.paper_low_lines

    @property
    def ready(self) -> bool:
        return not self.jammed and not self.out_of_paper

    def load_paper(self, lines: int | None = None) -> None:
        """Load a new roll (full capacity, or `lines` long)."""
        if lines is not None and lines < 0:
            raise ValueError(f"paper length must be >= 0 lines, got {lines}")
        self.paper_left = self.paper_capacity if lines is None else lines

    def clear_jam(self) -> None:
        self.jammed = False

    def _strike_line(self, name: str, length: int) -> int | None:
        """The line at which fault `name` strikes this receipt, or None when it does not."""
        point = self.faults.get(name)
        if point is None or not point.armed or length == 0:
            return None
        if point.param is not None and point.param >= length:
            return None  # beyond this receipt: stays armed for a longer one
        line = point.param  # read first: a count-armed point disarms (and forgets its param) as it fires
        if not point.fires():
            return None
        return line if line is not None else self._rng.randrange(length)

    def print(self, receipt: Receipt) -> PrintResult:
        length = len(receipt.lines)
        if self.jammed:
            self._fail("jam", 0, receipt)
        if self.out_of_paper:
            self._fail("out_of_paper", 0, receipt)

        stop: tuple[int, str] | None = None
        for name, kind in (("jam", "jam"), ("out_of_paper", "out_of_paper"), ("fail_after_lines", "failure")):
            line = self._strike_line(name, length)
            if line is not None:
                stop = (line, kind)
                break
        if self.paper_left < length and (stop is None or self.paper_left < stop[0]):
            stop = (self.paper_left, "out_of_paper")

        if stop is not None:
            lines, kind = stop
            self._feed(lines)
            if kind == "out_of_paper":
                self.paper_left = 0
            elif kind == "jam":
                self.jammed = True
            self._fail(kind, lines, receipt)

        self._feed(length)
        self.receipts_total += 1
        printed = self.printed
        printed.append(receipt)
        if len(printed) > self.keep_printed:
            del printed[: len(printed) - self.keep_printed]
        return PrintResult(receipt, length, self.paper_left, self.paper_low)

    def _feed(self, lines: int) -> None:
        self.paper_left = max(0, self.paper_left - lines)
        self.lines_total += lines
        if self._battery is not None and lines:
            self._battery.consume("print_line", lines)

    def _fail(self, kind: str, lines: int, receipt: Receipt) -> None:
        self.failures += 1
        if lines:
            self.last_partial = (receipt, lines)
        raise PrinterError(kind, lines, receipt)

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "paper_left": self.paper_left,
            "paper_low": self.paper_low,
            "out_of_paper": self.out_of_paper,
            "jammed": self.jammed,
            "receipts": self.receipts_total,
            "lines": self.lines_total,
            "failures": self.failures,
        }

    def __repr__(self) -> str:
        return f"Printer(paper_left={self.paper_left}, jammed={self.jammed}, printed={self.receipts_total})"
