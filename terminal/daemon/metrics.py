"""Prometheus metrics of a daemon: transactions, declines, reversals, sign-offs, failures, retries, latency."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FINANCIAL = ("sale", "void", "refund", "balance")
RTT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.operations = Counter("possim_operations_total", "Terminal operations by kind and outcome",
                                  ["op", "outcome"], registry=r)
        self.transactions = Counter("possim_transactions_total", "Financial transactions sent", ["op"], registry=r)
        self.declines = Counter("possim_declines_total", "Declined transactions by response code", ["rc"],
                                registry=r)
        self.reversals = Counter("possim_reversals_total", "Automatic reversals sent", registry=r)
        self.sign_offs = Counter("possim_sign_offs_total", "Successful sign-offs", registry=r)
        self.settlements = Counter("possim_settlements_total", "Successful settlements by result", ["result"],
                                   registry=r)
        self.failures = Counter("possim_failures_total", "Operations that failed (no answer or a refusal)",
                                ["op", "reason"], registry=r)
        self.retries = Counter("possim_retries_total", "Automatic work retried after an outage, by work",
                               ["work"], registry=r)
        self.day_closes = Counter("possim_day_closes_total", "Days closed (settled and signed off) by trigger",
                                  ["trigger"], registry=r)
        self.reminders = Counter("possim_reminders_total", "Reconciliation reminders produced", registry=r)
        self.attention = Gauge("possim_reminder_items", "Items the last reminder reported, fleet-wide, by kind",
                               ["kind"], registry=r)
        self.terminals = Gauge("possim_terminals", "Terminals by state", ["state"], registry=r)
        self.latency = Histogram("possim_host_rtt_seconds", "Round trip of host exchanges", buckets=RTT_BUCKETS,
                                 registry=r)
        self.op_latency = Histogram("possim_operation_seconds", "Duration of terminal operations (loop clock)",
                                    ["op"], buckets=OP_BUCKETS, registry=r)
        self._states: set[str] = {"ready", "signed_out"}

    def observe(self, result: Any, *, seconds: float | None = None) -> None:
        op = result.op
        self.operations.labels(op=op, outcome="ok" if result.ok else "failed").inc()
        if op in FINANCIAL:
            self.transactions.labels(op=op).inc()
            if result.rc not in (None, "00"):
                self.declines.labels(rc=result.rc).inc()
        if result.detail.get("reversal") == "sent":
            self.reversals.inc()
        if (op == "sign_off" and result.ok and result.rc == "00") or (op == "settle" and result.detail.get("sign_off")):
            self.sign_offs.inc()
        if op == "settle" and result.ok and result.detail.get("result"):
            self.settlements.labels(result=result.detail["result"]).inc()
        if not result.ok and op not in FINANCIAL:
            self.failures.labels(op=op, reason="no_answer" if result.rc is None else f"rc_{result.rc}").inc()
        rtt = result.detail.get("rtt_ms")
        if isinstance(rtt, int | float):
            self.latency.observe(rtt / 1000)
        if seconds is not None:
            self.op_latency.labels(op=op).observe(seconds)

    def reminder(self, report: dict[str, Any]) -> None:
        self.reminders.inc()
        for kind in ("unsettled", "unsigned", "pending_reversals"):
            self.attention.labels(kind=kind).set(sum(t[kind] for t in report["terminals"]))
        self.attention.labels(kind="signed_in").set(sum(t["signed_in"] for t in report["terminals"]))

    def render(self, states: list[str] | None = None) -> bytes:
        if states is not None:
            counts = Tally(states)
            self._states.update(counts)
            for state in self._states:
                self.terminals.labels(state=state).set(counts.get(state, 0))
        return generate_latest(self.registry)
