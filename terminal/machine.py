"""The terminal's states and triggers, declared once (DESIGN principle 2).

One `transitions.Machine` serves every terminal in the process: terminals are *not* added to it as
models (that would bind ~60 trigger methods to each instance); instead `fire(terminal, trigger)`
runs the shared event against the terminal's own `state` attribute. A fleet of 10,000 terminals
therefore costs one machine, and each terminal only its `state` string.

The table holds no I/O: the asyncio driver (`terminal.core`) performs effects - sending a frame,
printing - and reports their outcome as the next trigger. The Mermaid diagram in
docs/state-diagram.md is generated from this table (`python -m terminal.machine`).
"""

from __future__ import annotations

from typing import Any

from transitions import Machine

STATES = (
    "power_off",
    "booting",
    "signed_out",
    "signing_in",
    "ready",
    "reading_card",
    "awaiting_host",
    "printing",
    "awaiting_signature",
    "reversing",
    "settling",
    "batch_uploading",
    "signing_off",
    "diagnostics",
    "updating_firmware",
    "out_of_service",
)

#: States in which the terminal holds a working session (signed in).
SIGNED_IN_STATES = frozenset(
    {"ready", "reading_card", "awaiting_host", "printing", "awaiting_signature", "reversing", "settling",
     "batch_uploading", "signing_off"})

_ONLINE_IDLE = ["signed_out", "ready"]
_ANY_RUNNING = [s for s in STATES if s not in ("power_off",)]

TRANSITIONS: list[dict[str, Any]] = [
    # power
    {"trigger": "power_on", "source": "power_off", "dest": "booting"},
    {"trigger": "boot_signed_out", "source": "booting", "dest": "signed_out"},
    {"trigger": "boot_signed_in", "source": "booting", "dest": "ready"},
    {"trigger": "power_loss", "source": _ANY_RUNNING, "dest": "power_off"},
    {"trigger": "shut_down", "source": _ANY_RUNNING, "dest": "power_off"},
    {"trigger": "fatal", "source": _ANY_RUNNING, "dest": "out_of_service"},
    {"trigger": "reboot", "source": [*_ONLINE_IDLE, "out_of_service", "diagnostics"], "dest": "booting"},
    # sign-in
    {"trigger": "start_sign_in", "source": _ONLINE_IDLE, "dest": "signing_in"},
    {"trigger": "keys_accepted", "source": "signing_in", "dest": "ready"},
    {"trigger": "sign_in_failed", "source": "signing_in", "dest": "signed_out"},
    # card-present transactions
    {"trigger": "start_card", "source": "ready", "dest": "reading_card"},
    {"trigger": "card_read", "source": "reading_card", "dest": "awaiting_host"},
    {"trigger": "card_failed", "source": "reading_card", "dest": "ready"},
    {"trigger": "start_online", "source": "ready", "dest": "awaiting_host"},  # void / refund / echo / status
    {"trigger": "approved", "source": "awaiting_host", "dest": "awaiting_signature", "conditions": "needs_signature"},
    {"trigger": "approved", "source": "awaiting_host", "dest": "printing"},
    {"trigger": "declined", "source": "awaiting_host", "dest": "printing"},  # declined slip
    {"trigger": "answered", "source": "awaiting_host", "dest": "ready"},  # nothing to print
    {"trigger": "no_reply", "source": "awaiting_host", "dest": "reversing"},
    {"trigger": "offline", "source": ["awaiting_host", "reversing", "settling", "batch_uploading", "signing_off",
                                      "signing_in"], "dest": "ready", "conditions": "has_keys"},
    {"trigger": "offline", "source": ["signing_in"], "dest": "signed_out"},
    {"trigger": "must_sign_in", "source": ["awaiting_host", "reversing", "settling", "batch_uploading",
                                           "signing_off", "ready"], "dest": "signed_out"},
    # signature (e-signature pad, before the slip is printed so the slip can say whether it was captured)
    {"trigger": "signature_done", "source": "awaiting_signature", "dest": "printing"},
    # printing
    {"trigger": "start_reprint", "source": ["ready", "signed_out"], "dest": "printing"},
    {"trigger": "printed", "source": "printing", "dest": "ready"},
    {"trigger": "printed_signed_out", "source": "printing", "dest": "signed_out"},  # sign-off voucher
    {"trigger": "print_failed", "source": "printing", "dest": "ready"},  # receipt pending, reprint later
    {"trigger": "print_failed_signed_out", "source": "printing", "dest": "signed_out"},

    # reversal
    {"trigger": "start_reversal", "source": "ready", "dest": "reversing"},
    {"trigger": "reversal_done", "source": "reversing", "dest": "ready"},
    {"trigger": "reversal_pending", "source": "reversing", "dest": "ready"},
    # day end
    {"trigger": "start_settlement", "source": "ready", "dest": "settling"},
    {"trigger": "unbalanced", "source": "settling", "dest": "batch_uploading"},
    {"trigger": "settled", "source": ["settling", "batch_uploading"], "dest": "printing"},
    {"trigger": "settlement_failed", "source": ["settling", "batch_uploading"], "dest": "ready"},
    {"trigger": "start_sign_off", "source": "ready", "dest": "signing_off"},
    {"trigger": "signed_off", "source": "signing_off", "dest": "printing"},  # then the sign-off voucher
    {"trigger": "sign_off_failed", "source": "signing_off", "dest": "ready"},
    # maintenance
    {"trigger": "enter_diagnostics", "source": _ONLINE_IDLE, "dest": "diagnostics"},
    {"trigger": "leave_diagnostics_signed_in", "source": "diagnostics", "dest": "ready"},
    {"trigger": "leave_diagnostics", "source": "diagnostics", "dest": "signed_out"},
    {"trigger": "start_update", "source": _ONLINE_IDLE, "dest": "updating_firmware"},
    {"trigger": "update_finished", "source": "updating_firmware", "dest": "booting"},
    {"trigger": "update_failed", "source": "updating_firmware", "dest": "ready", "conditions": "has_keys"},
    {"trigger": "update_failed", "source": "updating_firmware", "dest": "signed_out"},
    {"trigger": "refuse_service", "source": _ONLINE_IDLE, "dest": "out_of_service"},
]

