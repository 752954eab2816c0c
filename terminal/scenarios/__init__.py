"""Failure-mode scenarios: FM-01..FM-18 built in, plus users' own from TOML files."""

from . import catalogue as _catalogue  # noqa: F401  (registers the built-in scenarios)
from .engine import REGISTRY, Check, Scenario, ScenarioContext, ScenarioResult, contains, run_scenario, scenario

__all__ = ["REGISTRY", "Check", "Scenario", "ScenarioContext", "ScenarioResult", "contains", "run_scenario",
           "scenario"]
