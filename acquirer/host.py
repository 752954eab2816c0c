"""The reference acquirer host: the cup-pos protocol core and its asyncio server.

`AcquirerHost.handle(frame)` is sans-I/O: a request frame in, a reply frame (or None: drop) out, the
ledger updated; `AcquirerHost.respond(message, header)` is the same one level up (decoded request in,
reply message and header processing requirement out). `HostServer` serves it on any link URL (TCP
now, serial through the same seam).

Decisions where cup-pos.md leaves room (docs/host.md has the same list; all are pinned by tests):
- Firmware below the minimum at sign-in: response code 58 (not permitted on this terminal) with the
  header processing requirement 6 (download firmware).
- Parameter download (0800, 60.3 = 360) identifies the terminal by TID alone, so a terminal with a
  stale merchant id can recover: the reply carries 42 = current merchant id and 62 = ASCII
  `MID=...;NAME=...;TYPE=T1` (the merchant's new name is NAME).
- A settlement (0500) without field 49 comes from firmware with the 2.1.5 settlement defect: it is
  answered (header requirement 6), but the batch's funds stay pending with that reason until a
  complete re-settlement of the same batch.
- A terminal presenting another merchant id: 03 with requirement 1 (download parameters) on sign-in,
  sign-off, financial requests, settlement and batch upload. A wrong batch: 77 with requirement 3.
- A disabled terminal is answered like an unknown one: 97.
- Maintenance: every request is answered 96 with 44 = `MAINTENANCE UNTIL HHMM` (local end time); the
  reply is MAC'd when the request's MAC verified, so the terminal can clear its reversal. Mode
  `refuse` closes connections at once instead.
- Financial refusals before any decision (03, 77, 94) carry 37: a duplicate the original's RRN, the
  others a fresh one. Nothing is recorded or charged for them.
- Card checks before the test-card table: a PAN failing Luhn (or not 12-19 digits) is 14; field 14
  before the host's month is 54; an amount of zero is 13.
- A void must name a sale of the current batch (else 12: refund it instead). A refund's 37, when
  present, must be the original's RRN and its 61.3, when present (not 0000), the original reply's
  date (13); otherwise 25.
- Balance inquiries are recorded (kind `balance`), so a repeated STAN is 94; they never count in
  totals or funds.
- Only the just-settled batch's 0500 is replayed; a 0500 for any other batch is 77. A foreign half
  that is not zero makes the settlement unbalanced (every card is domestic here).
- Unbalanced batches keep their funds pending ("awaiting batch upload") until 0320 / 202 reconciles
  them; a batch-upload record sent twice (same STAN) counts once.
- A reversal of the void of a sale held by a risk rule puts the sale's funds back to frozen.
- A request that does not decode is answered 30 when its MTI, 11 and 41 can be read, else the
  connection is dropped; a response MTI sent to the host is dropped; an internal failure is 96.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

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
from protocol.framing import Frame, Header, Tpdu
from protocol.message import Message, mask_pan
from protocol.security import WorkingKeys

from . import funds, risk
from .config import HostConfig
from .ledger import Ledger
from .testcards import card_by_pan, magic_amount_code

log = logging.getLogger("possim.host")


class _LocalSecond(NamedTuple):
    """What the host reads off its clock, for one whole second: reply fields 12 (hhmmss) and 13 (MMDD),
    the month an expiry is compared with (YYMM) and the local midnight a daily count starts at."""

    second: int
    f12: str
    f13: str
    yymm: str
    day_start: float

    @classmethod
    def at(cls, now: float) -> _LocalSecond:
        local = datetime.fromtimestamp(now)
        return cls(int(now), local.strftime("%H%M%S"), local.strftime("%m%d"), local.strftime("%y%m"),
                   risk.start_of_day(now))


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
        # Facts about terminals read from the ledger once instead of per request: the session's batch
        # and (day start, approved sales since). Exact while this connection is the only writer of
        # sessions and transactions: every write here that changes them updates or drops them, a failed
        # transaction drops its terminal's, and a commit by any other connection (PRAGMA data_version:
        # `possim host admin`, a second host) drops them all before they are used again.
        self._batches: dict[str, str] = {}
        self._sales_today: dict[str, tuple[float, int]] = {}
        self._facts_version = -1
        self._second = _LocalSecond.at(self.clock())
        self._handlers: dict[str, str] = {}  # catalogue transaction name -> handler method name
        self._reply_tpdus: dict[Tpdu, Tpdu] = {}  # request TPDU -> its swap (terminals reuse theirs)
        self.refresh_policy()
        from firmware_sim.repository import FirmwareRepository

        self.firmware = FirmwareRepository(config.firmware_latest)

    def refresh_policy(self) -> None:
        """Apply admin changes made by another process (`possim host admin`) since the last look."""
        version = self.ledger.data_version()
        if version != self._policy_version:
            from .admin import apply_policies  # here: most requests find nothing changed

            self._policy_version = version
            apply_policies(self.config, self.ledger.policies())
        self._check_facts(version)

    def _check_facts(self, version: int) -> None:
        """Drop every cached terminal fact when another connection committed since they were read."""
        if version != self._facts_version:
            self._facts_version = version
            self._batches.clear()
            self._sales_today.clear()

    def _forget(self, tid: str) -> None:
        self._batches.pop(tid, None)
        self._sales_today.pop(tid, None)

    @contextlib.contextmanager
    def _tx(self, tid: str, *, session: bool = False) -> Iterator[Any]:
        """The ledger transaction of one terminal's request, keeping the cached facts honest: checked
        against other connections' commits inside it (the snapshot the request decides on), dropped
        for this terminal when it fails (what was counted inside never happened) and, with `session`
        (the request writes the session row), dropped afterwards either way."""
        try:
            with self.ledger.tx() as db:
                self._check_facts(self.ledger.data_version())
                yield db
        except BaseException:
            self._forget(tid)
            raise
        finally:
            if session:
                self._forget(tid)

    # ------------------------------------------------------------------------------------------
    def maintenance_mode(self) -> str | None:
        now = self.clock()
        for window in self.config.maintenance:
            if window.active(now):
                return window.mode
        return None

    def handle(self, frame: Frame) -> Frame | None:
        """One request frame in; its reply frame out, or None: drop the connection (nothing to answer)."""
        started = time.perf_counter()
        header = frame.header or Header()
        try:
            self.refresh_policy()
        except Exception as exc:  # the ledger failing: keep the policy we have and serve on
            log.error(_line(event="policy_unreadable", error=f"{type(exc).__name__}: {exc}"))
        try:
            request = self.dialect.decode(frame.payload)
        except ProtocolError as exc:
            return self._format_error(frame, header, exc, started)
        answered = self._respond(request, header, started, frame.payload)
        if answered is None:
            return None
        reply, requirement, payload = answered
        if payload is None:
            try:
                payload = self.dialect.encode(reply)
            except ProtocolError as exc:
                log.error(_line(event="reply_unencodable", tid=request.get(41), mti=reply.mti, error=str(exc)))
                return None
        # headers are immutable: the request's serves the reply when the requirement is the same
        reply_header = header if requirement == header.requirement else Header(
            header.app_type, header.version, header.status, requirement, header.sub_version)
        return Frame(self._reply_tpdu(frame.tpdu), reply_header, payload)

    def _reply_tpdu(self, tpdu: Tpdu | None) -> Tpdu | None:
        """The reply's TPDU (addresses swapped), made once per distinct request TPDU (a bounded few)."""
        if tpdu is None:
            return None
        swapped = self._reply_tpdus.get(tpdu)
        if swapped is None:
            if len(self._reply_tpdus) >= 4096:
                self._reply_tpdus.clear()
            swapped = self._reply_tpdus[tpdu] = tpdu.swapped()
        return swapped

    def respond(self, request: Message, header: Header | None = None, *,
                started: float | None = None) -> tuple[Message, int] | None:
        """The message-level core: a decoded request (and the header it came with) in; the reply and the
        header processing requirement to set out, or None when the request must not be answered (a
        response MTI). Never raises: a request it cannot handle is 30, a failure of its own 96."""
        answered = self._respond(request, header or Header(), time.perf_counter() if started is None else started)
        return None if answered is None else answered[:2]

    def _respond(self, request: Message, header: Header, started: float,
                 encoded: bytes | None = None) -> tuple[Message, int, bytes | None] | None:
        """`respond`, also given the bytes the request came in (its MAC is checked over them) and
        returning the reply's encoding when signing it produced one, so nothing is encoded twice."""
        if request.is_response:
            log.warning(_line(event="dropped", tid=request.get(41), mti=request.mti, stan=request.get(11),
                              error=f"MTI {request.mti} is a response, not a request"))
            return None
        payload = None
        try:
            reply, requirement, payload = self._dispatch(request, header, encoded)
        except ProtocolError as exc:
            log.warning(_line(event="format_error", tid=request.get(41), mti=request.mti, stan=request.get(11),
                              error=str(exc)))
            reply, requirement = catalogue.reply(request, codes.FORMAT_ERROR), 0
        except Exception as exc:  # a defect or the ledger failing: answer 96, keep serving, say what happened
            log.exception(_line(event="internal_error", tid=request.get(41), mti=request.mti,
                                stan=request.get(11), error=f"{type(exc).__name__}: {exc}"))
            reply, requirement = catalogue.reply(request, codes.SYSTEM_MALFUNCTION), 0
        self.handled += 1
        if log.isEnabledFor(logging.INFO):
            log.info(_line(tid=request.get(41), mti=request.mti, stan=request.get(11), rc=reply.response_code,
                           pan=mask_pan(str(request[2])) if isinstance(request.get(2), str) else None,
                           latency_ms=round((time.perf_counter() - started) * 1000, 3)))
        return reply, requirement, payload

    def _format_error(self, frame: Frame, header: Header, error: ProtocolError, started: float) -> Frame | None:
        """Answer 30 to a request that does not decode, when enough of it does to address a reply.

        Only to a terminal this host knows, and with its registered MID: in a misframed request (a
        flipped bitmap bit) "field 41" may be reading the PAN, track 2 or PIN block, and echoing or
        logging those bytes would put card data on the wire and in the log."""
        partial = self.dialect.decode_partial(frame.payload)
        entry = None
        if partial is not None and not partial.is_response and isinstance(partial.get(11), str):
            entry = self.config.terminals.get(partial.get(41))
        if partial is None or entry is None:
            log.warning(_line(event="malformed", mti=partial.mti if partial else None, error=str(error),
                              action="drop"))
            return None
        reply = Message(partial.response_mti, {11: partial[11], 41: entry.tid, 42: entry.mid})
        reply[39] = codes.FORMAT_ERROR
        try:
            payload = self.dialect.encode(reply)
        except ProtocolError:
            log.warning(_line(event="malformed", mti=partial.mti, error=str(error), action="drop"))
            return None
        self.handled += 1
        log.warning(_line(event="malformed", tid=partial.get(41), mti=partial.mti, stan=partial.get(11),
                          rc=codes.FORMAT_ERROR, error=str(error),
                          latency_ms=round((time.perf_counter() - started) * 1000, 3)))
        return Frame(frame.tpdu.swapped() if frame.tpdu else None, header, payload)

    def _dispatch(self, request: Message, header: Header,
                  encoded: bytes | None = None) -> tuple[Message, int, bytes | None]:
        txn = catalogue.identify(request)
        if txn is None:
            log.warning(_line(event="unknown_request", tid=request.get(41), mti=request.mti,
                              stan=request.get(11), f60=request.get(60)))
            return catalogue.reply(request, codes.FORMAT_ERROR), 0, None
        missing = catalogue.missing_fields(request, txn)
        if missing:
            raise ProtocolError(f"{txn.name} lacks fields {missing}")
        tid = str(request[41])
        entry = self.config.terminals.get(tid)
        known = entry is not None and entry.status == "active"
        verified = False
        if txn.mac and known:
            keys = self._keys_for(tid)
            verified = keys is not None and security.verify(self.dialect, request, keys.mac_key, encoded=encoded)
        if self.maintenance_mode() is not None:
            reply, requirement = self._maintenance_reply(request), 0
        elif not known:
            reply, requirement = catalogue.reply(request, codes.NOT_REGISTERED), 0
        elif txn.mac and not verified:
            return catalogue.reply(request, codes.MAC_FAILED), 0, None
        else:
            reply, requirement = self._handler(txn.name)(request, entry, header)
        if verified and reply.mti in catalogue.MAC_MTIS:
            keys = self._keys_for(tid)
            if keys is not None:
                return reply, requirement, security.sign(self.dialect, reply, keys.mac_key)
        return reply, requirement, None

    def _handler(self, name: str) -> Callable[[Message, Any, Header], tuple[Message, int]]:
        """The `_on_...` method for a catalogue transaction (sign_in_003 -> _on_sign_in). The method's
        name is worked out once; the method itself is looked up each time (it may be replaced)."""
        method = self._handlers.get(name)
        if method is None:
            method = self._handlers[name] = f"_on_{name.removesuffix('_003').removesuffix('_001')}"
        return getattr(self, method)  # type: ignore[no-any-return]

    def _maintenance_reply(self, request: Message) -> Message:
        """96, with field 44 saying until when (HHMM local time) so the terminal can say when to retry."""
        now = self.clock()
        ends = [e for w in self.config.maintenance if (e := w.ends_at(now)) is not None]
        text = "MAINTENANCE"
        if ends:
            text += " UNTIL " + datetime.fromtimestamp(max(ends)).strftime("%H%M")
        fields: dict[str, str] = {"f44": text}
        if request.mti in ("0200", "0220"):
            fields.update(self._now_fields())
        return catalogue.reply(request, codes.SYSTEM_MALFUNCTION, **fields)

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
        """The terminal's current batch as the ledger has it (cached: see `__init__`)."""
        batch = self._batches.get(tid)
        if batch is None:
            session = self.ledger.session(tid)
            batch = self._batches[tid] = session["batch"] if session else "000001"
        return batch

    def _local(self) -> _LocalSecond:
        """The clock read as local time, formatted once per second instead of once per use."""
        now = self.clock()
        if int(now) != self._second.second:
            self._second = _LocalSecond.at(now)
        return self._second

    def _now_fields(self) -> dict[str, str]:
        local = self._local()
        return {"f12": local.f12, "f13": local.f13}

    def _sales_so_far(self, tid: str) -> int:
        """The terminal's approved sales today before this one: counted in the ledger at the first sale
        of a (local) day, then kept by `_approve` (cached: see `__init__`)."""
        since = self._local().day_start
        cached = self._sales_today.get(tid)
        if cached is None or cached[0] != since:
            cached = self._sales_today[tid] = (since, self.ledger.daily_count(tid, since))
        return cached[1]

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
        with self._tx(tid, session=True):
            batch = self.ledger.sign_in_session(tid, entry.mid, wrapped_keys=wrapped, key_mode=mode,
                                                firmware=firmware, at=self.clock(), device_info=_device_text(device))
            self.ledger.event("sign_in", {"tid": tid, "batch": batch, "firmware": firmware})
        self._keys[tid] = keys
        reply = catalogue.reply(request, codes.APPROVED, f62=wrapped, f60=Field60("00", batch, mode).encode(),
                                **self._now_fields())
        return reply, 0

    def _on_sign_off(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        tid = entry.tid
        with self._tx(tid, session=True) as db:
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
        with self._tx(entry.tid, session=True) as db:
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

    def _refusal(self, db: Any, request: Message, entry: Any, rc: str) -> tuple[Message, int]:
        """03 / 77 / 94 before anything is decided: nothing recorded, nothing charged.

        Financial replies carry 37: a duplicate gets the RRN of the transaction it duplicates (when the
        host has one), other refusals a fresh one (taken in the request's transaction `db`); balance
        replies carry none.
        """
        fields = self._now_fields()
        if request.mti != "0200" or request.get(3) != "310000":
            rrn = None
            if rc == codes.DUPLICATE:
                seen = self.ledger.txn(entry.tid, Field60.parse(str(request[60])).batch, str(request[11]))
                rrn = seen["rrn"] if seen is not None else None
            fields["f37"] = rrn or self.ledger.take_rrn(db)
        return catalogue.reply(request, rc, **fields), _requirement_for(rc)

    def _pan(self, request: Message) -> str:
        pan = request.get(2)
        if isinstance(pan, str):
            return pan
        track = request.get(35)
        return str(track).split("D")[0].split("=")[0] if isinstance(track, str) else ""

    def _card_decision(self, request: Message, pan: str, amount: int | None) -> str:
        """The issuer's answer, in order: card number, test card, magic amount, expiry, balance, PIN."""
        if not _luhn_ok(pan):
            return "14"
        card = card_by_pan(pan)
        if card is not None and card.response_code != codes.APPROVED:
            return card.response_code
        magic = magic_amount_code(amount) if amount is not None else None
        if magic is not None:
            return magic
        if self._expired(request):
            return "54"
        if card is not None and amount is not None and amount > card.balance_fen:
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

    def _expired(self, request: Message) -> bool:
        """Field 14 (YYMM) before the host's current month."""
        expiry = request.get(14)
        if not (isinstance(expiry, str) and len(expiry) == 4 and expiry.isdigit()):
            return False
        return expiry < self._local().yymm

    def _record(self, db: Any, request: Message, entry: Any, **values: Any) -> int:
        return self.ledger.insert_txn(db, tid=entry.tid, mid=entry.mid, batch=Field60.parse(str(request[60])).batch,
                                      stan=str(request[11]), mti=request.mti, proc_code=request.get(3), **values)

    def _decline(self, db: Any, request: Message, entry: Any, kind: str, rc: str, amount: int,
                 pan: str) -> Message:
        """Record a decline (so a retry with the same STAN is a duplicate) and build its reply, in the
        request's transaction `db`."""
        rrn = self.ledger.take_rrn(db)
        now = self._now_fields()
        self._record(db, request, entry, kind=kind, amount_fen=amount, pan=pan, rc=rc, rrn=rrn,
                     status="declined", host_date=now["f13"], host_time=now["f12"])
        return catalogue.reply(request, rc, f37=rrn, **now)

    def _approve(self, db: Any, request: Message, entry: Any, kind: str, amount: int, pan: str,
                 original_id: int | None = None) -> Message:
        """Record an approval (RRN, auth code, risk hold, funds row, the original's new state) in the
        request's transaction `db` and build its reply."""
        rrn = self.ledger.take_rrn(db)
        auth = f"{(int(rrn) * 7919) % 1_000_000:06d}"
        now = self._now_fields()
        hold = risk.assess(self.config.risk, kind=kind, amount_fen=amount,
                           sales_today=lambda: self._sales_so_far(entry.tid))
        created = self.ledger.clock()
        txn_id = self._record(db, request, entry, kind=kind, amount_fen=amount, pan=pan, rrn=rrn, auth_code=auth,
                              rc="00", status="approved", original_id=original_id, host_date=now["f13"],
                              host_time=now["f12"], risk_reason=hold.reason if hold else None, created_at=created)
        counted = self._sales_today.get(entry.tid)
        if kind == "sale" and counted is not None and created >= counted[0]:
            # what daily_count would now say; `_tx` drops it should this transaction not commit
            self._sales_today[entry.tid] = (counted[0], counted[1] + 1)
        if kind in ("sale", "refund"):
            funds.open_row(db, txn_id=txn_id, mid=entry.mid, kind=kind, rule=hold.rule if hold else None,
                           reason=hold.reason if hold else None)
        if hold is not None:
            self.ledger.event("risk.hold", {"tid": entry.tid, "stan": str(request[11]), "rule": hold.rule})
        if kind == "void" and original_id is not None:
            db.execute("UPDATE txn SET status = 'voided', updated_at = ? WHERE id = ?", (self.clock(), original_id))
            funds.fail(db, original_id, "voided")
        if kind == "refund" and original_id is not None:
            db.execute("UPDATE txn SET refunded_fen = refunded_fen + ?, updated_at = ? WHERE id = ?",
                       (amount, self.clock(), original_id))
        return catalogue.reply(request, codes.APPROVED, f37=rrn, f38=auth, **now)

    def _amount(self, request: Message) -> int:
        return int(str(request[4]))

    def _on_sale(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """0200 / 000000: checks, the card's answer, recorded - one ledger transaction, committed
        before the reply exists (the checks read inside it, so nothing can slip in between)."""
        pan, amount = self._pan(request), self._amount(request)
        with self._tx(entry.tid) as db:
            refused = self._financial_checks(request, entry)
            if refused is not None:
                return self._refusal(db, request, entry, refused)
            rc = "13" if amount <= 0 else self._card_decision(request, pan, amount)
            if rc != codes.APPROVED:
                return self._decline(db, request, entry, "sale", rc, amount, pan), 0
            return self._approve(db, request, entry, "sale", amount, pan), 0

    def _on_balance(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """Balance inquiry: recorded (a repeated STAN is a duplicate) but never charged or settled."""
        with self._tx(entry.tid) as db:
            refused = self._financial_checks(request, entry)
            if refused is not None:
                return self._refusal(db, request, entry, refused)
            pan = self._pan(request)
            card = card_by_pan(pan)
            rc = self._card_decision(request, pan, None)
            now = self._now_fields()
            self._record(db, request, entry, kind="balance", amount_fen=0, pan=pan, rc=rc,
                         status="approved" if rc == codes.APPROVED else "declined", host_date=now["f13"],
                         host_time=now["f12"])
        if rc != codes.APPROVED:
            return catalogue.reply(request, rc, **now), 0
        balance = card.balance_fen if card else 0
        return catalogue.reply(request, codes.APPROVED, f54=encode_balance(balance), **now), 0

    def _original(self, entry: Any, request: Message) -> Any:
        original = Field61.parse(str(request[61]))
        return self.ledger.txn(entry.tid, original.batch, original.stan)

    def _on_void(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        def refusal(original: Any, amount: int) -> str | None:
            if original["batch"] != Field60.parse(str(request[60])).batch:
                return "12"  # a sale of a settled batch is no longer voidable: refund it instead
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
            if 37 in request and str(request[37]) != original["rrn"]:
                return codes.ORIGINAL_NOT_FOUND
            date = Field61.parse(str(request[61])).date
            if date and date != "0000" and original["host_date"] and date != original["host_date"]:
                return codes.ORIGINAL_NOT_FOUND  # 61.3 is the date (13) of the original's reply
            if original["status"] == "voided":
                return "12"
            if amount > original["amount_fen"] - original["refunded_fen"]:
                return "61"  # partial refunds up to the original amount less earlier refunds
            return None

        return self._on_referenced(request, entry, "refund", refusal)

    def _on_referenced(self, request: Message, entry: Any, kind: str,
                       refusal: Callable[[Any, int], str | None]) -> tuple[Message, int]:
        """Void and refund: checks, then the original sale (61), then the kind's own rules - all in one
        ledger transaction, so the original cannot change between the look and the write."""
        with self._tx(entry.tid) as db:
            refused = self._financial_checks(request, entry)
            if refused is not None:
                return self._refusal(db, request, entry, refused)
            amount, pan = self._amount(request), self._pan(request)
            original = self._original(entry, request)
            if amount <= 0:
                rc: str | None = "13"
            elif original is None or original["kind"] != "sale" or original["status"] in ("declined", "reversed"):
                rc = codes.ORIGINAL_NOT_FOUND
            else:
                rc = refusal(original, amount)
            if rc is not None:
                return self._decline(db, request, entry, kind, rc, amount, pan), 0
            return self._approve(db, request, entry, kind, amount, pan, original_id=original["id"]), 0

    def _on_reversal(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """0400: find the original by 60.2 + 11 and undo it, once; unknown originals: 00, nothing charged."""
        if any(n in request for n in (35, 36, 52)):
            return catalogue.reply(request, codes.FORMAT_ERROR), 0
        tid, stan = entry.tid, str(request[11])
        batch = Field60.parse(str(request[60])).batch
        amount = self._amount(request)
        reason = request.get(39)
        merchant = self.config.merchants[entry.mid]
        with self._tx(tid) as db:
            original = self.ledger.txn(tid, batch, stan)
            if original is None:
                db.execute("INSERT OR IGNORE INTO reversed_unknown (tid, batch, stan, at) VALUES (?, ?, ?, ?)",
                           (tid, batch, stan, self.clock()))
                times = self.ledger.record_reversal(db, tid=tid, batch=batch, stan=stan, reason=reason,
                                                    amount_fen=amount, outcome="unknown", txn_id=None)
                self.ledger.event("reversal.unknown", {"tid": tid, "stan": stan, "received": times})
                return catalogue.reply(request, codes.APPROVED), 0
            if original["status"] == "voided":
                return catalogue.reply(request, "12"), 0
            if original["amount_fen"] != amount:
                return catalogue.reply(request, "64"), 0
            outcome = "reversed" if original["status"] == "approved" else f"nothing to reverse ({original['status']})"
            times = self.ledger.record_reversal(db, tid=tid, batch=batch, stan=stan, reason=reason,
                                                amount_fen=amount, outcome=outcome, txn_id=original["id"])
            if original["status"] == "approved":
                now = self.clock()
                db.execute("UPDATE txn SET status = 'reversed', updated_at = ? WHERE id = ?", (now, original["id"]))
                funds.fail(db, original["id"], "reversed")
                if original["original_id"] is not None and original["kind"] == "void":
                    db.execute("UPDATE txn SET status = 'approved', updated_at = ? WHERE id = ?",
                               (now, original["original_id"]))
                    funds.reopen(db, original["original_id"], settlement_type=merchant.settlement_type, now=now,
                                 calendar=funds.Calendar.of(self.config))
                if original["original_id"] is not None and original["kind"] == "refund":
                    db.execute("UPDATE txn SET refunded_fen = refunded_fen - ?, updated_at = ? WHERE id = ?",
                               (original["amount_fen"], now, original["original_id"]))
                settled = self.ledger.settlement(tid, batch)
                self.ledger.event("reversal", {"tid": tid, "stan": stan, "reason": reason,
                                               "after_settlement": settled is not None})
            else:
                self.ledger.event("reversal.repeated", {"tid": tid, "stan": stan, "received": times})
        return catalogue.reply(request, codes.APPROVED), 0

    # ------------------------------------------------------------------------------------------
    # settlement and batch upload
    # ------------------------------------------------------------------------------------------
    def _on_settlement(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """0500: compare the terminal's totals with the ledger's; the host moves to the next batch.

        A repeated 0500 for the just-settled batch is answered again without side effects (except that
        a complete one releases funds a defective one left pending); any other batch is 77.
        """
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        terminal_totals = SettlementTotals.parse(str(request[48]))
        defect = None if 49 in request else f"settlement from firmware {header.firmware} lacks currency data"
        current = self._batch(tid)
        previous = self.ledger.settlement(tid, batch)
        if previous is not None and batch == _previous_batch(current):
            if previous["defect"] and defect is None:
                self._release_defective(entry, batch)
            return catalogue.reply(request, codes.APPROVED, f48=previous["reply_48"], **self._now_fields()), 0
        if batch != current or previous is not None:
            return catalogue.reply(request, codes.BATCH_MISMATCH, **self._now_fields()), 3
        host = Totals(*self.ledger.totals(tid, batch))
        # every card is domestic in this dialect: the host's foreign totals are zero
        balanced = host.same_amounts(terminal_totals.domestic) and Totals().same_amounts(terminal_totals.foreign)
        reply_48 = terminal_totals.with_reconciliation(1 if balanced else 2).encode()
        merchant = self.config.merchants[entry.mid]
        now = self.clock()
        with self._tx(tid, session=True) as db:  # the session moves to the next batch
            db.execute("INSERT INTO settlement (tid, batch, terminal_totals, host_totals, result, reply_48, defect, "
                       "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (tid, batch, terminal_totals.encode(), SettlementTotals(host).encode(),
                        "balanced" if balanced else "unbalanced", reply_48, defect, now))
            db.execute("UPDATE session SET batch = ? WHERE tid = ?", (_next_batch(batch), tid))
            funds.settle_batch(db, tid=tid, batch=batch, settlement_type=merchant.settlement_type, now=now,
                               calendar=funds.Calendar.of(self.config))
            self.ledger.event("settlement", {"tid": tid, "batch": batch, "balanced": balanced,
                                             "defect": defect is not None})
        reply = catalogue.reply(request, codes.APPROVED, f48=reply_48, **self._now_fields())
        return reply, 6 if defect else 0  # a defective settlement asks the terminal to download firmware

    def _release_defective(self, entry: Any, batch: str) -> None:
        merchant = self.config.merchants[entry.mid]
        now = self.clock()
        with self.ledger.tx() as db:
            db.execute("UPDATE settlement SET defect = NULL WHERE tid = ? AND batch = ?", (entry.tid, batch))
            funds.settle_batch(db, tid=entry.tid, batch=batch, settlement_type=merchant.settlement_type, now=now,
                               calendar=funds.Calendar.of(self.config))
            self.ledger.event("settlement.resettled", {"tid": entry.tid, "batch": batch})

    def _on_batch_upload(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """0320 / 201: up to 8 records; a record sent again (same STAN) replaces the first."""
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        if not self._upload_batch_ok(tid, batch):
            return catalogue.reply(request, codes.BATCH_MISMATCH), 3
        records = parse_batch_records(str(request[48]))
        with self.ledger.tx() as db:
            for record in records:
                self.ledger.add_upload(db, tid=tid, batch=batch, stan=record.stan, amount_fen=record.amount,
                                       organisation=record.organisation, pan=record.pan)
            uploaded = [{"stan": u["stan"], "amount": u["amount_fen"], "pan_hash": u["pan_hash"],
                         "pan": u["pan_masked"]} for u in db.execute(
                "SELECT * FROM batch_upload WHERE tid = ? AND batch = ? ORDER BY stan", (tid, batch))]
            db.execute("UPDATE settlement SET uploaded = ? WHERE tid = ? AND batch = ?",
                       (json.dumps(uploaded), tid, batch))
        return catalogue.reply(request, codes.APPROVED), 0

    def _on_batch_upload_end(self, request: Message, entry: Any, header: Header) -> tuple[Message, int]:
        """0320 / 202: reconcile the uploaded records with the ledger; the batch's funds can now move."""
        if not self._merchant_ok(request, entry):
            return catalogue.reply(request, codes.INVALID_MERCHANT, f44="UPDATE PARAMETERS"), 1
        tid = entry.tid
        batch = Field60.parse(str(request[60])).batch
        if not self._upload_batch_ok(tid, batch):
            return catalogue.reply(request, codes.BATCH_MISMATCH), 3
        declared_text = str(request[48])
        declared = int(declared_text) if declared_text.isdigit() else None
        uploads = {u["stan"]: u for u in self.ledger.uploads(tid, batch)}
        ours = {r["stan"]: r for r in self.ledger.batch_txns(tid, batch)}

        def same(txn: Any, upload: Any) -> bool:
            if txn["amount_fen"] != upload["amount_fen"]:
                return False
            return txn["pan_hash"] is None or upload["pan_hash"] is None or txn["pan_hash"] == upload["pan_hash"]

        differences = []
        for stan, txn in ours.items():
            upload = uploads.get(stan)
            if upload is None or not same(txn, upload):
                differences.append({"side": "host only", "stan": stan, "amount": txn["amount_fen"]})
        for stan, upload in uploads.items():
            txn = ours.get(stan)
            if txn is None or not same(txn, upload):
                differences.append({"side": "terminal only", "stan": stan, "amount": upload["amount_fen"]})
        merchant = self.config.merchants[entry.mid]
        now = self.clock()
        with self.ledger.tx() as db:
            settled = db.execute("UPDATE settlement SET differences = ?, result = 'reconciled', declared_records = ? "
                                 "WHERE tid = ? AND batch = ?",
                                 (json.dumps(differences), declared, tid, batch)).rowcount
            if settled:
                funds.settle_batch(db, tid=tid, batch=batch, settlement_type=merchant.settlement_type, now=now,
                                   calendar=funds.Calendar.of(self.config))
            self.ledger.event("batch_upload", {"tid": tid, "batch": batch, "records": len(uploads),
                                               "declared": declared, "differences": len(differences),
                                               "before_settlement": not settled})
        return catalogue.reply(request, codes.APPROVED), 0

    def _upload_batch_ok(self, tid: str, batch: str) -> bool:
        current = self._batch(tid)
        return batch in (current, _previous_batch(current))


def _next_batch(batch: str) -> str:
    return f"{int(batch) % 999_999 + 1:06d}"


def _previous_batch(batch: str) -> str:
    return f"{(int(batch) - 2) % 999_999 + 1:06d}"


def _luhn_ok(pan: str) -> bool:
    """A card number: 12 to 19 digits with a valid Luhn check digit."""
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        return False
    total = 0
    for position, char in enumerate(reversed(pan)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _line(**items: Any) -> str:
    """One structured log line: JSON, keys sorted as given, None values left out (never keys or PANs)."""
    return json.dumps({k: v for k, v in items.items() if v is not None}, default=str)


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
        self.ledger = Ledger(db_path, clock=clock or loop_wall_clock(), synchronous=config.durability)
        self.host = AcquirerHost(config, self.ledger, clock=clock)  # lays stored admin changes over the config
        self.ledger.sync_merchants(config.merchants.values())  # lets `possim host admin` work from the file
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

    serve = listen  # `await host.serve("tcp://127.0.0.1:0")` -> the bound URL

    @property
    def address(self) -> str | None:
        """The first bound URL (None before `listen`)."""
        return self.urls[0] if self.urls else None

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
                        log.warning(_line(event="dropped", peer=link.peer, error=str(exc)))
                    return
                if self.host.maintenance_mode() == "refuse":
                    return
                try:
                    reply = self.host.handle(frame)
                except Exception as exc:  # handle() answers 96 to its own failures; this is a last resort
                    log.exception(_line(event="dropped", peer=link.peer, error=f"{type(exc).__name__}: {exc}"))
                    return
                if reply is None:
                    log.warning(_line(event="dropped", peer=link.peer, error="no reply possible"))
                    return
                del frame  # not held while waiting for the next request: ~1 KB a connection of a fleet
                await link.send(reply)
                del reply
        except (LinkClosed, OSError):
            return  # the peer went away while we answered
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
