"""Scenario files and the fault plan: the shipped examples run, bad input is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal.chaos import MessageFault
from terminal.faultplan import DeviceFault, FaultPlan, FaultPlanError, HostAction, LinkToxic
from terminal.scenarios import run_scenario
from terminal.scenarios.files import ScenarioFileError, load_scenario_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_shipped_scenario_files_pass(path):
    result = await run_scenario(load_scenario_file(path), seed=1)
    assert result.passed, result.error


def test_every_layer_has_an_example():
    text = "".join(p.read_text() for p in EXAMPLES)
    for layer in ("device =", "message =", "link =", "host ="):
        assert layer in text


def test_bad_scenario_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[steps]]\nop = "dance"\n')
    with pytest.raises(ScenarioFileError, match="step 1: op must be one of"):
        load_scenario_file(bad)
    bad.write_text('[[steps]]\nop = "sale"\namount = "1"\nfaults = { device = [{ pointe = "x" }] }\n')
    with pytest.raises(ScenarioFileError, match="unknown keys"):
        load_scenario_file(bad)
    bad.write_text("not = [toml")
    with pytest.raises(ScenarioFileError, match="not valid TOML"):
        load_scenario_file(bad)


def test_fault_plan_from_toml(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text("""
seed = 9
[[device]]
point = "printer.jam"
count = 1
[[message]]
action = "drop"
direction = "rx"
mti = "0210"
nth = 2
[[link]]
toxic = "latency"
latency_ms = 20
[[host]]
action = "maintenance"
seconds = 30
""")
    plan = FaultPlan.from_toml(path)
    assert plan.seed == 9
    assert plan.device == [DeviceFault("printer.jam", count=1)]
    assert plan.message[0].mti == "0210" and plan.message[0].nth == 2
    assert plan.link == [LinkToxic("latency", latency_ms=20)]
    assert plan.host == [HostAction("maintenance", seconds=30)]


@pytest.mark.parametrize(("data", "message"), [
    ({"link": [{"toxic": "gremlins"}]}, "unknown link toxic"),
    ({"message": [{"action": "explode"}]}, "unknown fault action"),
    ({"host": [{"action": "flood"}]}, "unknown host action"),
    ({"device": [{"point": "printer.jam", "colour": "red"}]}, "unknown keys"),
])
def test_fault_plan_errors(data, message):
    with pytest.raises(FaultPlanError, match=message):
        FaultPlan.from_mapping(data)


async def test_plan_active_arms_and_clears_a_terminal(tmp_path):
    from terminal.config import TerminalConfig
    from terminal.core import Terminal

    term = Terminal(TerminalConfig(journal=str(tmp_path / "t.sqlite")))
    plan = FaultPlan(device=[DeviceFault("reader.read_error", always=True)],
                     message=[MessageFault("drop", mti="0210")], link=[LinkToxic("down")])
    with plan.active(term):
        assert term.hw.fault("reader.read_error").armed and term.channel.link_down
        assert term.channel.faults.rules
    assert not term.hw.fault("reader.read_error").armed and not term.channel.link_down
    assert not term.channel.faults.rules
    with pytest.raises(FaultPlanError, match="unknown device fault point"):
        FaultPlan(device=[DeviceFault("printer.melt")]).apply(term)
    term.journal.close()
