"""The host's admin interface for tests and QA: inspect, release, reconfigure, inject.

Everything a failure-mode scenario needs to observe or change on the acquirer's side goes through
here (and through `possim host admin ...` on the command line), so scenarios never reach into SQL.
`Admin(server)` works on a running `HostServer`; `Admin.open(db_path)` on a ledger file alone (the
merchants come from the registry snapshot the host wrote to the ledger when it started). Policy
changes (maintenance, minimum firmware, merchant moves) are stored in the ledger and reach a running
host at its next message. Working keys never leave the ledger; PANs only masked.
"""

from __future__ import annotations

import json
import re
import sqlite3
from types import SimpleNamespace
from typing import Any

from . import funds
from .config import HostConfig, MaintenanceWindow, Merchant, parse_daily


class LedgerFileError(ValueError):
    """A ledger file the admin cannot work on (missing, a directory, not SQLite); the message names the path."""


class Admin:
    def __init__(self, server: Any) -> None:
        self._server = server

    @classmethod
    def open(cls, db_path: str, config: HostConfig | None = None, *, clock: Any = None) -> Admin:
        """An admin on a ledger file, without a running host (what `possim host admin` uses).

        The file must exist: the admin reads and changes what a host wrote, and opening a mistyped path
        would otherwise create an empty ledger and report "nothing there" as if that were true.
        LedgerFileError when the file is missing or is not a SQLite database.
        """
        import time
        from pathlib import Path

        from .ledger import Ledger

        if not Path(db_path).exists():
            raise LedgerFileError(f"no ledger at {db_path}: no such file (the admin reads the ledger a host "
                                  f"wrote; start the host with --db {db_path} to create it)")
        if Path(db_path).is_dir():
            raise LedgerFileError(f"cannot open ledger {db_path}: it is a directory")
        config = config or HostConfig()
        try:
            ledger = Ledger(db_path, clock=clock or time.time)
        except sqlite3.Error as exc:
            raise LedgerFileError(f"cannot open ledger {db_path}: {exc}") from None
        for mid, row in ledger.merchants().items():
            config.merchants.setdefault(mid, Merchant(mid, row["name"], row["settlement_type"]))
        apply_policies(config, ledger.policies())
        return cls(SimpleNamespace(ledger=ledger, config=config))

    def close(self) -> None:
        self.ledger.close()

    @property
    def ledger(self) -> Any:
        return self._server.ledger

    @property
    def config(self) -> Any:
        return self._server.config

    def _settlement_type(self, mid: str) -> str:
        merchant = self.config.merchants.get(mid) or self.ledger.merchants().get(mid)
        return merchant["settlement_type"] if isinstance(merchant, sqlite3.Row) else (
            merchant.settlement_type if merchant else "T1")

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

    def reversals(self, tid: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ledger.reversals(tid)]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.ledger.query("SELECT * FROM event" + (" WHERE kind = ?" if kind else "") + " ORDER BY id",
                                 (kind,) if kind else ())
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def session(self, tid: str) -> dict[str, Any] | None:
        row = self.ledger.session(tid)
        if row is None:
            return None
        out = dict(row)
        out.pop("wrapped_keys", None)  # keys never leave the ledger
        return out

    def run_funds(self, now: float | None = None) -> int:
        """Credit every pending settled transaction whose arrival time has come (by `now`)."""
        now = self.ledger.clock() if now is None else now
        with self.ledger.tx() as db:
            return funds.apply_arrivals(db, now)

    def funds_report(self, mid: str) -> list[dict[str, Any]]:
        """Every sale and refund of the merchant: status, reason, rule, expected arrival (arrivals due by
        the host's clock are applied first)."""
        self.run_funds()
        return funds.report(self.ledger.connection, mid)

    def funds_summary(self, mid: str) -> dict[str, dict[str, int]]:
        return funds.summary(self.funds_report(mid))

    def query_funds(self, mid: str, *, stan: str | None = None, rrn: str | None = None,
                    tid: str | None = None) -> dict[str, Any] | None:
        """Merchant id + STAN (the latest with it; narrow with `tid`) or + RRN: status and reason."""
        self.run_funds()
        return funds.query(self.ledger.connection, mid, stan=stan, rrn=rrn, tid=tid)

    def _funds_txn(self, mid: str, stan: str | None, rrn: str | None) -> tuple[dict[str, Any], int] | None:
        row = funds.query(self.ledger.connection, mid, stan=stan, rrn=rrn)
        if row is None:
            return None
        txn = self.ledger.one("SELECT id FROM txn WHERE tid = ? AND batch = ? AND stan = ?",
                              (row["tid"], row["batch"], row["stan"]))
        return row, int(txn["id"])

    # act ---------------------------------------------------------------------------------------
    def release(self, mid: str, *, stan: str | None = None, rrn: str | None = None) -> bool:
        """An operator's release of frozen funds (the merchant's appeal succeeded, FM-06), or of funds an
        operator marked failed (the channel fault is cleared, FM-14). False when there is nothing to release."""
        found = self._funds_txn(mid, stan, rrn)
        if found is None:
            return False
        row, txn_id = found
        if not (row["status"] == funds.FROZEN or (row["status"] == funds.FAILED and row["rule"] == "operator")):
            return False
        with self.ledger.tx() as db:
            status = funds.release(db, txn_id, settlement_type=self._settlement_type(mid), now=self.ledger.clock(),
                                   calendar=funds.Calendar.of(self.config))
            self.ledger.event("funds.released", {"mid": mid, "stan": row["stan"], "status": status,
                                                 "was": row["reason"]})
        return True

    def hold(self, mid: str, *, stan: str | None = None, rrn: str | None = None, reason: str,
             failed: bool = False) -> bool:
        """Freeze a transaction's funds (fault injection: legal hold, fraud review), or with `failed` mark
        them failed (payment channel fault). `release` undoes either."""
        found = self._funds_txn(mid, stan, rrn)
        if found is None:
            return False
        row, txn_id = found
        if row["status"] == funds.FAILED and row["rule"] != "operator":
            return False  # voided or reversed: nothing to hold
        with self.ledger.tx() as db:
            funds.hold(db, txn_id, reason, status=funds.FAILED if failed else funds.FROZEN)
            self.ledger.event("funds.held", {"mid": mid, "stan": row["stan"], "reason": reason, "failed": failed})
        return True

    def change_merchant(self, tid: str, *, new_mid: str | None = None, new_name: str | None = None,
                        settlement_type: str | None = None) -> None:
        """The merchant record changed (FM-07): the terminal's parameters are now stale."""
        entry = self.config.terminals.get(tid)
        merchants = self.ledger.policies().get("merchants", {})
        current = merchants.get(tid, {}).get("mid") or (entry.mid if entry else None)
        mid = new_mid or current
        if mid is None:
            raise KeyError(f"terminal {tid} is unknown: give the new merchant id")
        old = self.config.merchants.get(current or "")
        changed = Merchant(mid, new_name or (old.name if old else f"MERCHANT {mid}"),
                           settlement_type or (old.settlement_type if old else "T1"))  # validates
        merchants[tid] = {"mid": changed.mid, "name": changed.name, "settlement_type": changed.settlement_type}
        self.ledger.set_policy("merchants", merchants)
        apply_policies(self.config, self.ledger.policies())
        self.ledger.sync_merchants([self.config.merchants[mid]])

    def set_maintenance(self, start: float | None = None, end: float | None = None, mode: str = "96", *,
                        daily: str | None = None) -> None:
        """A maintenance window: absolute (start, end epoch seconds) or every day (`daily="01:00-01:30"`)."""
        window = (MaintenanceWindow(mode=mode, daily=parse_daily(daily)) if daily is not None
                  else MaintenanceWindow(start, end, mode))  # validates
        windows = self.ledger.policies().get("maintenance", [w.as_dict() for w in self.config.maintenance])
        windows.append(window.as_dict())
        self.ledger.set_policy("maintenance", windows)
        apply_policies(self.config, self.ledger.policies())

    def clear_maintenance(self) -> None:
        self.ledger.set_policy("maintenance", [])
        self.config.maintenance.clear()

    def set_min_firmware(self, version: str) -> None:
        if not re.fullmatch(r"\d{1,2}\.\d{1,2}\.\d{1,2}", version):
            raise ValueError(f"firmware version {version!r} must be like 3.0.8")
        self.ledger.set_policy("min_firmware", version)
        self.config.min_firmware = version


def apply_policies(config: Any, policies: dict[str, Any]) -> None:
    """Admin changes stored in the ledger, laid over the configuration the host started with."""
    if "min_firmware" in policies:
        config.min_firmware = policies["min_firmware"]
    if "maintenance" in policies:
        config.maintenance = [
            MaintenanceWindow(mode=w.get("mode", "96"), daily=parse_daily(w["daily"])) if "daily" in w
            else MaintenanceWindow(w["start"], w["end"], w.get("mode", "96")) for w in policies["maintenance"]]
    for tid, merchant in policies.get("merchants", {}).items():
        entry = config.terminals.get(tid)
        mid = merchant["mid"]
        if mid not in config.merchants:
            config.merchants[mid] = Merchant(mid, merchant["name"], merchant.get("settlement_type", "T1"))
        else:
            config.merchants[mid].name = merchant["name"]
            config.merchants[mid].settlement_type = merchant.get("settlement_type",
                                                                 config.merchants[mid].settlement_type)
        if entry is not None:
            entry.mid = mid
