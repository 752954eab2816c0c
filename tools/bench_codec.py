#!/usr/bin/env python3
"""Codec benchmark: possim's cup-pos codec against pyiso8583 on the same catalogue messages.

Both libraries encode and decode the same set of messages (sign-in, sale with card + PIN + ICC,
void, refund, reversal, settlement, batch upload, sign-off, echo and the captured sale vector) in
one run. Each measurement is the best of several repeats of `time.perf_counter` over many passes
through the set, after a warm-up that puts possim on its compiled path. Output: messages per second
for each library and direction, then one line `parse_ratio=X.XX build_ratio=Y.YY` (possim divided
by pyiso8583; above 1 means possim is faster).

    python tools/bench_codec.py            # full run (a few seconds)
    python tools/bench_codec.py --quick    # short run, for CI smoke tests

pyiso8583 is a test extra (`pip install -e .[test]`), not a dependency of possim.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from protocol import Message, get_dialect  # noqa: E402
from protocol import catalogue as cat  # noqa: E402
from protocol.composite import BatchRecord, Field61, SettlementTotals, Totals  # noqa: E402

VECTOR = ROOT.parent / "shared" / "protocol" / "vectors" / "cup_0200_sale.hex"
TPDU_AND_HEADER = 11  # 2-byte length prefix excluded: TPDU (5) + header (6)

TID, MID, BATCH = "10000019", "850100082410002", "000024"
ICC = bytes.fromhex(
    "9F260895BBE372271DDA7C9F2701809F101307010103A00000010A010000000000ED538FE49F37047F9F349E9F3602"
    "0157950500000000009A031908309C01009F02060000000000015F2A02015682027C009F1A0201569F0306000000000000"
    "9F3303E0E1C89F3501229F1E0831303030303031398408A0000003330101029F0902008C9F410400000403"
)


def catalogue_messages() -> dict[str, Message]:
    """The benchmark set, built with the catalogue builders (plus the captured vector if present)."""
    card = cat.CardData(pan="6224242900000113", expiry="2806", track2="6224242900000113D28062013949031013",
                        entry_mode="071", card_seq="000", icc=ICC)
    pin = bytes.fromhex("D1EEF419D0AE2609")
    mac = bytes.fromhex("3846363531423236")
    common = {"tid": TID, "mid": MID, "batch": BATCH}

    sale = cat.sale(stan="000403", card=card, amount_fen=1, pin_block=pin, **common)
    sale[64] = mac
    void = cat.void(stan="000404", card=card, amount_fen=1, pin_block=pin, original_rrn="190830093435",
                    original=Field61(BATCH, "000403"), **common)
    void[64] = mac
    refund = cat.refund(stan="000405", card=card, amount_fen=1, original=Field61(BATCH, "000403", "0830"),
                        **common)
    refund[64] = mac
    reversal = cat.reversal(sale, "98")
    reversal[64] = mac
    totals = SettlementTotals(Totals(125_00, 3, 1_00, 1, 0))
    records = [BatchRecord(stan=f"{400 + i:06d}", pan="6224242900000113", amount=100 * (i + 1)) for i in range(8)]
    messages = {
        "sign-in": cat.sign_in(stan="000401", mode="004", **common),
        "sale": sale,
        "void": void,
        "refund": refund,
        "reversal": reversal,
        "settlement": cat.settlement(stan="000406", totals=totals, **common),
        "batch upload": cat.batch_upload(stan="000407", records=records, **common),
        "sign-off": cat.network("sign_off", stan="000408", **common),
        "echo": cat.network("echo", stan="000409", **common),
    }
    if VECTOR.is_file():
        frame = bytes.fromhex(VECTOR.read_text())
        messages["vector"] = get_dialect("cup-pos").decode(frame[2 + TPDU_AND_HEADER:])
    return messages


def best_rate(work: Callable[[], None], count: int, repeats: int) -> float:
    """Messages per second for `work` (which handles `count` messages), best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer passes and repeats)")
    parser.add_argument("--passes", type=int, help="passes through the message set per repeat")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (the best one counts)")
    args = parser.parse_args(argv)
    passes = args.passes or (200 if args.quick else 2000)
    repeats = args.repeats or (3 if args.quick else 7)

    try:
        import iso8583
    except ImportError:
        print("bench_codec: pyiso8583 is not installed; it is a test extra: pip install -e '.[test]' "
              "(or pip install pyiso8583)", file=sys.stderr)
        return 2

    from protocol.interop import message_to_pyiso8583, pyiso8583_spec

    dialect = get_dialect("cup-pos")
    spec = pyiso8583_spec(dialect)
    messages = catalogue_messages()
    names = list(messages)
    wire = [dialect.encode(messages[n]) for n in names]
    docs = [message_to_pyiso8583(messages[n], dialect) for n in names]

    # Both libraries must agree on every message before their speed means anything.
    for name, raw, doc in zip(names, wire, docs, strict=True):
        theirs, _ = iso8583.encode(dict(doc), spec)
        if bytes(theirs) != raw:
            print(f"bench_codec: pyiso8583 encodes {name!r} differently from possim", file=sys.stderr)
            return 1
    msgs = [messages[n] for n in names]

    def possim_parse(n: int) -> None:
        decode = dialect.decode
        for _ in range(n):
            for raw in wire:
                decode(raw)

    def possim_build(n: int) -> None:
        encode = dialect.encode
        for _ in range(n):
            for msg in msgs:
                encode(msg)

    def pyiso_parse(n: int) -> None:
        decode = iso8583.decode
        for _ in range(n):
            for raw in wire:
                decode(raw, spec)

    def pyiso_build(n: int) -> None:
        encode = iso8583.encode
        for _ in range(n):
            for doc in docs:
                encode(doc, spec)

    # Warm-up: possim compiles a message shape's field set the second time it sees it, so after
    # this every measured possim call is on the compiled path.
    for work in (possim_parse, possim_build, pyiso_parse, pyiso_build):
        work(max(3, passes // 20))

    count = passes * len(wire)
    print(f"messages: {', '.join(names)} ({len(wire)} messages, {sum(map(len, wire))} bytes per pass)")
    print(f"{passes} passes x {repeats} repeats, best repeat counted; python {sys.version.split()[0]}, "
          f"pyiso8583 {getattr(iso8583, '__version__', '?')}")
    rates = {}
    for label, work in (("possim parse", possim_parse), ("pyiso8583 parse", pyiso_parse),
                        ("possim build", possim_build), ("pyiso8583 build", pyiso_build)):
        rates[label] = best_rate(lambda work=work: work(passes), count, repeats)
        print(f"  {label:<16} {rates[label]:>12,.0f} messages/s")
    parse_ratio = rates["possim parse"] / rates["pyiso8583 parse"]
    build_ratio = rates["possim build"] / rates["pyiso8583 build"]
    print(f"parse_ratio={parse_ratio:.2f} build_ratio={build_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
