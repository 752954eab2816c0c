"""The host's admin interface for tests and QA: inspect, release, reconfigure, inject.

Everything a failure-mode scenario needs to observe or change on the acquirer's side goes through
here (and through `possim host admin ...` on the command line), so scenarios never reach into SQL.
"""

from __future__ import annotations

from typing import Any

from . import funds
from .config import MaintenanceWindow, Merchant


class Admin:
    def __init__(self, server: Any) -> None:
        self._server = server

    @property
    def ledger(self) -> Any:
        return self._server.ledger

    @property
    def config(self) -> Any:
        return self._server.config

    # inspect -----------------------------------------------------------------------------------
    def transactions(self, tid: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM txn" + (" WHERE tid = ?" if tid else "") + " ORDER BY id"
        return [dict(r) for r in self.ledger.query(query, (tid,) if tid else ())]

    def totals(self, tid: str, batch: str) -> tuple[int, int, int, int]:
        return self.ledger.totals(tid, batch)

    def sign_offs(self, tid: str) -> int:
        row = self.ledger.one("SELECT COUNT(*) FROM sign_off WHERE tid = ?", (tid,))
        return int(row[0]) if row else 0

    def settlements(self, tid: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM settlement" + (" WHERE tid = ?" if tid else "") + " ORDER BY at"
        return [dict(r) for r in self.ledger.query(query, (tid,) if tid else ())]

    def session(self, tid: str) -> dict[str, Any] | None:
        row = self.ledger.session(tid)
        if row is None:
            return None
        out = dict(row)
        out.pop("wrapped_keys", None)  # keys never leave the ledger
        return out

    def funds_report(self, mid: str) -> list[dict[str, Any]]:
        rows = self.ledger.query(
            "SELECT t.tid, t.batch, t.stan, t.rrn, t.amount_fen, t.pan_masked, f.status, f.reason, f.expected_at, "
            "f.credited_at FROM funds f JOIN txn t ON t.id = f.txn_id WHERE f.mid = ? ORDER BY t.id", (mid,))
        return [dict(r) for r in rows]

    def query_funds(self, mid: str, *, stan: str | None = None, rrn: str | None = None) -> dict[str, Any] | None:
        for row in self.funds_report(mid):
            if (stan is not None and row["stan"] == stan) or (rrn is not None and row["rrn"] == rrn):
                return row
        return None

    # act ---------------------------------------------------------------------------------------
    def release(self, mid: str, *, stan: str | None = None, rrn: str | None = None) -> bool:
        """An operator's release of frozen funds (the merchant's appeal succeeded, FM-06)."""
        row = self.query_funds(mid, stan=stan, rrn=rrn)
        if row is None or row["status"] != funds.FROZEN:
            return False
        txn = self.ledger.one("SELECT id, tid, batch FROM txn WHERE tid = ? AND batch = ? AND stan = ?",
                              (row["tid"], row["batch"], row["stan"]))
        settled = self.ledger.one("SELECT at FROM settlement WHERE tid = ? AND batch = ?", (row["tid"], row["batch"]))
        merchant = self.config.merchants[mid]
        with self.ledger.tx() as db:
            if settled is None:
                db.execute("UPDATE funds SET status = ?, reason = 'released: awaiting settlement' WHERE txn_id = ?",
                           (funds.PENDING, txn["id"]))
            else:
                now = self.ledger.clock()
                expected = funds.expected_arrival(now, merchant.settlement_type, self.config.holidays)
                status = funds.CREDITED if merchant.settlement_type == "T0" else funds.PENDING
                db.execute("UPDATE funds SET status = ?, reason = 'released after review', expected_at = ?, "
                           "credited_at = ? WHERE txn_id = ?",
                           (status, expected, now if status == funds.CREDITED else None, txn["id"]))
            self.ledger.event("funds.released", {"mid": mid, "stan": row["stan"]})
        return True

    def hold(self, mid: str, *, stan: str, reason: str) -> bool:
        """Freeze a transaction's funds (fault injection: legal hold, fraud review)."""
        row = self.query_funds(mid, stan=stan)
        if row is None:
            return False
        txn = self.ledger.one("SELECT id FROM txn WHERE tid = ? AND batch = ? AND stan = ?",
                              (row["tid"], row["batch"], row["stan"]))
        with self.ledger.tx() as db:
            db.execute("UPDATE funds SET status = ?, reason = ? WHERE txn_id = ?", (funds.FROZEN, reason, txn["id"]))
        return True

    def run_funds(self, now: float | None = None) -> int:
        """Credit every pending settled transaction whose arrival time has come."""
        now = self.ledger.clock() if now is None else now
        with self.ledger.tx() as db:
            cur = db.execute("UPDATE funds SET status = ?, credited_at = ?, reason = 'credited' WHERE status = ? AND "
                             "expected_at IS NOT NULL AND expected_at <= ?", (funds.CREDITED, now, funds.PENDING, now))
        return cur.rowcount

    def change_merchant(self, tid: str, *, new_mid: str | None = None, new_name: str | None = None) -> None:
        """The merchant record changed (FM-07): the terminal's parameters are now stale."""
        entry = self.config.terminals.get(tid)
        merchants = self.ledger.policies().get("merchants", {})
        current = merchants.get(tid, {}).get("mid") or (entry.mid if entry else None)
        mid = new_mid or current
        if mid is None:
            raise KeyError(f"terminal {tid} is unknown: give the new merchant id")
        old = self.config.merchants.get(current or "")
        merchants[tid] = {"mid": mid, "name": new_name or (old.name if old else f"MERCHANT {mid}"),
                          "settlement_type": old.settlement_type if old else "T1"}
        self.ledger.set_policy("merchants", merchants)
        apply_policies(self.config, self.ledger.policies())

    def set_maintenance(self, start: float, end: float, mode: str = "96") -> None:
        windows = self.ledger.policies().get("maintenance", [])
        windows.append({"start": start, "end": end, "mode": mode})
        self.ledger.set_policy("maintenance", windows)
        apply_policies(self.config, self.ledger.policies())

    def clear_maintenance(self) -> None:
        self.ledger.set_policy("maintenance", [])
        self.config.maintenance.clear()

    def set_min_firmware(self, version: str) -> None:
        self.ledger.set_policy("min_firmware", version)
        self.config.min_firmware = version


def apply_policies(config: Any, policies: dict[str, Any]) -> None:
    """Admin changes stored in the ledger, laid over the configuration the host started with."""
    if "min_firmware" in policies:
        config.min_firmware = policies["min_firmware"]
    if "maintenance" in policies:
        config.maintenance = [MaintenanceWindow(w["start"], w["end"], w.get("mode", "96"))
                              for w in policies["maintenance"]]
    for tid, merchant in policies.get("merchants", {}).items():
        entry = config.terminals.get(tid)
        if entry is None:
            continue
        mid = merchant["mid"]
        if mid not in config.merchants:
            config.merchants[mid] = Merchant(mid, merchant["name"], merchant.get("settlement_type", "T1"))
        else:
            config.merchants[mid].name = merchant["name"]
        entry.mid = mid
