"""The failure-mode catalogue: every scenario passes (over many seeds) and fails with its remedy off."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from terminal.cli import main
from terminal.scenarios import REGISTRY, run_scenario

NAMES = sorted(REGISTRY)
WITHOUT_REMEDY = [n for n in NAMES if n != "FM-18"]  # FM-18's documents prescribe no remedy


def test_catalogue_covers_fm01_to_fm18():
    assert [f"FM-{i:02d}" for i in range(1, 19)] == NAMES


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("name", NAMES)
async def test_scenario_passes(name, seed):
    result = await run_scenario(REGISTRY[name], seed=seed)
    assert result.passed, result.error
    assert len(result.checks) >= 3 and all(c.passed for c in result.checks)


@pytest.mark.parametrize("name", WITHOUT_REMEDY)
async def test_scenario_fails_when_its_remedy_is_disabled(name):
    result = await run_scenario(REGISTRY[name], seed=0, remedy=False)
    assert not result.passed
    failed = result.failed_check
    assert failed is not None and failed.what in result.error  # the failure names the check


def test_cli_list_json_contract(capsys):
    assert main(["scenario", "list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in items] == NAMES and all(i["title"] for i in items)


def test_cli_run_writes_junit_and_exit_code(tmp_path, capsys):
    junit = tmp_path / "out.xml"
    assert main(["scenario", "run", "FM-12", "FM-15", "--junit", str(junit), "--quiet"]) == 0
    suite = ET.parse(junit).getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == ["FM-12", "FM-15"]
    assert suite.get("failures") == "0"
    assert main(["scenario", "run", "FM-12", "--no-remedy", "--junit", str(junit), "--quiet"]) == 1
    assert ET.parse(junit).getroot().get("failures") == "1"
    assert main(["scenario", "run", "FM-99"]) == 2
