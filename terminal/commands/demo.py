"""`possim demo`: a business day in under a minute, faults included, against the built-in host.

It starts the reference host in-process on loopback, powers on one terminal, and runs the day a
merchant would recognise: sign-in, sales, a decline, the printer running out of paper (then a
reprint), a reply lost on the way back (then the automatic reversal), settlement and sign-off. As it
goes it shows the terminal's display, the slips it prints and a decoded trace of the frames (card
numbers masked), and it ends by checking that the terminal's journal and the host's ledger agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from protocol.dialect import get_dialect

from ..chaos import FaultSet, MessageFault
from ..cli import EXIT_FAILED, EXIT_OK
from ..config import TerminalConfig
from ..result import OpResult
from ..trace import describe

TID, MID, TMK = "10000001", "898100012340001", "0123456789ABCDEFFEDCBA9876543210"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="a business day against the built-in host, faults included")
    parser.add_argument("--quiet", action="store_true", help="only the step results and the summary")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object at the end: every step's results (the `possim terminal --json` "
                             "shape) and the summary")
    parser.add_argument("--no-trace", action="store_true", help="do not print the decoded frames")
    parser.add_argument("--reply-timeout", type=float, default=3.0,
                        help="seconds the terminal waits for a reply (short, so the lost reply is quick)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="possim-demo-") as tmp:
        return asyncio.run(Demo(Path(tmp), args).run())


class Demo:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(args.quiet) or self.json
        self.trace_frames = not (args.no_trace or self.quiet)
        self.reply_timeout = float(args.reply_timeout)
        self.dialect = get_dialect("cup-pos")
        self.failures: list[str] = []
        self.final_state = ""
        self.steps: list[dict[str, Any]] = []  # --json: each step's title and results
        self.summary_data: dict[str, Any] = {}

    def say(self, text: str = "") -> None:
        if not self.json:
            print(text, flush=True)

    def trace(self, direction: str, frame: bytes) -> None:
        if not self.trace_frames:
            return
        try:
            message = self.dialect.decode(frame[13:])
        except Exception:  # a trace never breaks the demo
            return
        arrow = "terminal -> host" if direction == "tx" else "host -> terminal"
        self.say(f"    [{arrow}] {_clip(describe(message), 150)}")

    def step(self, title: str) -> None:
        self.say("")
        self.say(f"== {title}")
        self.steps.append({"step": title, "results": []})

    def show(self, result: OpResult, *, expect_ok: bool | None = True) -> None:
        self.steps[-1]["results"].append(result.as_json())
        verdict = "ok" if result.ok else "FAILED"
        rc = f" rc={result.rc}" if result.rc else ""
        self.say(f"  -> {result.op}: {verdict}{rc} stan={result.stan} state={result.state}  {result.message}")
        for line in result.display:
            self.say(f"     | {line}")
        if result.receipt and not self.quiet:
            self.say("     " + result.receipt.replace("\n", "\n     "))
        if expect_ok is not None and result.ok != expect_ok:
            self.failures.append(f"{result.op} stan={result.stan}: expected ok={expect_ok}, got {result.message}")

    async def run(self) -> int:
        from acquirer.config import HostConfig
        from acquirer.host import HostServer

        from ..core import Terminal

        host_config = HostConfig.from_terminal_specs([f"{TID}:{MID}:{TMK}"])
        async with HostServer(host_config, str(self.workdir / "host.sqlite")) as server:
            url = await server.listen("tcp://127.0.0.1:0")
            self.say(f"possim demo: reference host listening on {url}; terminal {TID} of merchant {MID}")
            config = TerminalConfig(tid=TID, mid=MID, tmk=TMK, connect=url, journal=str(self.workdir / "term.sqlite"),
                                    reply_timeout=self.reply_timeout, seed=7,
                                    hardware={"signature_behaviour": "sign", "sign_after_s": 0.2})
            terminal = Terminal(config, trace=self.trace)
            terminal.channel.faults = FaultSet(seed=7)
            try:
                await self.day(terminal, server)
            finally:
                self.final_state = terminal.state
                await terminal.shut_down()
                summary_ok = self.summary(terminal, server)
                terminal.journal.close()
        ok = not self.failures and summary_ok
        if self.json:
            print(json.dumps({"ok": ok, "host": url, "steps": self.steps, "summary": self.summary_data,
                              "failures": self.failures}, ensure_ascii=False), flush=True)
        if not ok:
            for failure in self.failures:
                self.say(f"demo step failed: {failure}")
            return EXIT_FAILED
        self.say("\npossim demo: the day closed; terminal journal and host ledger agree.")
        return EXIT_OK

    async def day(self, terminal: Any, server: Any) -> None:
        self.step("Power on and sign in (working keys arrive under the terminal master key)")
        self.show(await terminal.power_on())
        self.show(await terminal.sign_in())

        self.step("A sale of 12.34 with the customer signing on the pad")
        first = await terminal.sale(1234)
        self.show(first)

        self.step("A sale declined by the issuer (insufficient funds): declined slip, nothing charged")
        self.show(await terminal.sale(8800, card="insufficient"), expect_ok=False)

        self.step("The printer runs out of paper after the host approved (FM-12: charged, no receipt)")
        terminal.hw.printer.faults["out_of_paper"].arm(count=1)
        paperless = await terminal.sale(2500, method="chip")
        self.show(paperless)
        self.say("  merchant loads a new roll and reprints the slip:")
        terminal.hw.printer.load_paper()
        self.show(await terminal.reprint(paperless.stan))

        self.step("The host approves but its reply is lost on the way back (FM-03): automatic reversal")
        terminal.channel.faults.add(MessageFault("drop", direction="rx", mti="0210", count=1))
        lost = await terminal.sale(6660)
        self.show(lost, expect_ok=False)

        self.step("A void of the first sale (撤销)")
        self.show(await terminal.void(first.stan))

        self.step("Settlement (结算): totals compared with the host; voucher; then sign-off (签退)")
        self.show(await terminal.settle())

    def summary(self, terminal: Any, server: Any) -> bool:
        self.step("Summary: terminal journal against host ledger")
        batches = {t.batch for t in terminal.journal.transactions()}
        ok = True
        compared = []
        for batch in sorted(batches):
            mine = terminal.journal.batch_totals(batch)
            theirs = server.admin.totals(TID, batch)
            agree = tuple(mine) == tuple(theirs)
            ok &= agree
            compared.append({"batch": batch, "terminal": list(mine), "host": list(theirs), "agree": agree})
            self.say(f"  batch {batch}: terminal debit {mine[0] / 100:.2f} x{mine[1]}, credit {mine[2] / 100:.2f} "
                     f"x{mine[3]} | host debit {theirs[0] / 100:.2f} x{theirs[1]}, credit {theirs[2] / 100:.2f} "
                     f"x{theirs[3]} -> {'AGREE' if agree else 'DIFFER'}")
        reversed_ = [t for t in terminal.journal.transactions() if t.status == "reversed"]
        self.say(f"  reversed on the terminal: {[t.stan for t in reversed_]}; "
                 f"printed slips: {terminal.hw.printer.receipts_total}; final state: {self.final_state}")
        if self.final_state != "signed_out":
            self.failures.append(f"terminal ended in {self.final_state}, not signed_out")
        self.summary_data = {"batches": compared, "reversed": [t.stan for t in reversed_],
                             "printed_slips": terminal.hw.printer.receipts_total, "final_state": self.final_state}
        return ok


def _clip(text: str, width: int) -> str:
    """A trace line cut at the last whole field that fits (`42=8981000` of a 15-digit MID misleads)."""
    if len(text) <= width:
        return text
    return text[:text.rfind(" ", 0, width - 4)] + " ..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(quiet=False, no_trace=False, reply_timeout=3.0, json=False)))
