"""MemoryJournal against the SQLite Journal: random sequences of valid and invalid calls applied to both
(same fake clock) give the same answers or the same errors, and the same state after every step; a
MemoryJournal never hands out the clear PAN where Journal would not, and what a sale does reads no history."""

from __future__ import annotations

import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.journal import Intent, Journal, JournalError, MemoryJournal, StoredReceipt
from terminal.journal import memory as memory_module

from .test_journal import KEY, MID, PAN, PAN2, TID, Clock, approve, open_journal, pending, reversal_fields

BATCHES = ["000001", "000002", "000003", "999999"]
SLIP = f"ACME TEA\nMERCHANT {MID}\nCARD {PAN}\nOTHER {PAN2}\nAMOUNT 10.00"


class Pair:
    """The same calls on an SQLite file journal and a MemoryJournal, compared answer by answer."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "j.sqlite")
        self.file = open_journal(self.path, Clock())
        self.memory = open_journal(":memory:", Clock())
        assert isinstance(self.memory, MemoryJournal) and not isinstance(self.file, MemoryJournal)

    def _outcome(self, journal: Any, name: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
        try:
            return "ok", getattr(journal, name)(*args, **kwargs)
        except (JournalError, ValueError, TypeError, AttributeError) as exc:
            return type(exc).__name__, str(exc).replace(self.path, ":memory:")

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        got = self._outcome(self.file, name, args, kwargs)
        mine = self._outcome(self.memory, name, args, kwargs)
        assert mine == got and repr(mine) == repr(got), f"{name}{args}{kwargs}: memory {mine!r}, file {got!r}"
        return got[1] if got[0] == "ok" else None

    def check_state(self, stans: list[str], batches: set[str] = frozenset()) -> None:
        """Every query answers alike (values and reprs: 1 is not 1.0, key order counts), for the current
        batch, `batches` and the last STANs."""
        queries: list[tuple[str, tuple, dict]] = [
            ("identity", (), {}), ("summary", (), {}), ("transactions", (), {}), ("pending_reversals", (), {}),
            ("receipts", (), {"limit": 10_000}), ("pending_receipts", (), {}), ("last_receipt", (), {}),
            ("open_intents", (), {}), ("open_intent", ("settlement",), {}), ("open_intent", ("sign_off",), {}),
            ("settlements", (), {}), ("last_settlement", (), {}), ("settlement_report", (), {}),
            ("events", (), {"limit": 10_000}), ("events", ("txn.reply",), {"limit": 3}),
            ("events", (), {"prefix": "reversal.", "limit": 5}), ("events", (), {"prefix": "intent.", "limit": 1000}),
            ("events", (), {"since": 1_700_000_050.0}), ("batch", (), {}), ("stan", (), {}),
        ]
        if not self.file.closed:
            batches = {*batches, self.file.batch}
        for batch in sorted(batches) or BATCHES[:1]:
            queries += [("batch_totals", (batch,), {}), ("batch_records", (batch,), {}), ("batch_count", (batch,), {}),
                        ("unsigned", (batch,), {}),
                        ("unsigned_stans", (batch,), {}), ("settlement_report", (batch,), {}),
                        ("transactions", (batch,), {"status": "approved"}), ("receipts", (), {"batch": batch}),
                        ("settlement", (batch,), {})]
        for stan in stans[-3:]:
            queries += [("find_transaction", (stan,), {}), ("receipt_for", (stan,), {}),
                        ("receipts", (), {"stan": stan, "limit": 1})]
            queries += [("transaction", (stan, batch), {}) for batch in sorted(batches)[:2]]
        for name, args, kwargs in queries:
            if name in ("batch", "stan"):
                got = self._outcome(self.file, "__getattribute__", (name,), {})
                mine = self._outcome(self.memory, "__getattribute__", (name,), {})
                assert mine == got, name
                continue
            self.call(name, *args, **kwargs)
        file_status, memory_status = self._outcome(self.file, "status", (), {}), self._outcome(self.memory, "status",
                                                                                              (), {})
        if file_status[0] == "ok":
            assert file_status[1].pop("journal") == self.path and memory_status[1].pop("journal") == ":memory:"
        assert memory_status == file_status
        for txn in self.file.transactions() if not self.file.closed else []:
            self.call("pan_for", txn.id)

    def close(self) -> None:
        self.file.close()
        self.memory.close()


def _fields(stan: str, amount: int, variant: str) -> dict[Any, Any] | None:
    if variant == "none":
        return None
    fields: dict[Any, Any] = reversal_fields(stan, amount)
    if variant == "binary":
        fields = {**fields, 55: b"\x9f\x26\x08\x01", "64": bytearray(b"\x01\x02")}
    elif variant == "track":
        fields = {**fields, "35": PAN + "D3012"}
    elif variant == "bad_key":
        fields = {**fields, "x": "1"}
    elif variant == "out_of_range":
        fields = {**fields, 129: "1"}
    return fields


#: One argument of record_pending made invalid at a time (the rest valid): each is refused alike.
BAD_PENDING = {"kind": ["preauth", ""], "stan": ["1", 123456], "batch": ["x", None], "amount_fen": [-1, True, 1.5],
               "pan": ["abc", "62220200000000151234", 6222], "original_stan": ["7"], "original_batch": ["9"],
               "reason": ["99"], "reversal": ["track", "bad_key", "out_of_range"]}


def _pending(pair: Pair, draw: Any, state: dict[str, Any], batch: str) -> None:
    """record_pending, valid but for at most one argument; answered (or not) at once, as a terminal would."""
    stans, recorded = state["stans"], state["recorded"]
    stan = pair.call("next_stan") or "000001"
    stans.append(stan)
    sales = [k for k in recorded if k[2] == "sale"]
    kind = draw(st.sampled_from(["sale", "sale", "void", "refund", "refund"])) if sales else "sale"
    original_stan = original_batch = None
    amount = draw(st.sampled_from([1000, 250, 1, 0, 99_999]))
    if kind != "sale":
        originals = sales[-5:] if draw(st.integers(0, 5)) else recorded[-3:]  # now and then not a sale
        original_batch, original_stan, _, original_amount = draw(st.sampled_from(originals))
        amount = original_amount if kind == "void" else draw(st.sampled_from([original_amount, 1, 100]))
        original_batch = draw(st.sampled_from([original_batch, None]))
    args = dict(kind=kind, stan=stan, batch=batch, amount_fen=amount, pan=draw(st.sampled_from([PAN, PAN2])),
                expiry=draw(st.sampled_from(["3012", ""])), entry_mode=draw(st.sampled_from(["021", None])),
                original_stan=original_stan, original_batch=original_batch,
                reversal=draw(st.sampled_from(["plain", "plain", "none", "none", "binary"])),
                reason=draw(st.sampled_from(["98", "98", "A0", "06"])))
    if draw(st.integers(0, 4)) == 0:  # one argument wrong, or a STAN already used
        name = draw(st.sampled_from([*BAD_PENDING, "used"]))
        if name == "used":
            args["stan"] = draw(st.sampled_from(stans[-4:]))
        else:
            args[name] = draw(st.sampled_from(BAD_PENDING[name]))
    args["reversal"] = _fields(stan, amount, args["reversal"])
    if pair.call("record_pending", **args) is None:
        return
    recorded.append((batch, stan, kind, amount))
    answer = draw(st.sampled_from(["approved", "approved", "declined", "none", "none"]))
    if answer != "none":
        pair.call("record_reply", stan=stan, batch=batch, rc="00" if answer == "approved" else "51",
                  approved=answer == "approved", rrn=f"{len(stans):012d}", auth_code="A1B2C3")


def _step(pair: Pair, data: st.DataObject, state: dict[str, Any]) -> None:
    draw = data.draw
    stans, recorded = state["stans"], state["recorded"]
    batch = pair.file.batch if not pair.file.closed else "000001"
    if recorded and draw(st.integers(0, 5)):  # mostly a transaction of the journal, now and then none
        some_batch, some_stan = draw(st.sampled_from(recorded[-6:]))[:2]
    else:
        some_stan = draw(st.sampled_from([*stans[-2:], "000077", "12"]))
        some_batch = draw(st.sampled_from([batch, "000002", "1"]))
    live = [] if pair.file.closed else [(t.batch, t.stan) for t in pair.file.transactions()
                                         if t.status in ("pending", "reversal_pending")]
    if live and draw(st.integers(0, 2)):  # replies, refusals and reasons mostly for what still waits for one
        live_batch, live_stan = draw(st.sampled_from(live[-4:]))
    else:
        live_batch, live_stan = some_batch, some_stan
    op = draw(st.sampled_from([
        "next_stan", "pending", "pending", "pending", "pending", "reply", "refusal", "refusal", "reason", "reason",
        "reason", "reversal",
        "reversal", "signature", "signature", "receipts", "receipt", "printed", "printed_by_kind", "reprinted",
        "intent", "intent", "intent_step", "intent_step", "complete_intent", "settle", "complete_settlement",
        "advance", "advance", "set_batch", "printed", "reprinted", "printed_by_kind", "signature",
        "sign_in", "sign_out", "identity", "touch", "event", "close"]))
    if op == "next_stan":
        stans.append(pair.call("next_stan"))
    elif op == "pending":
        _pending(pair, draw, state, batch)
    elif op == "reply":
        approved = draw(st.booleans())
        pair.call("record_reply", stan=live_stan, batch=live_batch,
                  rc=draw(st.sampled_from(["00", "05"])) if approved else draw(st.sampled_from(["51", "05"])),
                  approved=approved, host_date="0315", host_time="101112")
    elif op == "refusal":
        pair.call("record_refusal", stan=live_stan, batch=live_batch, rc=draw(st.sampled_from(["A0", "30"])))
    elif op == "reason":
        pair.call("set_reversal_reason", live_stan, live_batch, draw(st.sampled_from(["98", "A0", "06", "X"])))
    elif op == "reversal":
        owed = pair.call("pending_reversals") or []
        target = (owed[0].stan, owed[0].batch) if owed and draw(st.integers(0, 3)) else (some_stan, some_batch)
        if draw(st.booleans()):
            pair.call("mark_reversal_sent", *target)
        pair.call("clear_reversal", *target,
                  draw(st.sampled_from(["00", "25", "96", "12", "64", "30", "", None, "A0", "77", "03", "ZZ"])))
    elif op == "signature":
        pair.call("set_signature", some_stan, some_batch,
                  draw(st.sampled_from(["unsigned", "pending", "signed", "uploaded", "not_required", "maybe"])),
                  image=draw(st.sampled_from([None, b"PNG"])))
    elif op == "receipts":
        slips = [("transaction", SLIP, "merchant"), ("transaction", f"CUSTOMER {PAN}", "customer")]
        if draw(st.integers(0, 5)) == 0:
            slips = draw(st.sampled_from([[], [("", "x", None)], [("transaction", None, None)]]))
        state["receipts"] += pair.call("store_receipts", slips, stan=draw(st.sampled_from([some_stan, None])),
                                       batch=draw(st.sampled_from([some_batch, some_batch, None])),
                                       printed=draw(st.sampled_from([False, False, True, True, 2])),
                                       pan=draw(st.sampled_from([None, None, PAN, "123"]))) or []
    elif op == "receipt":
        kind = draw(st.sampled_from(["settlement", "signoff", "declined"]))
        got = pair.call("store_receipt", kind, f"{kind.upper()} {PAN}", batch=draw(st.sampled_from([batch, None])),
                        stan=draw(st.sampled_from([None, some_stan])), printed=draw(st.booleans()),
                        copy=draw(st.sampled_from([None, "merchant"])))
        if got is not None:
            state["receipts"].append(got)
    elif op in ("printed", "reprinted"):
        receipts = state["receipts"]
        target = draw(st.sampled_from([*receipts[-4:], 0, 10_000, True])) if receipts else 1
        if isinstance(target, StoredReceipt) and draw(st.booleans()):
            target = target.id
        pair.call("mark_printed" if op == "printed" else "mark_reprinted", target)
    elif op == "printed_by_kind":
        receipts = state["receipts"]
        like = draw(st.sampled_from(receipts[-4:])) if receipts else None
        kind, stan, slip_batch, copy = (like.kind, like.stan, like.batch, like.copy) if like else \
            ("x", None, None, None)
        pair.call("mark_printed", draw(st.sampled_from([kind, kind, "transaction", "settlement"])),
                  stan=draw(st.sampled_from([stan, stan, None])), batch=draw(st.sampled_from([slip_batch, batch])),
                  copy=draw(st.sampled_from([copy, copy, "customer", None])))
    elif op == "intent":
        got = pair.call("begin_intent",
                        draw(st.sampled_from(["settlement", "settlement", "sign_off", "batch_upload", "lunch"])),
                        draw(st.sampled_from([batch, batch, batch, "000002", "2"])),
                        draw(st.sampled_from([None, {"stan": some_stan, "z": 1, "a": [1, {"y": 2, "b": PAN}]},
                                              {"card": PAN, 3: "x", "note": f"card {PAN2}", "raw": b"\x00\x01"},
                                              {"bad": {1, 2}}])))
        if got is not None:
            state["intents"].append(got)
    elif op in ("intent_step", "complete_intent"):
        intents = [*state["intents"][-2:], *([] if pair.file.closed else pair.file.open_intents())]
        target = draw(st.sampled_from([*intents, 99])) if intents else 1
        if isinstance(target, Intent) and draw(st.booleans()):
            target = target.id
        if op == "intent_step":
            pair.call("intent_step", target, draw(st.sampled_from(["sent", "answered", None])),
                      draw(st.sampled_from([None, {"messages": 1}, {"z": PAN, "a": None}, {"bad": object}])))
        else:
            pair.call("complete_intent", target, draw(st.sampled_from(["done", "abandoned"])))
    elif op == "settle":
        pair.call("record_settlement", draw(st.sampled_from([batch, batch, "000002", "1"])),
                  result=draw(st.sampled_from(["balanced", "balanced", "unbalanced", None])),
                  terminal_totals=draw(st.sampled_from(["t", "t", None])),
                  host_totals=draw(st.sampled_from(["h", None])),
                  uploaded=draw(st.sampled_from([0, 1, 3, None, True])), stan=draw(st.sampled_from([None, some_stan])))
    elif op == "complete_settlement":
        intents = [i for i in state["intents"] if i.kind == "settlement"]
        if intents:
            pair.call("complete_settlement", draw(st.sampled_from(intents[-2:])), result="balanced",
                      terminal_totals="t", host_totals="h", uploaded=draw(st.sampled_from([0, 2])),
                      stan=draw(st.sampled_from([None, "000123"])))
    elif op == "advance":
        settled = [] if pair.file.closed else [r.batch for r in pair.file.settlements()]
        pair.call("advance_batch", draw(st.sampled_from([None, None, batch, *settled[-2:], "000007", "5"])))
    elif op == "set_batch":
        pair.call("set_batch", draw(st.sampled_from(["000002", "000003", "999999", batch, "3"])))
    elif op == "sign_in":
        pair.call("set_signed_in", wrapped_keys=draw(st.sampled_from([b"\x01" * 60, bytearray(b"k" * 24), b"", "k"])),
                  key_mode=draw(st.sampled_from(["004", "006", None])),
                  batch=draw(st.sampled_from([batch, "000002", "12"])))
    elif op == "sign_out":
        intents = [i for i in state["intents"] if i.kind == "sign_off"]
        if intents and draw(st.booleans()):
            pair.call("complete_sign_off", intents[-1])
        else:
            pair.call("set_signed_out")
    elif op == "identity":
        pair.call("set_identity", **draw(st.sampled_from([
            {"merchant_name": "ACME TEA", "operator": "001"}, {"mid": "898100012349999"}, {"mid": None},
            {"tid": "1"}, {}, {"firmware": "3.0.8", "settlement_type": "T0"}])))
    elif op == "touch":
        pair.call("touch")
    elif op == "event":
        pair.call("event", draw(st.sampled_from(["printer.fault", "reader.error", "reversal.note", "", "x"])),
                  draw(st.sampled_from([None, {"n": 1}, {"pan": PAN, "msg": f"card {PAN} read", "mid": MID},
                                        {"b": [PAN, (1, 2)], "a": {"k": PAN2, 5: 1.5}}, {"s": {1}}, [("a", 1)]])))
    elif op == "close" and draw(st.integers(0, 9)) == 0:
        pair.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_calls_answer_alike_on_both_backends(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="possim-journal-diff-") as directory:
        pair = Pair(Path(directory))
        state: dict[str, Any] = {"stans": [], "recorded": [], "receipts": [], "intents": []}
        try:
            for _ in range(data.draw(st.integers(5, 30))):
                _step(pair, data, state)
                pair.check_state(state["stans"], {k[0] for k in state["recorded"][-4:]})
        finally:
            pair.close()


def test_a_day_of_sales_answers_alike_on_both_backends(tmp_path):
    """A fixed, longer sequence: sales, a void, refunds, a reversal, settlement and the next batch."""
    pair = Pair(tmp_path)
    stans: list[str] = []
    for i in range(30):
        stan = pair.call("next_stan")
        stans.append(stan)
        for j in (pair.file, pair.memory):
            pending(j, stan, 100 * (i + 1), kind="sale" if i % 7 else ("void" if i else "sale"),
                    original=stans[max(0, i - 3)] if i % 7 == 0 and i else None)
            if i % 5:
                approve(j, stan)
            j.store_receipts([("transaction", SLIP, "merchant"), ("transaction", SLIP, "customer")], stan=stan,
                             batch=j.batch)
        pair.check_state(stans, {"000001"})
    intent = pair.call("begin_intent", "settlement", "000001", {"totals": list(pair.file.batch_totals("000001"))})
    assert pair.call("complete_settlement", intent, result="balanced", terminal_totals="t", host_totals="h",
                     uploaded=0) == "000002"
    pair.check_state(stans, {"000001", "000002"})
    pair.close()


def test_the_finer_rules_answer_alike_on_both_backends(tmp_path):
    """Each rule the random sequences may reach only by luck, once on purpose: refunds in part and in full,
    a refund naming a void as its original, a refusal with and without a reversal, signatures owed out of
    order, reprints, slips marked by kind, a NOT NULL step, settlement answers repeated, advancing twice."""
    pair = Pair(tmp_path)
    call = pair.call
    stans = [call("next_stan") for _ in range(8)]
    for stan, amount in zip(stans[:4], (1000, 2000, 3000, 4000), strict=True):
        call("record_pending", kind="sale", stan=stan, batch="000001", amount_fen=amount, pan=PAN,
             reversal=reversal_fields(stan, amount))
        call("record_reply", stan=stan, batch="000001", rc="00", approved=True, rrn="1" * 12, auth_code="A1")
    refunds = [("refund", stans[4], 400, stans[0], "000001"), ("refund", stans[5], 600, stans[0], None),
               ("void", stans[6], 2000, stans[1], "000001"), ("refund", stans[7], 5, stans[6], "000001")]
    for kind, stan, amount, original, original_batch in refunds:
        call("record_pending", kind=kind, stan=stan, batch="000001", amount_fen=amount, pan=PAN,
             original_stan=original, original_batch=original_batch, reversal=reversal_fields(stan, amount))
        call("record_reply", stan=stan, batch="000001", rc="00", approved=True)
    assert [t.status for t in pair.file.transactions()][:2] == ["refunded", "voided"]
    unprotected, protected = call("next_stan"), call("next_stan")
    call("record_pending", kind="sale", stan=unprotected, batch="000001", amount_fen=7, pan=PAN2)
    call("record_pending", kind="sale", stan=protected, batch="000001", amount_fen=8, pan=PAN2,
         reversal=reversal_fields(protected, 8))
    for stan in (unprotected, protected):
        call("record_refusal", stan=stan, batch="000001", rc="A0")
        call("set_reversal_reason", stan, "000001", "06")
    call("mark_reversal_sent", protected, "000001")
    assert call("clear_reversal", protected, "000001", "96") is False
    for stan, status in ((stans[3], "pending"), (stans[2], "unsigned"), (stans[3], "unsigned"), (stans[1], "pending")):
        call("set_signature", stan, "000001", status)
    call("set_signature", stans[2], "000001", "signed", image=b"PNG")  # owed no more
    slips = call("store_receipts", [("transaction", SLIP, "merchant"), ("transaction", SLIP, "customer")],
                 stan=stans[2], batch="000001")
    call("mark_printed", "transaction", stan=stans[2], batch="000001", copy="merchant")
    call("mark_printed", "transaction", stan=stans[2], batch="000001", copy="merchant")  # printed already
    call("receipt_for", stans[2])  # the customer copy, still owed
    call("receipts", stan=stans[2], batch="000001", limit=1)
    call("mark_reprinted", slips[0])
    call("store_receipt", "signoff", "SIGN OFF")
    call("store_receipt", "signoff", "SIGN OFF", printed=True)
    call("mark_printed", "signoff")  # the owed one, not the latest
    call("store_receipt", "signoff", "SIGN OFF", printed=True)
    call("mark_printed", "signoff")  # all printed: the latest, again
    call("events", since=pair.file.events("txn.refused", limit=1)[0]["at"])
    intent = call("begin_intent", "settlement", "000001", {"b": 1, "a": [PAN]})
    call("intent_step", intent, None, {"c": 2})
    call("intent_step", intent.id, "sent", {"c": 2})
    for uploaded, stan in ((2, None), (1, "000123"), (0, None)):
        call("record_settlement", "000001", result="balanced", terminal_totals="t", host_totals="h",
             uploaded=uploaded, stan=stan)
        pair.check_state(stans, {"000001"})
    call("store_receipt", "settlement", "VOUCHER", batch="000001")
    call("mark_printed", "settlement", batch="000001")
    assert call("advance_batch", "000001") == "000002"
    for target in (None, "000001", "000002", "000003"):
        call("advance_batch", target)
    call("complete_settlement", intent, result="balanced", terminal_totals="t", host_totals="h", uploaded=3)
    call("record_pending", kind="sale", stan=stans[0], batch="000002", amount_fen=5, pan=PAN)  # a STAN again
    call("find_transaction", stans[0])
    pair.check_state([*stans, unprotected, protected], {"000001", "000002"})
    pair.close()


# ----------------------------------------------------------------------------------------------
# card data, history, bounds
# ----------------------------------------------------------------------------------------------


def test_a_memory_journal_never_hands_out_the_clear_pan_where_journal_does_not():
    j = open_journal(":memory:")
    pending(j, j.next_stan(), 100)
    approve(j, "000001")
    pending(j, j.next_stan(), 200, pan=PAN2)  # still owed
    j.set_signature("000001", j.batch, "unsigned")
    j.event("debug", {"pan": PAN, "note": f"card {PAN2} swiped", "nested": [{"track": f"{PAN}D3012"}]})
    j.begin_intent("batch_upload", j.batch, {"first": PAN, "list": [PAN2]})
    j.store_receipt("transaction", f"CARD {PAN}\nMERCHANT {MID}", stan="000001", batch=j.batch, copy="merchant")
    j.store_receipts([("transaction", "CARD 6222020000000015", "customer")], stan="000002", batch=j.batch)
    j.record_settlement(j.batch, result="balanced", terminal_totals="t", host_totals=None, uploaded=1)
    shown = [repr(j), j.identity(), j.summary(), j.status(), j.transactions(), j.find_transaction("000002"),
             j.events(limit=1000), j.open_intents(), j.receipts(), j.pending_receipts(), j.last_receipt(),
             j.receipt_for("000001"), j.unsigned(j.batch), j.settlement_report(), j.batch_records(j.batch)]
    for clear in (PAN, PAN2):
        assert all(clear not in repr(item) for item in shown), clear
    # where Journal hands the clear PAN out on purpose, so does the memory journal
    assert j.pan_for(1) == PAN and j.batch_records(j.batch)[0].pan == PAN
    assert j.pending_reversals()[0].fields[2] == PAN2
    assert "622202******0015" in j.receipt_for("000001").text and MID in j.receipt_for("000001").text
    assert j.events("debug")[0]["note"] == "card 621700******0097 swiped"


class _NoScan(list):
    """A list that may be appended to, indexed and counted, but not walked: what a sale does must not read
    history."""

    def __iter__(self):
        raise AssertionError("walked all of history")

    def __reversed__(self):
        raise AssertionError("walked all of history")


class _NoScanDict(dict):
    """An index by id that may be added to, looked up and counted, but not walked."""

    def __iter__(self):
        raise AssertionError("walked all of history")

    def __reversed__(self):
        raise AssertionError("walked all of history")

    def keys(self):
        raise AssertionError("walked all of history")

    def values(self):
        raise AssertionError("walked all of history")

    def items(self):
        raise AssertionError("walked all of history")


class _NoScanBatches(dict):
    """batch -> its transactions, each list made a `_NoScan` as it is stored: no walk of a whole batch."""

    def __setitem__(self, batch, txns):
        super().__setitem__(batch, _NoScan(txns))


class _NoScanDeque(deque):
    def __iter__(self):
        raise AssertionError("walked all events")

    def __reversed__(self):
        raise AssertionError("walked all events")


def test_what_a_sale_does_reads_no_history():
    j = open_journal(":memory:")
    j.set_signed_in(wrapped_keys=b"\x01" * 60, key_mode="004", batch="000001")
    for batch_no in range(3):  # history: three batches of sales with slips, settled
        for _ in range(200):
            stan = j.next_stan()
            pending(j, stan, 1000)
            approve(j, stan)
            j.store_receipts([("transaction", SLIP, "merchant"), ("transaction", SLIP, "customer")], stan=stan,
                             batch=j.batch)
        j.complete_settlement(j.begin_intent("settlement", j.batch), result="balanced", terminal_totals="t",
                              host_totals="t", uploaded=0)
        assert j.batch == f"{batch_no + 2:06d}"
    j._txns = _NoScanDict(j._txns)
    j._receipts = _NoScanDict(j._receipts)
    j._events = _NoScanDeque(j._events, maxlen=j._events.maxlen)
    by_batch = _NoScanBatches()
    for batch, txns in j._by_batch.items():
        by_batch[batch] = txns
    j._by_batch = by_batch
    approved = 0
    for i in range(20):  # a sale, as the terminal makes it, with everything it asks the journal
        assert j.pending_reversals() == [] and j.open_intents() == []
        assert j.batch_count(j.batch) == approved  # the batch-capacity check, before every sale
        stan = j.next_stan()
        txn_id = j.record_pending(kind="sale", stan=stan, batch=j.batch, amount_fen=500, pan=PAN,
                                  reversal=reversal_fields(stan, 500, j.batch))
        if i % 4 == 0:
            j.set_reversal_reason(stan, j.batch, "98")
            j.mark_reversal_sent(stan, j.batch)
            assert j.clear_reversal(stan, j.batch, "96") is False
            assert j.clear_reversal(stan, j.batch, "00") is True
            continue
        j.record_reply(stan=stan, batch=j.batch, rc="00", approved=True, rrn="1" * 12, auth_code="A1")
        approved += 1
        j.set_signature(stan, j.batch, "unsigned" if i % 3 else "signed", image=b"PNG")
        slips = j.store_receipts([("transaction", SLIP, "merchant"), ("transaction", SLIP, "customer")], stan=stan,
                                 batch=j.batch, pan=PAN)
        j.mark_printed(slips[0])
        j.mark_printed("transaction", stan=stan, batch=j.batch, copy="customer")
        j.mark_reprinted(slips[0].id)
        assert j.transaction(stan, j.batch).receipt == "reprinted" and j.find_transaction(stan).id == txn_id
        assert j.receipt_for(stan).copy == "merchant" and j.pan_for(txn_id) == PAN
        j.event("op.sale", {"ok": True, "rc": "00", "stan": stan, "message": "APPROVED"})
        j.touch()
        assert j.summary()["transactions"] == i + 1
    # the indexes hold what was asked of them and no more
    assert len(j._by_key) == len(j._txns) == 620 and len(j._latest_sale) == 620
    assert len(j._reversals) == 0 and len(j._unprinted) == 1200  # the history's slips were never printed
    assert sorted(j._by_batch) == ["000001", "000002", "000003", "000004"]
    assert [len(j._by_batch[b]) for b in sorted(j._by_batch)] == [200, 200, 200, 20]
    assert [j.batch_count(b) for b in sorted(j._by_batch)] == [200, 200, 200, approved]
    assert len(j._owed_signature["000004"]) == len([i for i in range(20) if i % 4 and i % 3])


def test_the_memory_journal_keeps_exactly_the_last_max_events(monkeypatch):
    monkeypatch.setattr(memory_module, "MAX_EVENTS", 50)
    j = open_journal(":memory:")
    for n in range(120):
        j.event("tick", {"n": n})
    kept = j.events(limit=1000)
    assert [e["id"] for e in kept] == list(range(71, 121)) and [e["n"] for e in kept] == list(range(70, 120))
    assert [e["n"] for e in j.events("tick", limit=3)] == [117, 118, 119]


def test_opening_a_memory_journal_checks_what_journal_open_checks():
    with pytest.raises(ValueError, match="tid and mid"):
        Journal.open(":memory:", tid="", mid=MID, pan_key=KEY)
    with pytest.raises(ValueError, match="pan_key"):
        Journal.open(":memory:", tid=TID, mid=MID, pan_key=b"short")
    with pytest.raises(ValueError, match="lives in memory"):
        MemoryJournal.open("j.sqlite", tid=TID, mid=MID, pan_key=KEY)
    j = MemoryJournal.open(tid=TID, mid=MID, pan_key=KEY, clock=Clock())
    assert j.identity()["tid"] == TID and j.batch == "000001" and j.stan == "000000"
    pending(j, j.next_stan(), 100)
    j.close()
    assert j.closed and repr(j) == f"<MemoryJournal :memory: tid={TID} closed>" and j._txns == {}
    with pytest.raises(JournalError, match="journal :memory: is closed"):
        j.transactions()


def test_records_handed_out_are_copies():
    j = open_journal(":memory:")
    j.event("x", {"list": [1], "map": {"a": 1}})
    intent = j.begin_intent("batch_upload", j.batch, {"list": [1]})
    first = j.events("x")[0]
    first["list"].append(2)
    first["detail"]["map"]["a"] = 9
    j.open_intents()[0].data["list"].append(2)
    intent.data["list"].append(3)
    assert j.events("x")[0]["detail"] == {"list": [1], "map": {"a": 1}}
    assert j.open_intents()[0].data == {"list": [1]}
    assert isinstance(j.store_receipt("x", "y"), StoredReceipt)


# ----------------------------------------------------------------------------------------------
# retention (keep_batches, max_events)
# ----------------------------------------------------------------------------------------------


def _batch_answers(j: Any, batch: str) -> list[Any]:
    """What a person (or the terminal) can ask of one batch."""
    return [j.batch_totals(batch), j.batch_records(batch), j.batch_count(batch), j.transactions(batch),
            j.receipts(batch=batch, limit=1000), j.settlement(batch), j.unsigned(batch), j.settlement_report(batch)]


def test_retention_keeps_the_last_settled_batches_whole_and_everything_still_owed(tmp_path):
    """keep_batches=2 against a file journal (which keeps everything) fed the same calls: after 30 batches the
    memory journal holds at most the last 2 settled batches and the open one; each batch it holds answers
    exactly as the file does; a settled batch that still owes a reversal, a slip or a signature stays until a
    later settlement finds it clear; a dropped batch answers as one never seen."""
    full = open_journal(tmp_path / "full.sqlite", Clock())
    kept = Journal.open(":memory:", tid=TID, mid=MID, pan_key=KEY, clock=Clock(), keep_batches=2)
    assert isinstance(kept, MemoryJournal) and kept.keep_batches == 2
    both = (full, kept)
    sales = 10
    owing: dict[str, str] = {}  # batch -> what it still owes
    for number in range(1, 31):
        batch = full.batch
        for _ in range(sales):
            for j in both:
                stan = j.next_stan()
                pending(j, stan, 100 * number)
                approve(j, stan)
                for slip in j.store_receipts([("transaction", SLIP, "merchant"), ("transaction", SLIP, "customer")],
                                             stan=stan, batch=batch):
                    j.mark_printed(slip)
        if number == 3:  # a reversal still owed at settlement
            for j in both:
                stan = j.next_stan()
                pending(j, stan, 999)
                j.set_reversal_reason(stan, batch, "98")
            owing[batch] = "reversal"
        if number == 5:  # a slip not printed
            for j in both:
                j.store_receipt("declined", "DECLINED", stan=j.stan, batch=batch)
            owing[batch] = "slip"
        if number == 7:  # a signature still owed
            for j in both:
                j.set_signature(j.stan, batch, "unsigned")
            owing[batch] = "signature"
        if number == 12:  # everything owed is settled up; the next settlement lets those batches go
            reversal = full.pending_reversals()[0]
            unsigned_batch = next(b for b, what in owing.items() if what == "signature")
            for j in both:
                assert j.clear_reversal(reversal.stan, reversal.batch, "00")
                j.mark_printed(j.pending_receipts()[0])
                j.set_signature(j.unsigned(unsigned_batch)[0].stan, unsigned_batch, "uploaded")
            owing.clear()
        for j in both:
            intent = j.begin_intent("settlement", batch, {"totals": list(j.batch_totals(batch))})
            j.complete_settlement(intent, result="balanced", terminal_totals="t", host_totals="t", uploaded=0)
            j.store_receipt("settlement", f"VOUCHER {batch}", batch=batch, printed=True)
        settled = [s.batch for s in full.settlements()]
        held = sorted({*settled[-2:], *owing})
        assert [s.batch for s in kept.settlements()] == held
        assert sorted({t.batch for t in kept.transactions()}) == held
        for b in held:
            assert _batch_answers(kept, b) == _batch_answers(full, b), b
        for b in set(settled[:-2]) - set(owing):  # dropped: as a batch never seen
            report = kept.settlement_report(b)
            assert _batch_answers(kept, b)[:-1] == [(0, 0, 0, 0), [], 0, [], [], None, []]
            assert (report.totals, report.settlement, report.by_status) == ((0, 0, 0, 0), None, {})
    # what the whole journal answers is unchanged where it concerns what is held
    for name in ("pending_reversals", "pending_receipts", "open_intents", "last_settlement", "last_receipt",
                 "identity", "summary", "stan", "batch"):
        file_answer, memory_answer = (g() if callable(g) else g for g in (getattr(j, name) for j in both))
        assert memory_answer == file_answer, name
    last = full.transactions(full.settlements()[-1].batch)[-1]
    for j in both:
        assert j.find_transaction(last.stan) == last and j.receipt_for(last.stan) == full.receipt_for(last.stan)
    assert kept.find_transaction("000001") is None and full.find_transaction("000001") is not None
    # bounded: 30 batches of 10 sales went through; 2 settled batches of them are held, with their indexes
    assert len(full.transactions()) == 30 * sales + 1  # and the one reversed
    assert len(kept._txns) == len(kept._by_key) == len(kept._latest) == 2 * sales
    assert len(kept._receipts) == 2 * (2 * sales + 1) == sum(map(len, kept._batch_slips.values()))
    assert len(kept._owners) <= 2 * (sales + 1) and len(kept._last_for_stan) <= 2 * sales
    assert len(kept._settlements) == 2 and len(kept._intents) == 2 and len(kept._vouchers) == 2
    assert set(kept._by_batch) == set(kept._logged) == set(kept._batch_slips) == set(held)
    # ids count on where they were: the next sale has the same id in both
    for j in both:
        stan = j.next_stan()
        assert pending(j, stan, 5) == 30 * sales + 2


def test_retention_applies_at_once_when_set_and_checks_its_arguments(tmp_path):
    j = open_journal(":memory:")
    for _ in range(4):
        stan = j.next_stan()
        pending(j, stan, 100)
        approve(j, stan)
        j.complete_settlement(j.begin_intent("settlement", j.batch), result="balanced", terminal_totals="t",
                              host_totals="t", uploaded=0)
    assert j.keep_batches is None and len(j.settlements()) == 4  # the default keeps everything
    j.keep_batches = 1
    assert [s.batch for s in j.settlements()] == ["000004"] and [t.stan for t in j.transactions()] == ["000004"]
    j.advance_batch()  # the last settled batch is held: advancing past it again is still a no-op
    assert j.batch == "000005"
    for bad in (0, -1, "2", 1.5, True):
        with pytest.raises(ValueError, match="keep_batches must be a positive whole number"):
            j.keep_batches = bad
        with pytest.raises(ValueError, match="keep_batches must be a positive whole number"):
            Journal.open(":memory:", tid=TID, mid=MID, pan_key=KEY, keep_batches=bad)
    with pytest.raises(ValueError, match="max_events must be a positive whole number"):
        MemoryJournal.open(tid=TID, mid=MID, pan_key=KEY, max_events=0)
    with pytest.raises(ValueError, match="bound a journal in memory"):
        Journal.open(tmp_path / "j.sqlite", tid=TID, mid=MID, pan_key=KEY, keep_batches=2)
    assert not (tmp_path / "j.sqlite").exists()


def test_max_events_keeps_the_newest_events():
    j = Journal.open(":memory:", tid=TID, mid=MID, pan_key=KEY, clock=Clock(), max_events=5)
    for n in range(12):
        j.event("tick", {"n": n})
    assert j.max_events == 5 and [e["n"] for e in j.events("tick")] == [7, 8, 9, 10, 11]
    j.max_events = 3
    assert [e["n"] for e in j.events("tick")] == [9, 10, 11]
    j.event("tick", {"n": 12})
    assert [e["n"] for e in j.events("tick")] == [10, 11, 12]
