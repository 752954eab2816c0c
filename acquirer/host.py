"""The reference acquirer host: the cup-pos protocol core and its asyncio server.

`AcquirerHost.handle(frame)` is sans-I/O: a request frame in, a reply frame (or None: drop) out, the
ledger updated. `HostServer` serves it on any link URL (TCP now, serial through the same seam).

Decisions where cup-pos.md leaves room (documented in docs/host.md):
- Firmware below the minimum at sign-in: response code 58 (not permitted on this terminal) with the
  header processing requirement 6 (download firmware).
- Parameter download (0800, 60.3 = 360) identifies the terminal by TID alone, so a terminal with a
  stale merchant id can recover: the reply carries 42 = current merchant id and 62 = ASCII
  `MID=...;NAME=...;TYPE=T1`.
- A settlement (0500) without field 49 comes from firmware with the 2.1.5 settlement defect: it is
  answered, but the batch's funds stay pending with that reason until a complete re-settlement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from protocol import catalogue, codes, security
from protocol.composite import (
    Field60,
    Field61,
    SettlementTotals,
    Totals,
    encode_balance,
    encode_device_info,
    parse_batch_records,
    parse_device_info,
)
from protocol.dialect import get_dialect
from protocol.errors import ProtocolError, SecurityError
from protocol.framing import Frame, Header
from protocol.message import Message, mask_pan
from protocol.security import WorkingKeys

from . import funds
from .config import HostConfig
from .ledger import Ledger
from .testcards import card_by_pan, magic_amount_code

log = logging.getLogger("possim.host")


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


class AcquirerHost:
    """The protocol core: decode, check, decide, record, reply."""

    def __init__(self, config: HostConfig, ledger: Ledger, *, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock or ledger.clock
        self.dialect = get_dialect("cup-pos")
        self._keys: dict[str, WorkingKeys] = {}
        self.handled = 0
        self._policy_version = -1
        self.refresh_policy()
        from firmware_sim.repository import FirmwareRepository

        self.firmware = FirmwareRepository(config.firmware_latest)

    def refresh_policy(self) -> None:
        """Apply admin changes made by another process (`possim host admin`) since the last look."""
        from .admin import apply_policies

        version = self.ledger.data_version()
        if version != self._policy_version:
            self._policy_version = version
            apply_policies(self.config, self.ledger.policies())

    # ------------------------------------------------------------------------------------------
    def maintenance_mode(self) -> str | None:
        now = self.clock()
        for window in self.config.maintenance:
            if window.active(now):
                return window.mode
        return None

    def handle(self, frame: Frame) -> Frame | None:
        started = time.perf_counter()
        header = frame.header or Header()
        self.refresh_policy()
        try:
            request = self.dialect.decode(frame.payload)
        except ProtocolError as exc:
            log.warning(json.dumps({"event": "malformed", "error": str(exc)}))
            return self._format_error(frame, header)
        try:
            reply, requirement = self._dispatch(request, header)
        except ProtocolError as exc:
            log.warning(json.dumps({"event": "format_error", "mti": request.mti, "error": str(exc)}))
            reply, requirement = catalogue.reply(request, codes.FORMAT_ERROR), 0
        reply_header = Header(header.app_type, header.version, header.status, requirement, header.sub_version)
        self.handled += 1
        log.info(json.dumps({
            "tid": request.get(41), "mti": request.mti, "stan": request.get(11), "rc": reply.response_code,
            "pan": mask_pan(str(request[2])) if isinstance(request.get(2), str) else None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3)}))
        try:
            payload = self.dialect.encode(reply)
        except ProtocolError as exc:
            log.error(json.dumps({"event": "reply_unencodable", "error": str(exc)}))
            return None
        return Frame(frame.tpdu.swapped() if frame.tpdu else None, reply_header, payload)

    def _format_error(self, frame: Frame, header: Header) -> Frame | None:
        """Answer 30 to a request that does not decode, when enough of it does to address a reply."""
        partial = self.dialect.decode_partial(frame.payload)
        if partial is None or partial.is_response or not all(isinstance(partial.get(n), str) for n in (11, 41)):
            return None
        reply = Message(partial.response_mti, {n: partial[n] for n in (11, 41, 42) if n in partial})
        reply[39] = codes.FORMAT_ERROR
        try:
            payload = self.dialect.encode(reply)
        except ProtocolError:
            return None
        return Frame(frame.tpdu.swapped() if frame.tpdu else None, header, payload)

    def _dispatch(self, request: Message, header: Header) -> tuple[Message, int]:
        if request.is_response:
            raise ProtocolError(f"MTI {request.mti} is a response, not a request")
        txn = catalogue.identify(request)
        if txn is None:
            return catalogue.reply(request, codes.FORMAT_ERROR), 0
        missing = catalogue.missing_fields(request, txn)
        if missing:
            raise ProtocolError(f"{txn.name} lacks fields {missing}")
        if self.maintenance_mode() is not None:
            return catalogue.reply(request, codes.SYSTEM_MALFUNCTION, f44="MAINTENANCE"), 0
        tid = str(request[41])
        entry = self.config.terminals.get(tid)
        if entry is None or entry.status != "active":
            return catalogue.reply(request, codes.NOT_REGISTERED), 0
        if txn.mac:
            keys = self._keys_for(tid)
            if keys is None or not security.verify(self.dialect, request, keys.mac_key):
                return catalogue.reply(request, codes.MAC_FAILED), 0
        handler = getattr(self, f"_on_{txn.name.removesuffix('_003').removesuffix('_001')}")
        reply, requirement = handler(request, entry, header)
        if txn.mac and reply.mti in catalogue.MAC_MTIS:
            keys = self._keys_for(tid)
            if keys is not None:
                security.sign(self.dialect, reply, keys.mac_key)
        return reply, requirement

    def _keys_for(self, tid: str) -> WorkingKeys | None:
        keys = self._keys.get(tid)
        if keys is None:
            session = self.ledger.session(tid)
            if session is None or not session["signed_in"] or session["wrapped_keys"] is None:
                return None
            entry = self.config.terminals[tid]
            try:
                keys = security.unwrap_working_keys(entry.tmk_bytes, session["wrapped_keys"], session["key_mode"])
            except SecurityError:
                return None
            self._keys[tid] = keys
        return keys

    def _batch(self, tid: str) -> str:
        session = self.ledger.session(tid)
        return session["batch"] if session else "000001"

    def _now_fields(self) -> dict[str, str]:
        now = datetime.fromtimestamp(self.clock())
        return {"f12": now.strftime("%H%M%S"), "f13": now.strftime("%m%d")}

    # ------------------------------------------------------------------------------------------
    # network management
    # ------------------------------------------------------------------------------------------
    def _merchant_ok(self, request: Message, entry: Any) -> bool:
        return str(request[42]) == entry.mid

    def _on_sign_in(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        tid = entry.tid
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        firmware = header.firmware
        if _version(firmware) < _version(self.config.min_firmware):
            self.ledger.event("sign_in.firmware_refused", {"tid": tid, "firmware": firmware})
            return catalogue.reply(request, "58", f44=f"FW<{self.config.min_firmware}"), 6
        mode = Field60.parse(str(request[60])).nmc or self.config.key_mode
        if mode not in ("001", "003", "004"):
            mode = self.config.key_mode
        keys = security.generate_working_keys(mode)
        wrapped = security.wrap_working_keys(entry.tmk_bytes, keys, mode)
        device = request.get(62)
        with self.ledger.tx() as db:
            session = self.ledger.ensure_session(tid, entry.mid)
            db.execute("UPDATE session SET signed_in = 1, wrapped_keys = ?, key_mode = ?, firmware = ?, "
                       "signed_in_at = ?, device_info = COALESCE(?, device_info) WHERE tid = ?",
                       (wrapped, mode, firmware, self.clock(), _device_text(device), tid))
            batch = session["batch"]
            self.ledger.event("sign_in", {"tid": tid, "batch": batch, "firmware": firmware})
        self._keys[tid] = keys
        reply = catalogue.reply(request, codes.APPROVED, f62=wrapped, f60=Field60("00", batch, mode).encode(),
                                **self._now_fields())
        return reply, 0

    def _on_sign_off(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        tid = entry.tid
        with self.ledger.tx() as db:
            session = self.ledger.ensure_session(tid, entry.mid)
            if session["signed_in"]:
                db.execute("UPDATE session SET signed_in = 0, wrapped_keys = NULL, signed_out_at = ? WHERE tid = ?",
                           (self.clock(), tid))
                db.execute("INSERT INTO sign_off (tid, batch, at) VALUES (?, ?, ?)",
                           (tid, session["batch"], self.clock()))
                self.ledger.event("sign_off", {"tid": tid})
            else:
                self.ledger.event("sign_off.duplicate", {"tid": tid})
        self._keys.pop(tid, None)
        return catalogue.reply(request, codes.APPROVED), 0

    def _on_echo(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        return catalogue.reply(request, codes.APPROVED, **self._now_fields()), 0

    def _on_status_upload(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        with self.ledger.tx() as db:
            self.ledger.ensure_session(entry.tid, entry.mid)
            db.execute("UPDATE session SET device_info = ?, firmware = ? WHERE tid = ?",
                       (_device_text(request.get(62)), header.firmware, entry.tid))
        return catalogue.reply(request, codes.APPROVED), 0

    def _on_parameter_download(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        merchant = self.config.merchants[entry.mid]
        params = encode_device_info(MID=merchant.mid, NAME=merchant.name, TYPE=merchant.settlement_type)
        return catalogue.reply(request, codes.APPROVED, f42=merchant.mid, f62=params), 0

    def _on_firmware_query(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """TMS: announce the latest image (project-defined 0800 / 60.3 = 370)."""
        if _version(header.firmware) >= _version(self.firmware.latest):
            return catalogue.reply(request, codes.ORIGINAL_NOT_FOUND, f44="NO UPDATE"), 0
        return catalogue.reply(request, codes.APPROVED, f62=self.firmware.announce()), 0

    def _on_firmware_chunk(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """TMS: one chunk of an image (60.3 = 371; 62 asks VER and OFF, 59 returns OFF and CRC)."""
        try:
            ask = parse_device_info(request[62]) if isinstance(request.get(62), bytes) else {}
            data, trailer = self.firmware.chunk(ask["VER"], int(ask["OFF"]))
        except (KeyError, ValueError, ProtocolError):
            return catalogue.reply(request, codes.FORMAT_ERROR), 0
        return catalogue.reply(request, codes.APPROVED, f62=data, f59=trailer), 0

    def _on_signature_upload(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        original = Field61.parse(str(request[61]))
        image = request.get(62)
        with self.ledger.tx() as db:
            db.execute("INSERT OR REPLACE INTO signature (tid, batch, stan, image, at) VALUES (?, ?, ?, ?, ?)",
                       (entry.tid, original.batch, original.stan, image, self.clock()))
        return catalogue.reply(request, codes.APPROVED), 0

    # ------------------------------------------------------------------------------------------
    # financial
    # ------------------------------------------------------------------------------------------
    def _financial_checks(self, request: Message, entry: Any) -> str | None:
        tid, batch = entry.tid, Field60.parse(str(request[60])).batch
        if not self._merchant_ok(request, entry):
            return codes.INVALID_MERCHANT
        if batch != self._batch(tid):
            return codes.BATCH_MISMATCH
        if self.ledger.seen(tid, batch, str(request[11])):
            return codes.DUPLICATE
        return None

    def _pan(self, request: Message) -> str:
        pan = request.get(2)
        if isinstance(pan, str):
            return pan
        track = request.get(35)
        return str(track).split("D")[0] if isinstance(track, str) else ""

    def _card_decision(self, request: Message, pan: str, amount: int) -> str:
        card = card_by_pan(pan)
        if card is not None and card.response_code != codes.APPROVED:
            return card.response_code
        magic = magic_amount_code(amount)
        if magic is not None:
            return magic
        if card is not None and amount > card.balance_fen:
            return "51"
        pin_block = request.get(52)
        if isinstance(pin_block, bytes) and card is not None:
            keys = self._keys_for(str(request[41]))
            try:
                pin = security.decrypt_pin(keys.pin_key, pin_block, pan) if keys else None
            except SecurityError:
                return "99"
            if pin != card.pin:
                return "55"
        return codes.APPROVED

    def _decline(self, request: Message, entry: Any, kind: str, rc: str, amount: int, pan: str) -> Message:
        """Record a decline (so a retry with the same STAN is a duplicate) and build its reply."""
        batch = Field60.parse(str(request[60])).batch
        rrn = self.ledger.next_rrn()
        with self.ledger.tx() as db:
            self.ledger.insert_txn(db, tid=entry.tid, mid=entry.mid, batch=batch, stan=str(request[11]), kind=kind,
                                   amount_fen=amount, pan=pan, rc=rc, rrn=rrn, status="declined")
        return catalogue.reply(request, rc, f37=rrn, **self._now_fields())

    def _approve(self, request: Message, entry: Any, kind: str, amount: int, pan: str,
                 original_id: int | None = None) -> Message:
        batch = Field60.parse(str(request[60])).batch
        rrn = self.ledger.next_rrn()
        auth = f"{(int(rrn) * 7919) % 1_000_000:06d}"
        now = self._now_fields()
        risk_reason = None
        if kind == "sale":
            if amount > self.config.risk.single_limit_fen:
                limit = self.config.risk.single_limit_fen
                risk_reason = f"single transaction over {limit // 100:,}.{limit % 100:02d}: dual review"
            else:
                start_of_day = datetime.fromtimestamp(self.clock()).replace(hour=0, minute=0, second=0).timestamp()
                if self.ledger.daily_count(entry.tid, start_of_day) >= self.config.risk.daily_count_limit:
                    risk_reason = f"more than {self.config.risk.daily_count_limit} transactions today: review"
        with self.ledger.tx() as db:
            txn_id = self.ledger.insert_txn(db, tid=entry.tid, mid=entry.mid, batch=batch, stan=str(request[11]),
                                            kind=kind, amount_fen=amount, pan=pan, rrn=rrn, auth_code=auth, rc="00",
                                            status="approved", original_id=original_id, host_date=now["f13"],
                                            host_time=now["f12"], risk_reason=risk_reason)
            if kind == "sale":
                status = funds.FROZEN if risk_reason else funds.PENDING
                db.execute("INSERT INTO funds (txn_id, mid, status, reason) VALUES (?, ?, ?, ?)",
                           (txn_id, entry.mid, status, risk_reason or "awaiting settlement"))
            if kind == "void" and original_id is not None:
                db.execute("UPDATE txn SET status = 'voided' WHERE id = ?", (original_id,))
                db.execute("UPDATE funds SET status = ?, reason = 'voided' WHERE txn_id = ?",
                           (funds.FAILED, original_id))
            if kind == "refund" and original_id is not None:
                db.execute("UPDATE txn SET refunded_fen = refunded_fen + ? WHERE id = ?", (amount, original_id))
        return catalogue.reply(request, codes.APPROVED, f37=rrn, f38=auth, **now)

    def _on_sale(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        pan, amount = self._pan(request), int(str(request[4]))
        refused = self._financial_checks(request, entry)
        if refused is not None:
            return catalogue.reply(request, refused, **self._now_fields()), _requirement_for(refused)
        rc = self._card_decision(request, pan, amount)
        if rc != codes.APPROVED:
            return self._decline(request, entry, "sale", rc, amount, pan), 0
        return self._approve(request, entry, "sale", amount, pan), 0

    def _on_balance(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        pan = self._pan(request)
        card = card_by_pan(pan)
        rc = self._card_decision(request, pan, 0) if card else codes.APPROVED
        if rc != codes.APPROVED:
            return catalogue.reply(request, rc, **self._now_fields()), 0
        balance = card.balance_fen if card else 0
        return catalogue.reply(request, codes.APPROVED, f54=encode_balance(balance), **self._now_fields()), 0

    def _original(self, entry: Any, request: Message) -> Any:
        original = Field61.parse(str(request[61]))
        return self.ledger.txn(entry.tid, original.batch, original.stan)

    def _on_void(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        def refusal(original: Any, amount: int) -> str | None:
            if original["status"] == "voided" or original["refunded_fen"]:
                return "12"  # already voided, or partly refunded: no longer voidable
            if original["amount_fen"] != amount:
                return "64"
            if 37 in request and str(request[37]) != original["rrn"]:
                return codes.ORIGINAL_NOT_FOUND
            return None

        return self._on_referenced(request, entry, "void", refusal)

    def _on_refund(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        def refusal(original: Any, amount: int) -> str | None:
            if original["status"] == "voided":
                return "12"
            if amount > original["amount_fen"] - original["refunded_fen"]:
                return "61"  # partial refunds up to the original amount less earlier refunds
            return None

        return self._on_referenced(request, entry, "refund", refusal)

    def _on_referenced(self, request: Message, entry: Any, kind: str,
                       refusal: Callable[[Any, int], str | None]) -> tuple[Message, int]:
        """Void and refund: checks, then the original sale (61), then the kind's own rules."""
        refused = self._financial_checks(request, entry)
        if refused is not None:
            return catalogue.reply(request, refused, **self._now_fields()), _requirement_for(refused)
        amount, pan = int(str(request[4])), self._pan(request)
        original = self._original(entry, request)
        if original is None or original["kind"] != "sale" or original["status"] in ("declined", "reversed"):
            rc: str | None = codes.ORIGINAL_NOT_FOUND
        else:
            rc = refusal(original, amount)
        if rc is not None:
            return self._decline(request, entry, kind, rc, amount, pan), 0
        return self._approve(request, entry, kind, amount, pan, original_id=original["id"]), 0

    def _on_reversal(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        if any(n in request for n in (35, 36, 52)):
            return catalogue.reply(request, codes.FORMAT_ERROR), 0
        tid, stan = entry.tid, str(request[11])
        batch = Field60.parse(str(request[60])).batch
        amount = int(str(request[4]))
        with self.ledger.tx() as db:
            original = self.ledger.txn(tid, batch, stan)
            if original is None:
                db.execute("INSERT OR IGNORE INTO reversed_unknown (tid, batch, stan, at) VALUES (?, ?, ?, ?)",
                           (tid, batch, stan, self.clock()))
                self.ledger.event("reversal.unknown", {"tid": tid, "stan": stan})
                return catalogue.reply(request, codes.APPROVED), 0
            if original["status"] == "voided":
                return catalogue.reply(request, "12"), 0
            if original["amount_fen"] != amount:
                return catalogue.reply(request, "64"), 0
            if original["status"] == "approved":
                db.execute("UPDATE txn SET status = 'reversed' WHERE id = ?", (original["id"],))
                db.execute("UPDATE funds SET status = ?, reason = 'reversed' WHERE txn_id = ?",
                           (funds.FAILED, original["id"]))
                if original["original_id"] is not None and original["kind"] == "void":
                    db.execute("UPDATE txn SET status = 'approved' WHERE id = ?", (original["original_id"],))
                    db.execute("UPDATE funds SET status = ?, reason = 'awaiting settlement' WHERE txn_id = ?",
                               (funds.PENDING, original["original_id"]))
                if original["original_id"] is not None and original["kind"] == "refund":
                    db.execute("UPDATE txn SET refunded_fen = refunded_fen - ? WHERE id = ?",
                               (original["amount_fen"], original["original_id"]))
                self.ledger.event("reversal", {"tid": tid, "stan": stan})
        return catalogue.reply(request, codes.APPROVED), 0

    # ------------------------------------------------------------------------------------------
    # settlement and batch upload
    # ------------------------------------------------------------------------------------------
    def _on_settlement(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        terminal_totals = SettlementTotals.parse(str(request[48]))
        defect = None if 49 in request else f"settlement from firmware {header.firmware} lacks currency data"
        previous = self.ledger.one("SELECT * FROM settlement WHERE tid = ? AND batch = ?", (tid, batch))
        if previous is not None:
            if previous["defect"] and defect is None:
                self._release_defective(entry, batch)
            return catalogue.reply(request, codes.APPROVED, f48=previous["reply_48"], **self._now_fields()), 0
        if batch != self._batch(tid):
            return catalogue.reply(request, codes.BATCH_MISMATCH), 0
        host = Totals(*self.ledger.totals(tid, batch))
        balanced = host.same_amounts(terminal_totals.domestic)
        reply_48 = terminal_totals.with_reconciliation(1 if balanced else 2).encode()
        merchant = self.config.merchants[entry.mid]
        now = self.clock()
        with self.ledger.tx() as db:
            db.execute("INSERT INTO settlement (tid, batch, terminal_totals, host_totals, result, reply_48, defect, "
                       "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (tid, batch, terminal_totals.encode(), SettlementTotals(host).encode(),
                        "balanced" if balanced else "unbalanced", reply_48, defect, now))
            db.execute("UPDATE session SET batch = ? WHERE tid = ?", (f"{int(batch) % 999_999 + 1:06d}", tid))
            self._settle_funds(db, entry, batch, merchant.settlement_type, now, defect)
            self.ledger.event("settlement", {"tid": tid, "batch": batch, "balanced": balanced})
        reply = catalogue.reply(request, codes.APPROVED, f48=reply_48, **self._now_fields())
        return reply, 6 if defect else 0  # a defective settlement asks the terminal to download firmware

    def _settle_funds(self, db: Any, entry: Any, batch: str, settlement_type: str, now: float,
                      defect: str | None) -> None:
        expected = funds.expected_arrival(now, settlement_type, self.config.holidays)
        rows = db.execute("SELECT f.txn_id FROM funds f JOIN txn t ON t.id = f.txn_id WHERE t.tid = ? AND t.batch = ? "
                          "AND f.status = ?", (entry.tid, batch, funds.PENDING)).fetchall()
        for row in rows:
            if defect:
                db.execute("UPDATE funds SET reason = ?, expected_at = NULL WHERE txn_id = ?",
                           (f"{defect}: re-settle with updated firmware", row[0]))
            elif settlement_type == "T0":
                db.execute("UPDATE funds SET status = ?, reason = 'settled T0', expected_at = ?, credited_at = ? "
                           "WHERE txn_id = ?", (funds.CREDITED, expected, now, row[0]))
            else:
                db.execute("UPDATE funds SET reason = 'settled T1: next business day', expected_at = ? "
                           "WHERE txn_id = ?", (expected, row[0]))

    def _release_defective(self, entry: Any, batch: str) -> None:
        merchant = self.config.merchants[entry.mid]
        now = self.clock()
        with self.ledger.tx() as db:
            db.execute("UPDATE settlement SET defect = NULL WHERE tid = ? AND batch = ?", (entry.tid, batch))
            self._settle_funds(db, entry, batch, merchant.settlement_type, now, None)
            self.ledger.event("settlement.resettled", {"tid": entry.tid, "batch": batch})

    def _on_batch_upload(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        if not self._upload_batch_ok(tid, batch):
            return catalogue.reply(request, codes.BATCH_MISMATCH), 0
        records = parse_batch_records(str(request[48]))
        row = self.ledger.one("SELECT uploaded FROM settlement WHERE tid = ? AND batch = ?", (tid, batch))
        uploaded = json.loads(row["uploaded"]) if row else []
        for record in records:
            uploaded.append({"stan": record.stan, "amount": record.amount,
                             "pan_hash": self.ledger.pan_hash(record.pan), "pan": mask_pan(record.pan)})
        with self.ledger.tx() as db:
            db.execute("UPDATE settlement SET uploaded = ? WHERE tid = ? AND batch = ?",
                       (json.dumps(uploaded), tid, batch))
        return catalogue.reply(request, codes.APPROVED), 0

    def _on_batch_upload_end(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        if not self._upload_batch_ok(tid, batch):
            return catalogue.reply(request, codes.BATCH_MISMATCH), 0
        row = self.ledger.one("SELECT uploaded FROM settlement WHERE tid = ? AND batch = ?", (tid, batch))
        uploaded = json.loads(row["uploaded"]) if row else []
        ours = {(r["stan"], r["amount_fen"], r["pan_hash"]): r for r in self.ledger.batch_txns(tid, batch)}
        theirs = {(u["stan"], u["amount"], u["pan_hash"]) for u in uploaded}
        differences = [{"side": "host only", "stan": k[0], "amount": k[1]} for k in ours if k not in theirs]
        differences += [{"side": "terminal only", "stan": k[0], "amount": k[1]} for k in theirs if k not in ours]
        with self.ledger.tx() as db:
            db.execute("UPDATE settlement SET differences = ?, result = 'reconciled' WHERE tid = ? AND batch = ?",
                       (json.dumps(differences), tid, batch))
            self.ledger.event("batch_upload", {"tid": tid, "batch": batch, "records": len(uploaded),
                                               "differences": len(differences)})
        return catalogue.reply(request, codes.APPROVED), 0

    def _upload_batch_ok(self, tid: str, batch: str) -> bool:
        current = self._batch(tid)
        just_settled = f"{(int(current) - 2) % 999_999 + 1:06d}"
        return batch in (current, just_settled)


def _requirement_for(rc: str) -> int:
    """The header processing requirement that goes with a refusal: 03 -> download parameters."""
    return 1 if rc == codes.INVALID_MERCHANT else 3 if rc == codes.BATCH_MISMATCH else 0


def _device_text(value: Any) -> str | None:
    if not isinstance(value, bytes):
        return None
    try:
        return json.dumps(parse_device_info(value))
    except ProtocolError:
        return None


def loop_wall_clock() -> Callable[[], float]:
    """Epoch seconds that advance with the running event loop's clock (DESIGN principle 5: one clock).

    Under a virtual clock (looptime) the host's maintenance windows, arrival times and timestamps move
    with the terminals' time; on a real loop it is the wall clock. Outside a loop: time.time.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.time
    anchor = time.time() - loop.time()
    return lambda: anchor + loop.time()


class HostServer:
    """The host on one or more link URLs. `async with HostServer(config, db) as server:`."""

    def __init__(self, config: HostConfig, db_path: str = "host.sqlite", *,
                 clock: Callable[[], float] | None = None) -> None:
        from .admin import Admin

        self.config = config
        self.ledger = Ledger(db_path, clock=clock or loop_wall_clock())
        self.host = AcquirerHost(config, self.ledger, clock=clock)
        self.admin = Admin(self)
        self._servers: list[Any] = []
        self._links: set[Any] = set()
        self.urls: list[str] = []
        self.trace: Callable[[str, bytes], None] | None = None  # sees every frame on every link

    async def __aenter__(self) -> HostServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def listen(self, url: str) -> str:
        from terminal.links import parse_link_url, serve_link

        server = await serve_link(url, self._serve)
        self._servers.append(server)
        parsed = parse_link_url(url)
        if parsed.scheme == "tcp" and getattr(server, "sockets", None):
            host, port = server.sockets[0].getsockname()[:2]
            bound = f"tcp://{host}:{port}"
        else:
            bound = url
        self.urls.append(bound)
        return bound

    async def _serve(self, link: Any) -> None:
        from terminal.links import LinkClosed

        self._links.add(link)
        if self.trace is not None:
            link.trace = self.trace
        try:
            if self.host.maintenance_mode() == "refuse":
                return
            while True:
                try:
                    frame = await link.receive()
                except (LinkClosed, ProtocolError, OSError) as exc:
                    if isinstance(exc, ProtocolError):
                        log.warning(json.dumps({"event": "dropped", "peer": link.peer, "error": str(exc)}))
                    return
                if self.host.maintenance_mode() == "refuse":
                    return
                reply = self.host.handle(frame)
                if reply is None:
                    log.warning(json.dumps({"event": "dropped", "peer": link.peer, "error": "undecodable request"}))
                    return
                await link.send(reply)
        finally:
            self._links.discard(link)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for link in list(self._links):
            await link.close()  # the handlers see EOF and return: no cancelled tasks left behind
        for server in self._servers:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()
        self.ledger.close()
