"""The terminal: an asyncio driver that runs the flows over the state table, the hardware and the journal.

The state table (`terminal.machine`) decides which step may follow which; this driver performs the
effects - read a card, journal, send a frame, print - and reports each outcome as the next trigger.
Every step that commits money is journaled *before* it is attempted (DESIGN principle 4): the
reversal of a sale is durable before the 0200 leaves, a sign-off intent before the 0820, so a kill
at any instant is finished or undone by `resume()` after a restart.

Time comes from the event loop's clock (`loop.time`), wall-clock dates from an anchor plus that
clock, so looptime runs a two-hour idle period in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from protocol import catalogue, codes, security
from protocol.catalogue import CardData
from protocol.composite import (
    RECORDS_PER_UPLOAD,
    BatchRecord,
    Field60,
    Field61,
    SettlementTotals,
    Totals,
    encode_device_info,
    parse_balance,
    parse_device_info,
)
from protocol.dialect import get_dialect
from protocol.errors import ProtocolError, SecurityError
from protocol.message import Message
from protocol.security import WorkingKeys

from . import machine
from .channel import BadReply, ExchangeError, HostChannel, NoReply, Offline
from .config import TerminalConfig
from .firmware import firmware_profile
from .hardware import Hardware
from .hardware.card_reader import CardReadError
from .hardware.cards import Card, named_card
from .hardware.printer import PrinterError
from .hardware.receipts import (
    Receipt,
    ReceiptData,
    SettlementData,
    as_reprint,
    declined_receipt,
    settlement_voucher,
    signoff_voucher,
    transaction_receipt,
)
from .journal import Journal
from .result import OpResult

log = logging.getLogger("possim.terminal")

TXN_TYPES = {"sale": "SALE", "void": "VOID", "refund": "REFUND", "balance": "BALANCE"}
#: Operations that add a record to the batch's log when approved (a balance enquiry adds none): refused
#: while the batch holds `TerminalConfig.batch_capacity` records.
LOGGED_OPS = frozenset({"sale", "void", "refund"})


class PowerLost(Exception):
    """The battery died (or the power was cut) in the middle of an operation."""


def _loop_clock() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Terminal:
    """One simulated POS terminal. Create, `await power_on()`, then run operations."""

    def __init__(self, config: TerminalConfig, *, journal: Journal | None = None, hardware: Hardware | None = None,
                 channel: HostChannel | None = None, clock: Callable[[], float] | None = None,
                 wall_clock: Callable[[], float] | None = None,
                 trace: Callable[[str, bytes], None] | None = None) -> None:
        self.state = "power_off"
        self.config = config
        self.clock = clock or _loop_clock
        wall = wall_clock or time.time
        self._epoch = wall() - self.clock()  # wall time = epoch + loop clock
        self.dialect = get_dialect(config.dialect)
        self.hw = hardware or Hardware.from_config(config, clock=self.clock)
        self.journal = journal or Journal.open(config.journal, tid=config.tid, mid=config.mid,
                                               pan_key=config.tmk_bytes, clock=self.now_ts)
        self.channel = channel or HostChannel(config.connect, dialect=self.dialect, tpdu=config.tpdu,
                                              firmware=config.firmware, clock=self.clock,
                                              connect_timeout=config.connect_timeout, trace=trace)
        self.keys: WorkingKeys | None = None
        self.mid = config.mid
        self.merchant_name = config.merchant_name
        self.firmware = config.firmware
        self.host_requirement = 0  # processing requirement the host set in its last reply header
        self._servicing = False
        self.obey_host_requests = True  # a fault switch: ignore the header's processing requirement
        self.firmware_boot_fails = False  # a fault switch: the next new image fails its first boot
        self._firmware_slots: Any = None
        self.last_activity = self.clock()
        self._signature_needed = False
        self.reversals_enabled = True  # a fault switch (FM-13) can turn the protection off
        self.batch_upload_enabled = True  # a fault switch: settle without reconciling (FM-16 remedy off)
        #: Called at each named step ("sale.journaled", "sale.sent", "settle.answered", ...): the seam crash
        #: tests and power-loss faults use to stop the terminal at a precise point.
        self.crash_hook: Callable[[str], None] | None = None

    # ------------------------------------------------------------------------------------------
    # clocks, display, state
    # ------------------------------------------------------------------------------------------
    def now_ts(self) -> float:
        return self._epoch + self.clock()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ts())

    @property
    def tid(self) -> str:
        return self.config.tid

    @property
    def signed_in(self) -> bool:
        return self.state in machine.SIGNED_IN_STATES

    def idle_for(self) -> float:
        """Seconds since the last operation (the daemon's idle auto sign-off reads this)."""
        return self.clock() - self.last_activity

    def show(self, *lines: str) -> None:
        self.hw.display.show(*lines)

    def _fire(self, trigger: str) -> None:
        machine.fire(self, trigger)

    # Conditions and callbacks used by the state table.
    def has_keys(self) -> bool:
        return self.keys is not None

    def needs_signature(self) -> bool:
        return self._signature_needed

    def _on_state_change(self) -> None:
        log.debug("%s state %s", self.tid, self.state)

    def _result(self, op: str, ok: bool, *, message: str = "", receipt: str | None = None,
                **kw: Any) -> OpResult:
        self.last_activity = self.clock()
        result = OpResult(op=op, ok=ok, state=self.state, display=list(self.hw.display.lines), receipt=receipt,
                          message=message, batch=kw.pop("batch", self.journal.batch), **kw)
        self.journal.event(f"op.{op}", {"ok": ok, "rc": result.rc, "stan": result.stan, "message": message})
        return result

    def _check_power(self) -> None:
        status = self.hw.battery.update()
        if not status.powered:
            self.state = "power_off"
            raise PowerLost("power lost")

    # ------------------------------------------------------------------------------------------
    # power
    # ------------------------------------------------------------------------------------------
    async def power_on(self) -> OpResult:
        """Boot: restore identity and keys from the journal; interrupted work is finished by `resume()`."""
        if self.state != "power_off":
            return self._result("power_on", True, message="already on")
        if not self.hw.battery.power_on():
            self.show("BATTERY EMPTY", "CHARGE THE TERMINAL")
            return self._result("power_on", False, message="battery empty")
        self._fire("power_on")
        self.show("POSSIM", f"FW {self.firmware}", "BOOTING")
        ident = self.journal.identity()
        if ident.get("mid"):
            self.mid = ident["mid"]
        if ident.get("merchant_name"):
            self.merchant_name = ident["merchant_name"]
        if self.config.journal != ":memory:" and os.path.exists(self.config.journal + ".firmware.json"):
            self._slots()  # the slot that booted decides the running version
        self.journal.set_identity(firmware=self.firmware)
        self.keys = None
        if ident.get("signed_in") and ident.get("wrapped_keys"):
            try:
                self.keys = security.unwrap_working_keys(self.config.tmk_bytes, ident["wrapped_keys"],
                                                         ident.get("key_mode"))
            except SecurityError as exc:
                log.warning("%s stored working keys unusable: %s", self.tid, exc)
        if self.keys is not None:
            self._fire("boot_signed_in")
            self.show("READY", f"BATCH {self.journal.batch}")
        else:
            self._fire("boot_signed_out")
            self.show("PLEASE SIGN IN")
        self.last_activity = self.clock()
        return self._result("power_on", True, message="booted")

    async def shut_down(self) -> None:
        await self.channel.close()
        if self.state != "power_off":
            self._fire("shut_down")

    async def reboot(self) -> OpResult:
        """Restart the terminal (the merchant's remedy for a hung terminal): link closed, state rebuilt."""
        await self.channel.close()
        if self.state != "power_off":
            self.state = "power_off"  # a reboot drops whatever was in flight; the journal has it
        result = await self.power_on()
        result.op = "reboot"
        return result

    # ------------------------------------------------------------------------------------------
    # host exchanges
    # ------------------------------------------------------------------------------------------
    def _point(self, name: str) -> None:
        """A named step: crash hooks fire here, and a power-loss fault takes effect here."""
        if self.crash_hook is not None:
            self.crash_hook(name)
        self._check_power()

    async def _exchange(self, request: Message, step: str | None = None) -> Any:
        self.hw.battery.consume("network")
        on_sent = (lambda: self._point(f"{step}.sent")) if step else None
        reply = await self.channel.exchange(request, timeout=self.config.reply_timeout, keys=self.keys,
                                            on_sent=on_sent)
        self.host_requirement = reply.requirement
        if reply.requirement:
            self.journal.event("host.requirement", {"requirement": reply.requirement})
        return reply

    def _base_fields(self) -> dict[str, str]:
        return {"tid": self.tid, "mid": self.mid, "batch": self.journal.batch}

    def set_firmware(self, version: str) -> None:
        """Run another firmware version from now on (reported in every header and at sign-in)."""
        self.firmware = version
        self.channel.firmware = version
        self.journal.set_identity(firmware=version)

    def _device_info(self) -> bytes:
        return encode_device_info(SN=self.config.serial, FW=self.firmware, BAT=int(self.hw.battery.level))

    async def _before_online(self) -> str | None:
        """Finish what the journal says is owed before a new online request: reversals first.

        Returns None when the way is clear, or a reason the operation must not go ahead.
        """
        await self._service_host_requests()
        if not self.reversals_enabled:
            return None
        for pending in self.journal.pending_reversals():
            outcome = await self._send_reversal(pending)
            if outcome is not None:
                return outcome
        return None

    async def _service_host_requests(self) -> None:
        """Do what the host asked for in a reply header: 1 download parameters, 3 sign in again."""
        requirement, self.host_requirement = self.host_requirement, 0
        if self._servicing or requirement not in (1, 3, 6) or not self.obey_host_requests:
            return
        self._servicing = True
        try:
            self.journal.event("host.request_serviced", {"requirement": requirement})
            if requirement == 1:
                await self.parameter_download()
            elif requirement == 6:
                if (await self.update_firmware()).ok:
                    await self.sign_in()
            elif self.state == "ready":
                await self.sign_in()
        finally:
            self._servicing = False

    async def _send_reversal(self, pending: Any) -> str | None:
        """Send one stored reversal; None when the host answered it (MAC verified)."""
        request = Message("0400", pending.fields)
        request[11] = pending.fields[11]
        self.journal.mark_reversal_sent(pending.stan, pending.batch)
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self.journal.event("reversal.unanswered", {"stan": pending.stan, "error": str(exc)})
            return f"reversal of STAN {pending.stan} not answered: {exc}"
        if not reply.authenticated:
            if reply.message.response_code == codes.MAC_FAILED:
                await self._lose_keys()
            return f"reversal of STAN {pending.stan} refused ({reply.message.response_code})"
        rc = reply.message.response_code or "00"
        if self.journal.clear_reversal(pending.stan, pending.batch, rc) is False:
            # 96, 77, A0 ...: the host did not process the reversal; it stays owed and goes first next time
            return f"reversal of STAN {pending.stan} not processed by the host ({rc})"
        self.show("REVERSAL SENT", f"TRACE {pending.stan}")
        return None

    async def _lose_keys(self) -> None:
        """The host no longer knows our keys (A0, 99, 77): sign in again before anything else."""
        self.keys = None
        self.journal.set_signed_out()
        if self.state in machine.SIGNED_IN_STATES:
            self._fire("must_sign_in")

    # ------------------------------------------------------------------------------------------
    # sign-in and friends
    # ------------------------------------------------------------------------------------------
    async def sign_in(self) -> OpResult:
        op = "sign_in"
        if self.state not in ("signed_out", "ready"):
            return self._result(op, False, message=f"cannot sign in while {self.state}")
        if self.host_requirement == 1:
            # the host refused us as another merchant (03) and asked for parameters: fetch them first, or
            # every retry (the daemon's, the merchant's) meets the same 03 (FM-07 at sign-in)
            await self._service_host_requests()
        self._fire("start_sign_in")
        self.show("SIGN IN", "CONNECTING...")
        stan = self.journal.next_stan()
        request = catalogue.sign_in(tid=self.tid, mid=self.mid, stan=stan, batch=self.journal.batch,
                                    mode=self.config.key_mode, operator=self.config.operator,
                                    device_info=self._device_info())
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self._fire("offline")
            self.show("SIGN IN FAILED", _why(exc))
            return self._result(op, False, stan=stan, message=str(exc))
        msg = reply.message
        rc = msg.response_code
        if rc != codes.APPROVED:
            self._fire("sign_in_failed") if self.state == "signing_in" else None
            lines = ["SIGN IN REFUSED", f"{rc} {codes.lookup(rc).display}"]
            if reply.requirement == 6:
                lines.append("FIRMWARE UPDATE REQUIRED")
            elif rc == codes.INVALID_MERCHANT:
                lines.append("UPDATE PARAMETERS")
            self.show(*lines)
            return self._result(op, False, rc=rc, stan=stan, message=codes.describe(rc),
                                detail={"requirement": reply.requirement})
        try:
            wrapped = msg[62]
            assert isinstance(wrapped, bytes)
            keys = security.unwrap_working_keys(self.config.tmk_bytes, wrapped, self.config.key_mode)
            batch = Field60.parse(str(msg[60])).batch
        except (KeyError, AssertionError, SecurityError, ProtocolError) as exc:
            self._fire("sign_in_failed")
            self.show("SIGN IN FAILED", "KEY CHECK ERROR")
            return self._result(op, False, rc=rc, stan=stan, message=f"working keys refused: {exc}")
        self.keys = keys
        self.journal.set_signed_in(wrapped_keys=wrapped, key_mode=self.config.key_mode, batch=batch)
        self._fire("keys_accepted")
        self.show("SIGNED IN", f"BATCH {batch}")
        return self._result(op, True, rc=rc, stan=stan, batch=batch, message="signed in")

    async def _simple_network(self, op: str, name: str, *, device_info: bool = False) -> tuple[OpResult, Any]:
        """echo / status upload / parameter download: one 08x0 with no money and no printout."""
        if self.state not in ("ready", "signed_out"):
            return self._result(op, False, message=f"cannot {op} while {self.state}"), None
        if self.state == "ready":
            blocked = await self._before_online()
            if blocked:
                self.show("OFFLINE", "REVERSAL PENDING")
                return self._result(op, False, message=blocked), None
        stan = self.journal.next_stan()
        request = catalogue.network(name, stan=stan, device_info=self._device_info() if device_info else None,
                                    **self._base_fields())
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self.show(op.replace("_", " ").upper(), "FAILED", _why(exc))
            return self._result(op, False, stan=stan, message=str(exc)), None
        rc = reply.message.response_code
        ok = rc == codes.APPROVED
        self.show(op.replace("_", " ").upper(), "OK" if ok else f"{rc} {codes.lookup(rc).display}")
        return self._result(op, ok, rc=rc, stan=stan, message=codes.describe(rc),
                            detail={"rtt_ms": round(reply.round_trip * 1000, 1)}), reply

    async def echo(self) -> OpResult:
        result, _ = await self._simple_network("echo", "echo")
        return result

    async def status_upload(self) -> OpResult:
        result, _ = await self._simple_network("status_upload", "status_upload", device_info=True)
        return result

    async def parameter_download(self) -> OpResult:
        """Fetch the merchant's current parameters (FM-07: the merchant was renamed or moved)."""
        result, reply = await self._simple_network("parameter_download", "parameter_download")
        if reply is None or not result.ok:
            return result
        params: dict[str, str] = {}
        raw = reply.message.get(62)
        if isinstance(raw, bytes):
            try:
                params = parse_device_info(raw)
            except ProtocolError as exc:
                result.ok = False
                result.message = f"parameters unreadable: {exc}"
                return result
        new_mid = params.get("MID") or str(reply.message.get(42) or self.mid)
        name = params.get("NAME") or self.merchant_name
        changed = new_mid != self.mid or name != self.merchant_name
        self.mid, self.merchant_name = new_mid, name
        self.journal.set_identity(mid=new_mid, merchant_name=name)
        self.show("PARAMETERS UPDATED" if changed else "PARAMETERS CURRENT", name[:20], new_mid)
        result.detail.update({"mid": new_mid, "merchant_name": name, "changed": changed})
        result.display = list(self.hw.display.lines)
        return result

    # ------------------------------------------------------------------------------------------
    # money
    # ------------------------------------------------------------------------------------------
    def _refuse_if_unfit(self, op: str) -> OpResult | None:
        if self.state == "signed_out":
            self.show("PLEASE SIGN IN")
            return self._result(op, False, message="not signed in")
        if self.state != "ready":
            return self._result(op, False, message=f"cannot start {op} while {self.state}")
        status = self.hw.battery.update()
        if not status.powered:
            self.state = "power_off"
            return self._result(op, False, message="power lost")
        if status.critical:
            self.show("BATTERY CRITICAL", "CHARGE THE TERMINAL", "NEW SALES REFUSED")
            return self._result(op, False, message="battery critical: new transactions refused")
        if status.low:
            log.info("%s battery low (%.0f%%)", self.tid, status.level)
            self.journal.event("battery.low", {"level": round(status.level, 1)})
        if op in LOGGED_OPS:
            return self._refuse_if_batch_full(op)
        return None

    @property
    def batch_full(self) -> bool:
        """The open batch's log holds `batch_capacity` records: sales, voids and refunds are refused until
        it is settled. What a driver (the load runner, a Locust user) asks to settle before it is refused."""
        return self.journal.batch_count(self.journal.batch) >= self.config.batch_capacity

    def _refuse_if_batch_full(self, op: str) -> OpResult | None:
        """The batch's log is full (`batch_capacity` records): refused before the card is read and before
        anything is sent, until the batch is settled (a real terminal's "BATCH FULL / PLS SETTLE BATCH")."""
        if not self.batch_full:
            return None
        batch = self.journal.batch
        records, capacity = self.journal.batch_count(batch), self.config.batch_capacity
        self.show("BATCH FULL", "PLS SETTLE")
        self.journal.event("batch.full", {"batch": batch, "records": records, "capacity": capacity, "op": op})
        return self._result(op, False, message="batch full: settle first",
                            detail={"batch_full": True, "records": records, "capacity": capacity})

    async def sale(self, amount_fen: int, *, card: Card | str | None = None, method: str = "swipe",
                   pin: str | None = None) -> OpResult:
        return await self._card_transaction("sale", amount_fen, card=card, method=method, pin=pin)

    async def balance(self, *, card: Card | str | None = None, method: str = "swipe",
                      pin: str | None = None) -> OpResult:
        return await self._card_transaction("balance", None, card=card, method=method, pin=pin)

    async def _card_transaction(self, op: str, amount_fen: int | None, *, card: Card | str | None, method: str,
                                pin: str | None) -> OpResult:
        refused = self._refuse_if_unfit(op)
        if refused:
            if self.hw.battery.status().critical and self.state == "ready":
                await self._close_day_before_power_down(refused)
            return refused
        if amount_fen is not None and not 0 < amount_fen < 10**12:
            return self._result(op, False, message=f"invalid amount {amount_fen}")
        blocked = await self._before_online()
        if blocked:
            self.show("OFFLINE", "REVERSAL PENDING", "TRY AGAIN LATER")
            return self._result(op, False, message=blocked, amount=amount_fen)
        if self.state != "ready":  # the reversal's reply told us to sign in again
            return self._result(op, False, message="must sign in again", amount=amount_fen)
        card_obj = _resolve_card(card)
        self._fire("start_card")
        title = TXN_TYPES[op]
        self.show(title, _yuan(amount_fen) if amount_fen else "", "SWIPE / INSERT CARD")
        try:
            read = self.hw.reader.read(card_obj, method, amount_fen=amount_fen or 0, when=self.now())
        except CardReadError as exc:
            self._fire("card_failed")
            self.show(title, exc.reason.upper())
            self.journal.event("reader.error", {"reason": exc.reason, "cause": exc.cause})
            return self._result(op, False, message=exc.reason, amount=amount_fen,
                                detail={"reader_errors": self.hw.reader.errors})
        self._fire("card_read")
        card_data = CardData(pan=read.pan, expiry=read.expiry, track2=read.track2, entry_mode=read.entry_mode,
                             card_seq=read.card_seq, icc=read.icc or b"")
        pin_block = None
        if pin is not None and self.keys is not None:
            pin_block = security.encrypt_pin_block(self.keys.pin_key, pin, read.pan)
        stan = self.journal.next_stan()
        batch = self.journal.batch
        request = catalogue.financial(op, tid=self.tid, mid=self.mid, stan=stan, batch=batch, card=card_data,
                                      amount_fen=amount_fen, pin_block=pin_block)
        if op == "balance":
            return await self._balance_exchange(request, stan)
        return await self._financial_exchange(op, request, pan=read.pan, amount_fen=amount_fen or 0,
                                              entry_mode=read.entry_mode)

    async def _close_day_before_power_down(self, refused: OpResult) -> None:
        """Battery critical (FM-10): settle and sign off while there is still power to do it."""
        closing = await self.settle() if self.journal.summary()["transactions"] else await self.sign_off()
        self.show("BATTERY CRITICAL", "DAY CLOSED" if closing.ok else "DAY NOT CLOSED", "CHARGE THE TERMINAL")
        refused.state = self.state
        refused.display = list(self.hw.display.lines)
        refused.detail["day_closed"] = closing.ok

    async def _balance_exchange(self, request: Message, stan: str) -> OpResult:
        self.show("BALANCE", "PROCESSING...")
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self._fire("offline")
            self.show("BALANCE", "NO RESPONSE" if isinstance(exc, NoReply) else "OFFLINE")
            return self._result("balance", False, stan=stan, message=str(exc))
        msg = reply.message
        rc = msg.response_code
        self._fire("answered")
        if rc == codes.APPROVED and isinstance(msg.get(54), str):
            balance = parse_balance(str(msg[54]))
            self.show("BALANCE", _yuan(balance))
            return self._result("balance", True, rc=rc, stan=stan, message="balance",
                                detail={"balance": balance})
        self.show("BALANCE", f"{rc} {codes.lookup(rc).display}")
        return self._result("balance", False, rc=rc, stan=stan, message=codes.describe(rc))

    async def _financial_exchange(self, op: str, request: Message, *, pan: str, amount_fen: int, entry_mode: str,
                                  original_stan: str | None = None, original_batch: str | None = None) -> OpResult:
        """Journal the reversal, send, and settle the outcome: approved, declined, or reversed."""
        stan, batch = str(request[11]), Field60.parse(str(request[60])).batch  # the batch it goes out under
        reversal = catalogue.reversal(request, codes.REVERSAL_NO_REPLY)
        self.journal.record_pending(
            kind=op, stan=stan, batch=batch, amount_fen=amount_fen, pan=pan, entry_mode=entry_mode,
            original_stan=original_stan, original_batch=original_batch,
            reversal=_fields_json(reversal) if self.reversals_enabled else None,
        )
        self._point(f"{op}.journaled")
        self.show(TXN_TYPES[op], _yuan(amount_fen), "PROCESSING...")
        try:
            reply = await self._exchange(request, op)
        except Offline as exc:
            return await self._unanswered(op, stan, batch, amount_fen, codes.REVERSAL_NO_REPLY, exc, offline=True)
        except NoReply as exc:
            return await self._unanswered(op, stan, batch, amount_fen, codes.REVERSAL_NO_REPLY, exc)
        except BadReply as exc:
            return await self._unanswered(op, stan, batch, amount_fen, exc.reason, exc)
        self._point(f"{op}.replied")
        msg = reply.message
        rc = msg.response_code or "--"
        if not reply.authenticated:
            # The host refused without being able to verify us (A0 / 30 without MAC): nothing charged,
            # but the reversal stays until a verified reply clears it (cup-pos Clarifications).
            self.journal.record_refusal(stan=stan, batch=batch, rc=rc)
            self._fire("declined")
            receipt = self._declined_slip(op, stan, amount_fen, pan, rc, entry_mode)
            printed = self._print([receipt])
            if rc in (codes.MAC_FAILED, "99"):
                await self._lose_keys()
            return self._result(op, False, rc=rc, stan=stan, amount=amount_fen, message=codes.describe(rc),
                                receipt=receipt.text if printed else None)
        approved = rc == codes.APPROVED
        rrn, auth = str(msg.get(37, "")), str(msg.get(38, ""))
        host_date = str(msg.get(13, "")) or self.now().strftime("%m%d")
        self.journal.record_reply(stan=stan, batch=batch, rc=rc, approved=approved, rrn=rrn, auth_code=auth,
                                  host_date=host_date, host_time=str(msg.get(12, "")))
        self._point(f"{op}.recorded")
        if not approved:
            self._fire("declined")
            self.show(TXN_TYPES[op], f"DECLINED {rc}", codes.lookup(rc).display, "NOT CHARGED")
            receipt = self._declined_slip(op, stan, amount_fen, pan, rc, entry_mode)
            printed = self._print([receipt], stan=stan, pan=pan, batch=batch)
            if codes.lookup(rc).action is codes.Action.SIGN_IN:
                await self._lose_keys()
            return self._result(op, False, rc=rc, stan=stan, amount=amount_fen, message=codes.describe(rc),
                                receipt=receipt.text if printed else None, detail={"rrn": rrn}, batch=batch)
        # approved: signature, then the slips
        self._signature_needed = self.config.require_signature and op in ("sale", "void", "refund")
        self._fire("approved")
        signature = "none"
        if self.state == "awaiting_signature":
            signature = await self._capture_signature(stan, batch, op)
            self._fire("signature_done")
        self._signature_needed = False
        data = self._receipt_data(op, stan, amount_fen, pan, rc, entry_mode, rrn=rrn, auth=auth,
                                  signature=signature, original_stan=original_stan, batch=batch)
        receipts = [transaction_receipt(data, copy="merchant"), transaction_receipt(data, copy="customer")]
        printed = self._print(receipts, stan=stan, pan=pan, batch=batch)
        self.show(TXN_TYPES[op], _yuan(amount_fen), "APPROVED" if printed else "APPROVED - PRINT FAILED",
                  *([] if printed else ["REPRINT LATER"]))
        return self._result(op, True, rc=rc, stan=stan, amount=amount_fen, message="approved", batch=batch,
                            receipt=receipts[0].text if printed else None,
                            detail={"rrn": rrn, "auth_code": auth, "signature": signature,
                                    "receipt_pending": not printed})

    async def _unanswered(self, op: str, stan: str, batch: str, amount_fen: int, reason: str, exc: Exception,
                          *, offline: bool = False) -> OpResult:
        """No usable reply: the journaled reversal is due. Try it now; it stays pending otherwise."""
        self.journal.set_reversal_reason(stan, batch, reason)
        self._fire("no_reply")
        self.show(TXN_TYPES[op], "OFFLINE" if offline else "NO RESPONSE", "REVERSING...")
        if not self.reversals_enabled:
            self._fire("reversal_pending")
            self.show(TXN_TYPES[op], "NO RESPONSE", "CHECK WITH HOST")
            return self._result(op, False, stan=stan, amount=amount_fen, message=str(exc),
                                detail={"reversal": "disabled"})
        pending = [p for p in self.journal.pending_reversals() if p.stan == stan and p.batch == batch]
        outcome = await self._send_reversal(pending[0]) if pending else None
        if self.state == "reversing":
            self._fire("reversal_done" if outcome is None else "reversal_pending")
        if outcome is None:
            self.show(TXN_TYPES[op], "NO RESPONSE", "REVERSED - NOT CHARGED")
        else:
            self.show(TXN_TYPES[op], "OFFLINE" if offline else "NO RESPONSE", "REVERSAL PENDING")
        return self._result(op, False, stan=stan, amount=amount_fen, message=str(exc),
                            detail={"reversal": "sent" if outcome is None else "pending", "reason": reason})

    async def _capture_signature(self, stan: str, batch: str, op: str) -> str:
        self.show("PLEASE SIGN", "ON THE PAD")
        result = await self.hw.signature_pad.acapture(self.config.signature_timeout)
        if result.captured and result.image:
            self.journal.set_signature(stan, batch, "signed", image=result.image)
            await self._upload_signature(stan, batch, result.image)
            return "captured"
        self.journal.set_signature(stan, batch, "unsigned")
        self.journal.event("signature.missing", {"stan": stan, "status": result.status})
        return "unsigned"

    async def _upload_signature(self, stan: str, batch: str, image: bytes) -> bool:
        txn = self.journal.transaction(stan, batch)
        date = (txn.host_date if txn and txn.host_date else self.now().strftime("%m%d"))
        request = catalogue.signature_upload(tid=self.tid, mid=self.mid, stan=self.journal.next_stan(), batch=batch,
                                             original=Field61(batch, stan, date), image=image)
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self.journal.event("signature.upload_failed", {"stan": stan, "error": str(exc)})
            return False
        if reply.message.response_code == codes.APPROVED:
            self.journal.set_signature(stan, batch, "uploaded")
            return True
        return False

    async def upload_signature(self, stan: str, *, image: bytes | None = None) -> OpResult:
        """Supplementary signature for an approved but unsigned transaction (FM-11 remedy)."""
        op = "signature_upload"
        if self.state != "ready":
            return self._result(op, False, message=f"cannot upload a signature while {self.state}")
        txn = self.journal.find_transaction(stan)
        if txn is None:
            return self._result(op, False, stan=stan, message=f"no transaction with STAN {stan}")
        if image is None:
            result = await self.hw.signature_pad.acapture(self.config.signature_timeout)
            if not result.captured or not result.image:
                self.show("SIGNATURE", "NOT CAPTURED")
                return self._result(op, False, stan=stan, message=f"signature {result.status}")
            image = result.image
        self.journal.set_signature(txn.stan, txn.batch, "signed", image=image)
        ok = await self._upload_signature(txn.stan, txn.batch, image)
        self.show("SIGNATURE", "UPLOADED" if ok else "SAVED, UPLOAD PENDING")
        return self._result(op, ok, stan=stan, batch=txn.batch, message="uploaded" if ok else "upload failed")

    async def void(self, stan: str) -> OpResult:
        """Void (撤销) an approved sale of the current batch, by its STAN."""
        op = "void"
        refused = self._refuse_if_unfit(op)
        if refused:
            return refused
        original = self.journal.find_transaction(stan)
        if original is None or original.kind != "sale" or original.status not in ("approved",):
            why = "no approved sale" if original is None or original.kind != "sale" else f"sale is {original.status}"
            self.show("VOID", f"TRACE {stan}", "NOT FOUND" if original is None else why.upper())
            return self._result(op, False, stan=stan, message=f"{why} with STAN {stan}")
        if original.batch != self.journal.batch:
            self.show("VOID", "BATCH SETTLED", "USE REFUND")
            return self._result(op, False, stan=stan, message="sale is in a settled batch: refund instead")
        return await self._referenced(op, original, original.amount_fen)

    async def refund(self, stan: str, amount_fen: int) -> OpResult:
        """Refund (退货) part or all of an approved sale, by its STAN."""
        op = "refund"
        refused = self._refuse_if_unfit(op)
        if refused:
            return refused
        original = self.journal.find_transaction(stan)
        if original is None or original.kind != "sale" or original.status not in ("approved", "refunded"):
            self.show("REFUND", f"TRACE {stan}", "NOT FOUND")
            return self._result(op, False, stan=stan, message=f"no approved sale with STAN {stan}")
        if not 0 < amount_fen <= original.amount_fen - original.refunded_fen:
            self.show("REFUND", "AMOUNT TOO LARGE")
            refundable = original.amount_fen - original.refunded_fen
            return self._result(op, False, stan=stan, amount=amount_fen,
                                message=f"refund exceeds the refundable {_amount(refundable)}")
        return await self._referenced(op, original, amount_fen)

    async def _referenced(self, op: str, original: Any, amount_fen: int) -> OpResult:
        blocked = await self._before_online()
        if blocked:
            self.show("OFFLINE", "REVERSAL PENDING")
            return self._result(op, False, message=blocked)
        if self.state != "ready":
            return self._result(op, False, message="must sign in again")
        pan = self.journal.pan_for(original)
        self._fire("start_online")
        card = CardData(pan=pan, expiry=original.expiry or "", entry_mode="012")
        stan = self.journal.next_stan()
        date = original.host_date or ""
        request = catalogue.financial(
            op, tid=self.tid, mid=self.mid, stan=stan, batch=self.journal.batch, card=card, amount_fen=amount_fen,
            original=Field61(original.batch, original.stan, date if op == "refund" else ""),
            original_rrn=original.rrn or None)
        return await self._financial_exchange(op, request, pan=pan, amount_fen=amount_fen, entry_mode="012",
                                              original_stan=original.stan, original_batch=original.batch)

    # ------------------------------------------------------------------------------------------
    # printing
    # ------------------------------------------------------------------------------------------
    def _receipt_data(self, op: str, stan: str, amount_fen: int, pan: str, rc: str, entry_mode: str, *,
                      rrn: str = "", auth: str = "", signature: str = "none",
                      original_stan: str | None = None, batch: str | None = None) -> ReceiptData:
        return ReceiptData(
            merchant_name=self.merchant_name, merchant_id=self.mid, terminal_id=self.tid, txn_type=TXN_TYPES[op],
            amount_fen=amount_fen, when=self.now(), pan=pan, entry_mode=entry_mode, operator=self.config.operator,
            batch=batch or self.journal.batch, stan=stan, rrn=rrn, auth_code=auth, response_code=rc,
            signature=signature, original_stan=original_stan)

    def _declined_slip(self, op: str, stan: str, amount_fen: int, pan: str, rc: str, entry_mode: str) -> Receipt:
        return declined_receipt(self._receipt_data(op, stan, amount_fen, pan, rc, entry_mode))

    def _print(self, receipts: list[Receipt], *, stan: str | None = None, signed_out: bool = False,
               pan: str | None = None, batch: str | None = None) -> bool:
        """Print slips in order; on a printer fault the rest are journaled as pending (reprint later).

        All slips are journaled (pending) in one step before the first is printed; each is marked
        printed as it comes out, so a crash between two slips leaves exactly the unprinted one owed.
        """
        stored = self.journal.store_receipts([(r.kind, r.text, r.copy) for r in receipts], stan=stan,
                                             batch=batch or self.journal.batch, pan=pan)
        ok = True
        for receipt, slip in zip(receipts, stored, strict=True):
            try:
                self.hw.printer.print(receipt)
            except PrinterError as exc:
                ok = False
                self.journal.event("printer.fault", {"kind": exc.kind, "stan": stan})
                self.show("PRINT FAILED", exc.message.upper()[:32], "REPRINT LATER")
                break
            self.journal.mark_printed(slip)
        if self.state == "printing":
            if signed_out:
                self._fire("printed_signed_out" if ok else "print_failed_signed_out")
            else:
                self._fire("printed" if ok else "print_failed")
        return ok

    async def reprint(self, stan: str | None = None) -> OpResult:
        """Reprint a slip (the last one, or the one of a STAN), marked REPRINT (FM-12 remedy)."""
        op = "reprint"
        if self.state not in ("ready", "signed_out"):
            return self._result(op, False, message=f"cannot reprint while {self.state}")
        stored = self.journal.receipt_for(stan) if stan else self.journal.last_receipt()
        if stored is None:
            self.show("REPRINT", "NO RECEIPT")
            return self._result(op, False, stan=stan, message="no receipt to reprint")
        receipt = as_reprint(Receipt(kind=stored.kind, lines=tuple(stored.text.split("\n")), copy=stored.copy,
                                     stan=stored.stan, batch=stored.batch))
        was_signed_out = self.state == "signed_out"
        self._fire("start_reprint")
        try:
            self.hw.printer.print(receipt)
        except PrinterError as exc:
            self._fire("print_failed_signed_out" if was_signed_out else "print_failed")
            self.show("PRINT FAILED", exc.message.upper()[:32])
            return self._result(op, False, stan=stored.stan, message=exc.message)
        self.journal.mark_reprinted(stored)
        self._fire("printed_signed_out" if was_signed_out else "printed")
        self.show("REPRINT", "DONE")
        return self._result(op, True, stan=stored.stan, receipt=receipt.text, message="reprinted")

    # ------------------------------------------------------------------------------------------
    # day end
    # ------------------------------------------------------------------------------------------
    async def settle(self) -> OpResult:
        """Settlement (结算): totals to the host; batch upload when unbalanced; voucher; next batch."""
        op = "settle"
        if self.state != "ready":
            if self.state == "signed_out":
                self.show("PLEASE SIGN IN")
            return self._result(op, False, message=f"cannot settle while {self.state}")
        blocked = await self._before_online()
        if blocked:
            self.show("SETTLEMENT", "REVERSAL PENDING")
            return self._result(op, False, message=blocked)
        if self.state != "ready":
            return self._result(op, False, message="must sign in again")
        return await self._settle_batch(self.journal.batch)

    async def _settle_batch(self, batch: str) -> OpResult:
        op = "settle"
        debit, debit_n, credit, credit_n = self.journal.batch_totals(batch)
        totals = SettlementTotals(Totals(debit, debit_n, credit, credit_n, 0), Totals())
        intent = self.journal.begin_intent("settlement", batch, {"totals": totals.encode()})
        self._point("settle.intent")
        self._fire("start_settlement")
        self.show("SETTLEMENT", f"BATCH {batch}", "PROCESSING...")
        stan = self.journal.next_stan()
        request = firmware_profile(self.firmware).settlement_request(
            catalogue.settlement(tid=self.tid, mid=self.mid, stan=stan, batch=batch, totals=totals,
                                 operator=self.config.operator))
        try:
            reply = await self._exchange(request, "settle")
        except ExchangeError as exc:
            self._fire("settlement_failed")
            self.show("SETTLEMENT FAILED", _why(exc), "RETRY LATER")
            return self._result(op, False, stan=stan, batch=batch, message=str(exc))
        msg = reply.message
        rc = msg.response_code
        if rc != codes.APPROVED:
            self._fire("settlement_failed")
            self.show("SETTLEMENT FAILED", f"{rc} {codes.lookup(rc).display}")
            if codes.lookup(rc).action is codes.Action.SIGN_IN:
                await self._lose_keys()
            return self._result(op, False, rc=rc, stan=stan, batch=batch, message=codes.describe(rc))
        try:
            host_totals = SettlementTotals.parse(str(msg[48]))
        except (KeyError, ProtocolError) as exc:
            self._fire("settlement_failed")
            self.show("SETTLEMENT FAILED", "BAD REPLY")
            return self._result(op, False, rc=rc, stan=stan, batch=batch, message=f"settlement reply: {exc}")
        result = host_totals.result
        self.journal.intent_step(intent, "answered", {"result": result})
        self._point("settle.answered")
        uploaded = 0
        if result != "balanced" and self.batch_upload_enabled:
            self._fire("unbalanced")
            self.show("SETTLEMENT", "UNBALANCED", "BATCH UPLOAD...")
            upload = await self._batch_upload(batch)
            if isinstance(upload, OpResult):
                return upload
            uploaded = upload
            self.journal.intent_step(intent, "uploaded", {"records": uploaded})
        self._fire("settled")
        data = self._settlement_data(batch, totals.domestic, result, uploaded, host_totals.domestic)
        voucher = settlement_voucher(data)
        self.journal.record_settlement(batch, result=result, terminal_totals=totals.encode(),
                                       host_totals=host_totals.encode(), uploaded=uploaded)
        self._point("settle.recorded")
        printed = self._print([voucher])
        next_batch = self.journal.advance_batch()
        self.journal.complete_intent(intent)
        self.show("SETTLEMENT DONE", result.upper(), f"NEXT BATCH {next_batch}",
                  *([] if printed else ["VOUCHER NOT PRINTED"]))
        settle_result = self._result(op, True, rc=rc, stan=stan, batch=batch, message=f"settled: {result}",
                                     receipt=voucher.text if printed else None,
                                     detail={"result": result, "uploaded": uploaded, "next_batch": next_batch,
                                             "unsigned": list(data.unsigned_stans)})
        if self.config.sign_off_after_settlement:
            signoff = await self.sign_off()
            settle_result.detail["sign_off"] = signoff.ok
            settle_result.state = self.state
            settle_result.display = list(self.hw.display.lines)
        return settle_result

    async def resettle(self, batch: str) -> OpResult:
        """Send a settled batch's totals again (after a firmware fix: FM-09); the host answers idempotently."""
        op = "resettle"
        settled = {s.batch: s for s in self.journal.settlements()}
        if batch not in settled:
            return self._result(op, False, batch=batch, message=f"batch {batch} was never settled")
        if self.state != "ready":
            return self._result(op, False, batch=batch, message=f"cannot re-settle while {self.state}")
        totals = SettlementTotals.parse(settled[batch].terminal_totals)
        request = firmware_profile(self.firmware).settlement_request(
            catalogue.settlement(tid=self.tid, mid=self.mid, stan=self.journal.next_stan(), batch=batch,
                                 totals=totals, operator=self.config.operator))
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self.show("RE-SETTLEMENT FAILED", _why(exc))
            return self._result(op, False, batch=batch, message=str(exc))
        rc = reply.message.response_code
        self.show("RE-SETTLEMENT", f"BATCH {batch}", "OK" if rc == codes.APPROVED else f"{rc}")
        return self._result(op, rc == codes.APPROVED, rc=rc, batch=batch, message=codes.describe(rc))

    async def _batch_upload(self, batch: str) -> int | OpResult:
        records = [BatchRecord(stan=r.stan, pan=r.pan, amount=r.amount_fen) for r in self.journal.batch_records(batch)]
        for start in range(0, len(records), RECORDS_PER_UPLOAD):
            chunk = records[start:start + RECORDS_PER_UPLOAD]
            request = catalogue.batch_upload(tid=self.tid, mid=self.mid, stan=self.journal.next_stan(), batch=batch,
                                             records=chunk)
            failure = await self._upload_step(request, batch)
            if failure:
                return failure
        request = catalogue.batch_upload_end(tid=self.tid, mid=self.mid, stan=self.journal.next_stan(),
                                             batch=batch, total_records=len(records))
        failure = await self._upload_step(request, batch)
        return failure or len(records)

    async def _upload_step(self, request: Message, batch: str) -> OpResult | None:
        try:
            reply = await self._exchange(request)
        except ExchangeError as exc:
            self._fire("settlement_failed")
            self.show("BATCH UPLOAD FAILED", _why(exc), "RETRY SETTLEMENT")
            return self._result("settle", False, batch=batch, message=f"batch upload: {exc}")
        if reply.message.response_code != codes.APPROVED:
            rc = reply.message.response_code
            self._fire("settlement_failed")
            self.show("BATCH UPLOAD FAILED", f"{rc} {codes.lookup(rc).display}")
            return self._result("settle", False, rc=rc, batch=batch, message=f"batch upload: {codes.describe(rc)}")
        return None

    def _settlement_data(self, batch: str, totals: Totals, result: str, uploaded: int,
                         host: Totals | None = None) -> SettlementData:
        differs = host is not None and not totals.same_amounts(host)
        return SettlementData(
            merchant_name=self.merchant_name, merchant_id=self.mid, terminal_id=self.tid, batch=batch,
            when=self.now(), debit_count=totals.debit_count, debit_fen=totals.debit_amount,
            credit_count=totals.credit_count, credit_fen=totals.credit_amount, result=result,
            settlement_type=self.journal.identity().get("settlement_type") or "T1",
            merchant_serial=f"{int(batch):06d}{int(self.journal.stan):06d}", operator=self.config.operator,
            uploaded_records=uploaded, unsigned_stans=tuple(self.journal.unsigned_stans(batch)),
            host_debit_count=host.debit_count if differs and host else None,
            host_debit_fen=host.debit_amount if differs and host else None,
            host_credit_count=host.credit_count if differs and host else None,
            host_credit_fen=host.credit_amount if differs and host else None,
        )

    async def sign_off(self) -> OpResult:
        """Sign-off (签退): journaled first, so an interrupted sign-off is completed after a restart."""
        op = "sign_off"
        if self.state == "signed_out":
            self.show("ALREADY SIGNED OUT")
            return self._result(op, True, message="already signed out")
        if self.state != "ready":
            return self._result(op, False, message=f"cannot sign off while {self.state}")
        blocked = await self._before_online()
        if blocked:
            self.show("SIGN OFF", "REVERSAL PENDING")
            return self._result(op, False, message=blocked)
        if self.state != "ready":
            return self._result(op, False, message="must sign in again")
        intent = self.journal.open_intent("sign_off") or self.journal.begin_intent(
            "sign_off", self.journal.batch, {"stan": self.journal.next_stan()})
        stan = str(intent.data.get("stan") or self.journal.next_stan())
        self._fire("start_sign_off")
        self.show("SIGN OFF", "PROCESSING...")
        request = catalogue.network("sign_off", stan=stan, **self._base_fields())
        self._point("sign_off.intent")
        try:
            reply = await self._exchange(request, "sign_off")
        except ExchangeError as exc:
            self._fire("sign_off_failed")
            timeout = isinstance(exc, NoReply)
            self.show("SIGN OFF TIMEOUT" if timeout else "SIGN OFF FAILED", _why(exc), "SIGN-OFF PENDING")
            return self._result(op, False, stan=stan, message=str(exc), detail={"pending": True})
        rc = reply.message.response_code
        if rc != codes.APPROVED:
            self._fire("sign_off_failed")
            lines = ["SIGN OFF REFUSED", f"{rc} {codes.lookup(rc).display}"]
            if rc == codes.INVALID_MERCHANT:
                lines.append("UPDATE PARAMETERS")
            self.show(*lines)
            return self._result(op, False, rc=rc, stan=stan, message=codes.describe(rc), detail={"pending": True})
        self._point("sign_off.answered")
        self.keys = None
        self.journal.complete_sign_off(intent)  # signed out and the intent closed in one step: no crash between
        self._fire("signed_off")
        last = self.journal.last_settlement()
        voucher = None
        if last is not None:
            t = Totals.parse(last.terminal_totals[:31])
            voucher = signoff_voucher(self._settlement_data(last.batch, t, last.result, last.uploaded))
            printed = self._print([voucher], signed_out=True)
        else:
            self._fire("printed_signed_out")
            printed = False
        self.show("SIGNED OFF", "GOOD BYE")
        return self._result(op, True, rc=rc, stan=stan, message="signed off",
                            receipt=voucher.text if voucher is not None and printed else None)

    # ------------------------------------------------------------------------------------------
    # firmware update (A/B slots, resumable chunked download, verify, install, first boot)
    # ------------------------------------------------------------------------------------------
    def _slots(self) -> Any:
        from firmware_sim.slots import Slots

        if self._firmware_slots is None:
            path = None if self.config.journal == ":memory:" else self.config.journal + ".firmware.json"
            self._firmware_slots = Slots.load(path, factory_version=self.firmware)
            if self._firmware_slots.running and self._firmware_slots.running != self.firmware:
                self.set_firmware(self._firmware_slots.running)
        return self._firmware_slots

    async def update_firmware(self) -> OpResult:
        """Download the host's firmware in chunks, verify size, hash and signature, install into the
        inactive slot and reboot into it. Any failure (link drop, corrupt chunk, bad image, power loss,
        failed first boot) leaves the old version running; a download resumes where it stopped.

        The engine is `firmware_sim.update.UpdateSession` (sans I/O); this drives it over the link, journals
        its events as `firmware.<event>` and routes its fault points through `_point("firmware.<point>")`."""
        from firmware_sim.update import State, UpdateSession

        op = "update_firmware"
        if self.state not in ("signed_out", "ready"):
            return self._result(op, False, message=f"cannot update while {self.state}")
        old = self.firmware
        # public_key None: image.verify's default, the vendor key the terminal has always checked against
        session = UpdateSession(self._slots(), running=old, fault=lambda point: self._point(f"firmware.{point}"))
        self._fire("start_update")
        self.show("FIRMWARE UPDATE", "CHECKING...")
        installed = False
        try:
            rc = await self._drive_firmware_download(session)
            if session.state is State.VERIFIED:
                session.install()
                installed = True
                self._journal_firmware_events(session)
                self._fire("update_finished")  # -> booting into the new slot
                running = session.reboot(boot_ok=not self.firmware_boot_fails)
                self._journal_firmware_events(session)
                if running != self.firmware:
                    self.set_firmware(running)
        except BaseException:
            session.slots.recover()  # the power went: what the bootloader finds at the next power-on
            raise
        if session.state is State.UP_TO_DATE:
            self._fire("update_failed")
            self.show("FIRMWARE UP TO DATE", self.firmware)
            return self._result(op, True, rc=rc, message="no update available", detail={"firmware": self.firmware})
        message = session.error or ""
        if not installed:
            self._fire("update_failed")  # back where it was, on the old firmware
            self.show("FIRMWARE UPDATE FAILED", message[:32], f"RUNNING {self.firmware}")
            return self._result(op, False, rc=rc if session.error_check == "refused" else None, message=message,
                                detail={"firmware": self.firmware})
        self.keys = None
        self.journal.set_signed_out()
        self._fire("boot_signed_out")
        if not session.ok:
            self.show("FIRMWARE ROLLED BACK", f"{session.target} FAILED TO BOOT", f"RUNNING {old}")
            return self._result(op, False, message=message, detail={"firmware": self.firmware})
        self.show("FIRMWARE UPDATED", f"{old} -> {session.target}", "PLEASE SIGN IN")
        return self._result(op, True, message=f"updated {old} -> {session.target}",
                            detail={"firmware": session.target})

    async def _drive_firmware_download(self, session: Any) -> str | None:
        """Send the session's requests until it has nothing more to ask (verified, up to date or failed);
        returns field 39 of the last reply."""
        rc = None
        shown = 0
        request = session.start()
        while request is not None:
            message = request.to_message(tid=self.tid, mid=self.mid, stan=self.journal.next_stan(),
                                         batch=self.journal.batch)
            try:
                reply = (await self._exchange(message)).message
            except ExchangeError as exc:
                session.link_lost(str(exc))  # what was verified is kept: the next update resumes there
                break
            rc = reply.response_code
            request = session.receive(reply)
            self._journal_firmware_events(session)
            if session.offset > shown and session.target:
                shown = session.offset
                self.show("FIRMWARE UPDATE", f"{session.target} {session.progress}%")
        self._journal_firmware_events(session)
        return rc

    def _journal_firmware_events(self, session: Any) -> None:
        """The session's new events as journal events `firmware.<name>` (image facts only, never keys)."""
        for name, detail in session.new_events():
            self.journal.event(f"firmware.{name}", detail)

    async def resume(self) -> list[OpResult]:
        """Finish work a crash or power loss interrupted: reversals, settlement, sign-off."""
        results: list[OpResult] = []
        if self.state != "ready":
            return results
        blocked = await self._before_online()
        if blocked:
            results.append(self._result("resume", False, message=blocked))
            return results
        for intent in self.journal.open_intents():
            if self.state != "ready":
                break
            if intent.kind == "settlement":
                results.append(await self._settle_batch(intent.batch))
            elif intent.kind == "sign_off":
                results.append(await self.sign_off())
        return results

    # ------------------------------------------------------------------------------------------
    # diagnostics
    # ------------------------------------------------------------------------------------------
    async def diagnostics(self) -> OpResult:
        """Network diagnostic mode (hold Confirm 3 s): link state, host reachability, round trip."""
        op = "diagnostics"
        signed_in = self.state == "ready"
        if self.state not in ("ready", "signed_out"):
            return self._result(op, False, message=f"cannot enter diagnostics while {self.state}")
        self._fire("enter_diagnostics")
        stan = self.journal.next_stan()
        request = catalogue.network("echo", stan=stan, **self._base_fields())
        reachable, rtt, error = False, None, ""
        try:
            reply = await self._exchange(request)
            reachable, rtt = True, reply.round_trip
        except ExchangeError as exc:
            error = str(exc)
        link = "UP" if self.channel.connected else "DOWN"
        self.show("NETWORK DIAGNOSTICS", f"LINK {link}", f"HOST {'REACHABLE' if reachable else 'UNREACHABLE'}",
                  f"RTT {rtt * 1000:.0f} MS" if rtt is not None else "RTT --")
        self._fire("leave_diagnostics_signed_in" if signed_in else "leave_diagnostics")
        return self._result(op, reachable, stan=stan, message=error or "host reachable",
                            detail={"link": link.lower(), "host_reachable": reachable,
                                    "rtt_ms": round(rtt * 1000, 1) if rtt is not None else None})

    def status(self) -> dict[str, Any]:
        battery = self.hw.battery.status()
        return {
            "tid": self.tid, "mid": self.mid, "state": self.state, "firmware": self.firmware,
            "batch": self.journal.batch, "stan": self.journal.stan, "battery": round(battery.level, 1),
            "charging": battery.charging, "paper": self.hw.printer.status(), "link": self.channel.connected,
            "idle_s": round(self.idle_for(), 1), **self.journal.summary(),
        }


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _resolve_card(card: Card | str | None) -> Card:
    if card is None:
        return named_card("approved")
    if isinstance(card, str):
        return named_card(card)
    return card


def _amount(fen: int) -> str:
    """Fen as the yuan a merchant keys in (3000 -> '30.00'): messages must not make them divide by 100."""
    return f"{fen // 100}.{fen % 100:02d}"


def _yuan(fen: int | None) -> str:
    return "" if fen is None else f"RMB {fen // 100}.{fen % 100:02d}"


def _why(exc: Exception) -> str:
    if isinstance(exc, NoReply):
        return "NO RESPONSE"
    if isinstance(exc, Offline):
        return "OFFLINE"
    return "BAD REPLY"


def _fields_json(message: Message) -> dict[str, str]:
    return {str(n): (v.hex().upper() if isinstance(v, bytes) else v) for n, v in message.fields.items()}


__all__ = ["PowerLost", "Terminal"]
