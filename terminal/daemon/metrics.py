"""Prometheus metrics of a daemon: transactions, declines, reversals, sign-offs, failures, latency."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter("possim_operations_total", "Terminal operations by kind and outcome",
                                  ["op", "outcome"], registry=self.registry)
        self.transactions = Counter("possim_transactions_total", "Financial transactions sent", ["op"],
                                    registry=self.registry)
        self.declines = Counter("possim_declines_total", "Declined transactions by response code", ["rc"],
                                registry=self.registry)
        self.reversals = Counter("possim_reversals_total", "Automatic reversals", registry=self.registry)
        self.sign_offs = Counter("possim_sign_offs_total", "Successful sign-offs", registry=self.registry)
        self.failures = Counter("possim_failures_total", "Operations that failed without a host answer", ["op"],
                                registry=self.registry)
        self.reminders = Counter("possim_reminders_total", "Reconciliation reminders produced",
                                 registry=self.registry)
        self.latency = Histogram("possim_host_rtt_seconds", "Round trip of host exchanges",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)

    def observe(self, op: str, result: Any) -> None:
        self.operations.labels(op=op, outcome="ok" if result.ok else "failed").inc()
        if result.op in ("sale", "void", "refund", "balance"):
            self.transactions.labels(op=result.op).inc()
            if result.rc not in (None, "00"):
                self.declines.labels(rc=result.rc).inc()
        if result.detail.get("reversal") == "sent":
            self.reversals.inc()
        signed_off = result.op == "sign_off" and result.ok and result.rc == "00"
        if signed_off or (result.op == "settle" and result.detail.get("sign_off")):
            self.sign_offs.inc()
        if not result.ok and result.rc is None:
            self.failures.labels(op=op).inc()
        rtt = result.detail.get("rtt_ms")
        if isinstance(rtt, int | float):
            self.latency.observe(rtt / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
