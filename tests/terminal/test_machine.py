"""The state table: `machine.fire` must move a terminal exactly as `transitions` itself would."""

from __future__ import annotations

import itertools

import pytest

from terminal import machine


class _Model:
    def __init__(self, state: str, keys: bool, signature: bool) -> None:
        self.state = state
        self.keys = keys
        self.signature = signature
        self.changes = 0

    def has_keys(self) -> bool:
        return self.keys

    def needs_signature(self) -> bool:
        return self.signature

    def _on_state_change(self) -> None:
        self.changes += 1


def _by_transitions(model: _Model, trigger: str) -> str | None:
    try:
        moved = machine.MACHINE.events[trigger].trigger(model)
    except Exception:
        return None
    return model.state if moved else None


def _by_fire(model: _Model, trigger: str) -> str | None:
    try:
        machine.fire(model, trigger)
    except machine.InvalidTransition:
        return None
    return model.state


@pytest.mark.parametrize("state", machine.STATES)
def test_fire_agrees_with_transitions_for_every_trigger_and_condition(state: str) -> None:
    for trigger, keys, signature in itertools.product(machine.MACHINE.events, (True, False), (True, False)):
        ours, theirs = _Model(state, keys, signature), _Model(state, keys, signature)
        assert _by_fire(ours, trigger) == _by_transitions(theirs, trigger), (state, trigger, keys, signature)
        assert ours.changes == theirs.changes  # the after-state-change callback runs once per move


def test_refusals_name_the_trigger_and_the_state() -> None:
    model = _Model("ready", keys=True, signature=False)
    with pytest.raises(machine.InvalidTransition, match="unknown trigger 'fly'"):
        machine.fire(model, "fly")
    with pytest.raises(machine.InvalidTransition, match="cannot keys_accepted from state ready"):
        machine.fire(model, "keys_accepted")
    model = _Model("updating_firmware", keys=False, signature=False)
    machine.fire(model, "update_failed")  # the has_keys candidate fails, the next one applies
    assert model.state == "signed_out"
    assert model.changes == 1
