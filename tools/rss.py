"""The process's resident set size, for the memory benchmarks (Linux: /proc/self/statm)."""

from __future__ import annotations

import os


def rss_kb() -> int:
    """Resident memory of this process now, in KB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
