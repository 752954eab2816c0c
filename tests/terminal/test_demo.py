"""`possim demo`, the README's main job: a business day against the built-in host, faults included.
The day must close with journal and ledger agreeing, and each fault must show what it stands for."""

from __future__ import annotations

import json

from terminal.cli import main

PAN = "6222020000000015"


def test_demo_json_shows_each_fault_and_its_remedy_and_a_balanced_day(capsys):
    assert main(["demo", "--json"]) == 0
    out = capsys.readouterr().out
    assert PAN not in out  # slips and results carry the masked card number only
    day = json.loads(out)
    assert day["ok"] is True and day["failures"] == []
    steps = {step["step"].split(" (")[0]: step["results"] for step in day["steps"]}
    declined = steps["A sale declined by the issuer"][0]
    assert (declined["ok"], declined["rc"]) == (False, "51")
    paperless, reprint = steps["The printer runs out of paper after the host approved"]
    assert paperless["ok"] and paperless["receipt_pending"] and reprint["ok"] and "REPRINT" in reprint["receipt"]
    lost = steps["The host approves but its reply is lost on the way back"][0]
    assert not lost["ok"]
    assert day["summary"]["reversed"] == [lost["stan"]]
    assert day["summary"]["final_state"] == "signed_out"
    assert all(batch["agree"] and batch["terminal"] == batch["host"] for batch in day["summary"]["batches"])


def test_demo_text_ends_with_the_day_closed(capsys):
    assert main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("possim demo: the day closed; terminal journal and host ledger agree.")
    assert "-> AGREE" in out and PAN not in out
