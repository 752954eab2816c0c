"""Terminal tests share the host and terminal fixtures of tests/conftest.py; constants re-exported here."""

from ..conftest import MID, TID, TMK

__all__ = ["MID", "TID", "TMK"]
