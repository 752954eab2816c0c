"""Crash tests: `possim terminal` SIGKILLed at each step of sale, void, settlement and sign-off.

Each case restarts the terminal on the same journal and checks what a merchant and an acquirer
care about: nothing lost, nothing charged twice, journal and host ledger agree, one settlement and
one sign-off.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from acquirer.config import HostConfig
from acquirer.host import HostServer
from terminal.journal import Journal

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"
ROOT = Path(__file__).resolve().parents[2]


async def possim_terminal(url: str, journal: Path, *ops: str, crash_at: str | None = None) -> tuple[int, list[dict]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("POSSIM_CRASH_AT", None)
    if crash_at:
        env["POSSIM_CRASH_AT"] = crash_at
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "terminal", "terminal", "--connect", url, "--journal", str(journal), "--tid", TID,
        "--mid", MID, "--tmk", TMK, "--reply-timeout", "5", "--json", *ops,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    if proc.returncode not in (0, 1, -signal.SIGKILL):
        raise AssertionError(f"possim terminal exited {proc.returncode}: {err.decode()}")
    return proc.returncode, lines


CASES = [
    ("sale.journaled", ("sale", "20.00")),
    ("sale.sent", ("sale", "20.00")),
    ("sale.replied", ("sale", "20.00")),
    ("sale.recorded", ("sale", "20.00")),
    ("void.journaled", ("void", "000002")),
    ("void.sent", ("void", "000002")),
    ("void.recorded", ("void", "000002")),
    ("settle.intent", ("settle",)),
    ("settle.sent", ("settle",)),
    ("settle.answered", ("settle",)),
    ("settle.recorded", ("settle",)),
    ("sign_off.intent", ("sign-off",)),
    ("sign_off.sent", ("sign-off",)),
    ("sign_off.answered", ("sign-off",)),
]


@pytest.mark.parametrize(("point", "ops"), CASES, ids=[c[0] for c in CASES])
async def test_killed_at_each_step_then_restarted(tmp_path, point, ops):
    config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
    journal = tmp_path / "term.sqlite"
    async with HostServer(config, str(tmp_path / "host.sqlite")) as host:
        url = await host.listen("tcp://127.0.0.1:0")
        code, lines = await possim_terminal(url, journal, "sign-in", "sale", "10.00")
        assert code == 0 and lines[-1]["stan"] == "000002"

        code, _ = await possim_terminal(url, journal, *ops, crash_at=point)
        assert code == -signal.SIGKILL, f"the terminal should have died at {point}"

        # restart on the same journal: interrupted work is finished, then the day is closed
        code, lines = await possim_terminal(url, journal, "status")
        if not point.startswith(("settle", "sign_off")):
            code, lines = await possim_terminal(url, journal, "settle")
            assert lines[-1]["ok"], lines
        code, lines = await possim_terminal(url, journal, "status")
        assert lines[-1]["state"] == "signed_out", lines

        term = Journal.open(journal, tid=TID, mid=MID, pan_key=bytes.fromhex(TMK))
        try:
            assert term.pending_reversals() == [] and term.open_intents() == []
            for batch in sorted({t.batch for t in term.transactions()}):
                assert term.batch_totals(batch) == host.admin.totals(TID, batch), f"batch {batch} disagrees"
            settled = host.admin.settlements(TID)
            if point.startswith("sign_off"):  # signed off without settling: nothing to settle yet
                assert settled == []
            else:
                assert [s["batch"] for s in settled] == ["000001"]
                assert settled[0]["result"] in ("balanced", "reconciled")
            assert host.admin.sign_offs(TID) == 1
            debit, debit_n, _, _ = host.admin.totals(TID, "000001")
            assert debit_n <= 2 and debit in (1000, 3000)  # the 20.00 sale charged once or not at all
        finally:
            term.close()