MACHINE = Machine(
    model=None,
    states=list(STATES),
    transitions=TRANSITIONS,
    initial="power_off",
    auto_transitions=False,
    send_event=False,
    after_state_change="_on_state_change",
)


class InvalidTransition(RuntimeError):
    """A trigger that the table does not allow from the terminal's current state."""


def _compile() -> dict[tuple[str, str], tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]]:
    """(trigger, source) -> the candidate (dest, conditions) in table order, read off MACHINE.

    `fire` runs on every step of every sale of every terminal; going through `Event.trigger` (event
    data, queue handling, callback lists that are all empty here) cost more than the rest of a state
    change. This is the same table, taken from the machine itself, so the two cannot disagree; it is
    only valid while transitions carry nothing but conditions, which is checked here.
    """
    table: dict[tuple[str, str], list[tuple[str, tuple[tuple[str, bool], ...]]]] = {}
    for name, event in MACHINE.events.items():
        for source, candidates in event.transitions.items():
            for t in candidates:
                if t.prepare or t.before or t.after:
                    raise RuntimeError(f"transition {name} from {source} has callbacks: fire() must use transitions")
                conditions = tuple((c.func, c.target) for c in t.conditions)
                if not all(isinstance(func, str) for func, _ in conditions):
                    raise RuntimeError(f"transition {name} from {source}: conditions must be method names")
                table.setdefault((name, source), []).append((t.dest, conditions))  # type: ignore[arg-type]
    return {key: tuple(value) for key, value in table.items()}


_TABLE = _compile()


def fire(model: Any, trigger: str) -> None:
    """Run `trigger` on `model` (anything with a `state` attribute and the condition methods).

    Semantics of `transitions` (auto_transitions off, after_state_change `_on_state_change`): the first
    candidate whose conditions hold moves the model; none holding is an InvalidTransition.
    """
    candidates = _TABLE.get((trigger, model.state))
    if candidates is None:
        if trigger not in MACHINE.events:
            raise InvalidTransition(f"unknown trigger {trigger!r}")
        raise InvalidTransition(f"cannot {trigger} from state {model.state}")
    for dest, conditions in candidates:
        if all(bool(getattr(model, func)()) is target for func, target in conditions):
            model.state = dest
            model._on_state_change()
            return
    raise InvalidTransition(f"cannot {trigger} from state {model.state} (conditions not met)")


def may(model: Any, trigger: str) -> bool:
    """Whether `trigger` is allowed from the model's current state (conditions not evaluated)."""
    event = MACHINE.events.get(trigger)
    return bool(event and model.state in event.transitions)


def mermaid() -> str:
    """The state diagram as Mermaid source, generated from TRANSITIONS."""
    lines = ["stateDiagram-v2", "    [*] --> power_off"]
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        label = t["trigger"] + (f" [{t['conditions']}]" if "conditions" in t else "")
        for source in sources:
            lines.append(f"    {source} --> {t['dest']}: {label}")
    return "\n".join(lines) + "\n"


def reachable(start: str = "power_off") -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for t in TRANSITIONS:
            sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
            if state in sources and t["dest"] not in seen:
                seen.add(t["dest"])
                todo.append(t["dest"])
    return seen


if __name__ == "__main__":  # pragma: no cover
    print("# Terminal state diagram\n\nGenerated from `terminal/machine.py` by `python -m terminal.machine`;"
          " do not edit by hand.\n\n```mermaid")
    print(mermaid(), end="")
    print("```")
