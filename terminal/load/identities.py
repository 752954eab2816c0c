"""Terminal identities for a fleet: tid, mid and TMK, generated deterministically or read from CSV.

The CSV (`tid,mid,tmk`) is the hand-over between `possim load --emit-identities` and
`possim host --terminals-csv`, so a vendor can register the same fleet on their own host.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    tid: str
    mid: str
    tmk: str

    def __post_init__(self) -> None:
        if len(self.tid) != 8 or len(self.mid) != 15 or len(self.tmk) != 32:
            raise ValueError(f"identity {self.tid!r}: tid 8, mid 15 and tmk 32 hex characters expected")


def generate_identities(count: int, *, first_tid: int = 80000001, terminals_per_merchant: int = 100,
                        seed: str = "possim") -> list[Identity]:
    """`count` identities: consecutive terminal ids, a merchant per 100 terminals, a TMK per terminal."""
    out = []
    for i in range(count):
        tid = f"{first_tid + i:08d}"
        mid = f"8981000{1 + i // terminals_per_merchant:08d}"
        tmk = hashlib.sha256(f"{seed}:{tid}".encode()).hexdigest()[:32].upper()
        out.append(Identity(tid, mid, tmk))
    return out


def write_identities(identities: list[Identity], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tid", "mid", "tmk"])
        writer.writerows((i.tid, i.mid, i.tmk) for i in identities)


def read_identities(path: str | Path) -> list[Identity]:
    """The fleet in a `tid,mid,tmk` CSV. A file with no terminals, a malformed row or a terminal id twice
    is refused, naming the line: two simulated terminals with one id collide on its STANs and batch at
    the host (MAC errors, duplicates), which looks like the host's fault."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"tid", "mid", "tmk"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header tid,mid,tmk")
        out: list[Identity] = []
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            try:
                identity = Identity((row["tid"] or "").strip(), (row["mid"] or "").strip(),
                                    (row["tmk"] or "").strip().upper())
            except ValueError as exc:
                raise ValueError(f"{path}, line {line}: {exc}") from None
            if identity.tid in first_line:
                raise ValueError(f"{path}, line {line}: terminal {identity.tid} is already on line "
                                 f"{first_line[identity.tid]}")
            first_line[identity.tid] = line
            out.append(identity)
    if not out:
        raise ValueError(f"{path}: no terminals (only a header)")
    return out


def partition(identities: list[Identity], index: int, count: int) -> list[Identity]:
    """The share of worker `index` (0-based) of `count` workers: every count-th identity from `index`.

    Shares of different indexes never overlap, so workers that each take their own share never
    drive the same terminal id (two drivers of one terminal would collide on its STANs and batch).
    An index outside 0..count-1 gets nothing rather than a share that overlaps another worker's.
    """
    if count < 1:
        raise ValueError(f"worker count must be at least 1, got {count}")
    if not 0 <= index < count:
        return []
    return identities[index::count]
