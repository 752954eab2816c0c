"""The host floor behind `tools/bench_e2e.py`'s `floor_ratio` does the work it claims: its figure is an
argument about what any durable host costs, so a floor that skipped the MAC or the commit would lie."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from host_floor import MAC_KEY, FloorHost, sale_bodies

from protocol import security
from protocol.dialect import get_dialect
from protocol.framing import split_body


def test_floor_answers_a_signed_sale_and_commits_its_row(tmp_path: Path) -> None:
    db = tmp_path / "floor.sqlite"
    host = FloorHost(str(db))
    bodies = sale_bodies(2)
    replies = [split_body(host.handle(body)) for body in bodies + bodies]  # the same frames again
    dialect = get_dialect()
    for frame in replies:
        reply = dialect.decode(frame.payload)
        assert (reply.mti, reply[39]) == ("0210", "00")
        assert security.verify(dialect, reply, MAC_KEY, encoded=frame.payload)
    rrns = {dialect.decode(f.payload)[37] for f in replies}
    # committed: another connection sees every row, each with its own RRN and the masked card
    rows = sqlite3.connect(db).execute("SELECT rrn, pan_masked, amount_fen FROM txn").fetchall()
    assert {r[0] for r in rows} == rrns and len(rows) == 4
    assert {r[1] for r in rows} == {"622202******0015"}


def test_floor_refuses_a_frame_whose_mac_is_wrong(tmp_path: Path) -> None:
    host = FloorHost(str(tmp_path / "floor.sqlite"))
    body = bytearray(sale_bodies(1)[0])
    body[-1] ^= 0xFF
    with pytest.raises(ValueError, match="MAC"):
        host.handle(bytes(body))
    assert host.ledger.query("SELECT COUNT(*) FROM txn")[0][0] == 0
