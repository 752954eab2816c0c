"""Memory per terminal: build N signed-out terminals in one process and report the cost of each.

    python tools/terminal_memory.py [N]

Prints Python-heap bytes per terminal (tracemalloc) and RSS growth per terminal, with and without the
journal (each journal holds an SQLite connection), so the fleet cost can be tracked as code changes.
The last line is `terminal_heap_kb=X terminal_rss_kb=Y journal_rss_kb=Z terminals=N`.
"""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminal.config import TerminalConfig
from terminal.core import Terminal
from terminal.hardware import Hardware
from terminal.journal import Journal
from tools.rss import rss_kb


def build(n: int, workdir: Path, *, with_journal: bool) -> list[Terminal]:
    terminals = []
    for i in range(n):
        config = TerminalConfig(tid=f"{10000000 + i:08d}", journal=str(workdir / f"t{i}.sqlite"), seed=i)
        hardware = Hardware(None, clock=lambda: 0.0, seed=i)  # each its own seeded rng (made on first draw)
        journal = (Journal.open(config.journal, tid=config.tid, mid=config.mid, pan_key=config.tmk_bytes)
                   if with_journal else _NullJournal())
        terminals.append(Terminal(config, journal=journal, hardware=hardware))  # type: ignore[arg-type]
    return terminals


class _NullJournal:
    """Stands in for the journal so the terminal's own objects can be measured alone."""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        tracemalloc.start()
        base_heap, base_rss = tracemalloc.get_traced_memory()[0], rss_kb()
        terminals = build(n, Path(tmp), with_journal=False)
        gc.collect()
        heap = (tracemalloc.get_traced_memory()[0] - base_heap) / n / 1024
        rss = (rss_kb() - base_rss) / n
        tracemalloc.stop()
        del terminals
        gc.collect()
        before = rss_kb()
        with_journals = build(n, Path(tmp), with_journal=True)
        journal_rss = (rss_kb() - before) / n
        for t in with_journals:
            t.journal.close()
    print(f"{n} terminals: {heap:.1f} KB Python heap each, {rss:.1f} KB RSS each without journal, "
          f"{journal_rss:.1f} KB RSS each with an open SQLite journal; max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"terminal_heap_kb={heap:.2f} terminal_rss_kb={rss:.2f} journal_rss_kb={journal_rss:.2f} terminals={n}")


if __name__ == "__main__":
    main()
