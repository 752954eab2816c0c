"""`possim decode`: hex or raw input, with or without length/TPDU/header, table and JSON, errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import Message, get_dialect
from protocol import catalogue as cat
from protocol.composite import BatchRecord, SettlementTotals, Totals, encode_balance, encode_device_info
from terminal.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("POSSIM_SHARED", ROOT.parent / "shared"))
VECTOR_HEX = SHARED / "protocol" / "vectors" / "cup_0200_sale.hex"
VECTOR_JSON = SHARED / "protocol" / "vectors" / "cup_0200_sale.json"
PAN = "6224242900000113"
COMMON = {"tid": "10000019", "mid": "850100082410002", "batch": "000024"}


@pytest.fixture(scope="module")
def frame() -> bytes:
    assert VECTOR_HEX.is_file(), f"the shared vector is missing: {VECTOR_HEX} (set POSSIM_SHARED)"
    return bytes.fromhex(VECTOR_HEX.read_text())


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(VECTOR_JSON.read_text())


@pytest.fixture(scope="module")
def unmasked(expected: dict) -> dict:
    """What `--json --unmask` prints for the vector: its fields, the PIN block still hidden."""
    return dict(expected["fields"], **{"52": "<8 bytes hidden>"})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def view(out: str, label: str) -> str:
    """The value printed after `label` in the composite-view block of the table."""
    for line in out.splitlines():
        if line.startswith(label + " "):
            return line[len(label):].strip()
    raise AssertionError(f"no {label!r} line in:\n{out}")


def frame_of(msg: Message, *, header: str = "603100030008") -> bytes:
    """A cup-pos frame for `msg`: length, TPDU, header (firmware 3.0.8), message."""
    body = bytes.fromhex("6000060000") + bytes.fromhex(header) + get_dialect().encode(msg)
    return len(body).to_bytes(2, "big") + body


# ---------------------------------------------------------------------------------------------
# JSON contract
# ---------------------------------------------------------------------------------------------


def test_json_of_the_vector_file_unmasked_equals_the_vector_json(capsys: pytest.CaptureFixture[str],
                                                                  expected: dict, unmasked: dict) -> None:
    code, out, err = run(capsys, "--file", str(VECTOR_HEX), "--json", "--unmask")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert set(doc) == {"tpdu", "header", "mti", "fields"}
    assert doc["tpdu"] == expected["tpdu"] and doc["header"] == expected["header"]
    assert doc["mti"] == expected["mti"]
    assert doc["fields"] == unmasked
    assert expected["fields"]["52"] not in out
    assert out.count("\n") == 1  # exactly one JSON object on one line


def test_json_masks_the_pan_by_default(capsys: pytest.CaptureFixture[str], expected: dict) -> None:
    code, out, _ = run(capsys, "--file", str(VECTOR_HEX), "--json")
    assert code == 0
    fields = json.loads(out)["fields"]
    assert fields["2"] == "622424******0113"
    assert PAN not in out
    assert expected["fields"]["52"] not in out  # the PIN block is hidden too
    assert fields["55"] == expected["fields"]["55"] and fields["4"] == "000000000001"


@pytest.mark.parametrize("strip", [0, 2, 13], ids=["length+tpdu+header", "tpdu+header", "message only"])
@pytest.mark.parametrize("form", ["hex", "spaced hex", "hex file", "raw file"])
def test_every_input_form(capsys: pytest.CaptureFixture[str], tmp_path: Path, frame: bytes, expected: dict,
                          unmasked: dict, strip: int, form: str) -> None:
    data = frame[strip:]
    if form == "hex":
        argv = [data.hex()]
    elif form == "spaced hex":
        text = data.hex().upper()
        argv = [" ".join(text[i:i + 8] for i in range(0, len(text), 8)), "\n"]
    else:
        path = tmp_path / "frame.bin"
        if form == "hex file":
            text = data.hex().upper()
            path.write_text("\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + "\n")
        else:
            path.write_bytes(data)
        argv = ["--file", str(path)]
    code, out, err = run(capsys, *argv, "--json", "--unmask")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["fields"] == unmasked
    if strip == 13:
        assert doc["tpdu"] is None and doc["header"] is None
    else:
        assert doc["tpdu"] == expected["tpdu"] and doc["header"] == expected["header"]


def test_message_whose_bitmap_starts_like_a_tpdu(capsys: pytest.CaptureFixture[str]) -> None:
    """A balance inquiry (fields 2 and 3, no 4) has bitmap byte 0x60 where a prefixed frame has its TPDU."""
    msg = cat.balance(stan="000006", card=cat.CardData(pan=PAN), **COMMON)
    body = get_dialect().encode(msg)
    assert body[2] == 0x60
    code, out, err = run(capsys, body.hex(), "--json", "--unmask")
    assert (code, err) == (0, "")
    assert json.loads(out)["fields"]["2"] == PAN and json.loads(out)["tpdu"] is None


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, frame: bytes) -> None:
    class Stdin:
        buffer = __import__("io").BytesIO(frame)

    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, _ = run(capsys, "--file", "-", "--json")
    assert code == 0 and json.loads(out)["mti"] == "0200"


# ---------------------------------------------------------------------------------------------
# Human output
# ---------------------------------------------------------------------------------------------


def test_table_of_the_vector(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--file", str(VECTOR_HEX))
    assert (code, err) == (0, "")
    assert "TPDU     6000060000" in out and "destination 0006, source 0000" in out
    assert "header   603100311003" in out and "firmware 31.10.3" in out
    assert "MTI      0200" in out
    lines = out.splitlines()
    pan_line = next(line for line in lines if line.lstrip().startswith("2 "))
    assert "primary account number" in pan_line and "n..19" in pan_line and "622424******0113" in pan_line
    assert PAN not in out
    assert "D1EEF419D0AE2609" not in out and "<8 bytes hidden>" in out
    assert any(line.lstrip().startswith("55 ") and "b...255" in line and "9F2608" in line for line in lines)
    assert view(out, "transaction") == "sale (request)"
    assert view(out, "60.1 transaction type") == "22"
    assert view(out, "60.2 batch number") == "000024"
    assert view(out, "60.3 network management code") == "000"
    assert view(out, "60.4 read capability") == "6"


def test_unmask_shows_the_pan_but_never_the_pin_block(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--file", str(VECTOR_HEX), "--unmask")
    assert code == 0
    assert PAN in out and "6224242900000113D28062013949031013" in out
    assert "D1EEF419D0AE2609" not in out


def test_unmask_never_shows_the_pin_block_in_json(capsys: pytest.CaptureFixture[str], expected: dict) -> None:
    code, out, _ = run(capsys, "--file", str(VECTOR_HEX), "--json", "--unmask")
    fields = json.loads(out)["fields"]
    assert code == 0 and fields["2"] == PAN and fields["35"] == expected["fields"]["35"]
    assert fields["52"] == "<8 bytes hidden>" and expected["fields"]["52"] not in out


def test_unmask_never_shows_the_working_keys_of_a_sign_in_reply(capsys: pytest.CaptureFixture[str]) -> None:
    keys = bytes.fromhex("9F1C4B2A7E3D60518877AA55CC330F11" * 3 + "A1B2C3D4E5F60718")  # wrapped PIK/MAK/TDK + KCVs
    request = cat.sign_in(stan="000001", **COMMON)
    reply = cat.reply(request, "00", f62=keys)
    for argv in (["--json", "--unmask"], ["--unmask"], ["--json"], []):
        code, out, _ = run(capsys, frame_of(reply).hex(), *argv)
        assert code == 0, argv
        assert "9F1C4B2A" not in out.upper() and "A1B2C3D4" not in out.upper(), argv
        assert "<56 bytes hidden>" in out, argv


def test_help_says_unmask_keeps_pin_block_and_keys_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "PAN and track data in clear, in the table and in --json (the PIN block and keys stay hidden)" in text


def test_header_firmware_version_and_processing_requirement(capsys: pytest.CaptureFixture[str]) -> None:
    msg = cat.network("echo", stan="000001", **COMMON)
    code, out, _ = run(capsys, frame_of(msg, header="603113030008").hex())
    assert code == 0
    assert "firmware 3.0.8" in out and "terminal test" in out and "processing 3 (sign in again)" in out
    assert view(out, "transaction") == "echo (request)"


def test_settlement_reply_views(capsys: pytest.CaptureFixture[str]) -> None:
    request = cat.settlement(stan="000010", totals=SettlementTotals(Totals(12345, 2, 100, 1)), **COMMON)
    reply = cat.reply(request, "00", f48=SettlementTotals.parse(request[48]).with_reconciliation(2).encode())
    code, out, _ = run(capsys, frame_of(reply).hex())
    assert code == 0
    assert view(out, "transaction") == "settlement (reply)"
    assert view(out, "48 domestic") == "debit 123.45 x2, credit 1.00 x1, reconciliation 2"
    assert view(out, "48 foreign") == "debit 0.00 x0, credit 0.00 x0, reconciliation 2"
    assert view(out, "48 result") == "unbalanced"
    assert view(out, "39 response").startswith("00 approved")


def test_batch_upload_views_mask_the_pan(capsys: pytest.CaptureFixture[str]) -> None:
    msg = cat.batch_upload(stan="000011", records=[BatchRecord("000007", PAN, 12345)], **COMMON)
    code, out, _ = run(capsys, frame_of(msg).hex())
    assert code == 0
    assert view(out, "48 record 1") == "organisation 00, STAN 000007, PAN 622424******0113, amount 123.45"
    assert PAN not in out  # not in the view, nor in the raw field 48 row
    code, out, _ = run(capsys, frame_of(msg).hex(), "--json")
    assert json.loads(out)["fields"]["48"] == "01" + "00" + "000007" + "0000622424******0113" + "000000012345"
    code, out, _ = run(capsys, frame_of(msg).hex(), "--unmask")
    assert PAN in out and view(out, "48 record 1").endswith(f"PAN {PAN}, amount 123.45")


def test_void_balance_and_device_info_views(capsys: pytest.CaptureFixture[str]) -> None:
    card = cat.CardData(pan=PAN, expiry="2806")
    void = cat.void(stan="000008", card=card, amount_fen=1, original_rrn="190830093435",
                    original=cat.Field61("000024", "000007", "0830"), **COMMON)
    code, out, _ = run(capsys, frame_of(void).hex())
    assert code == 0 and view(out, "transaction") == "void (request)"
    assert (view(out, "61.1 original batch"), view(out, "61.2 original STAN"), view(out, "61.3 original date")) == (
        "000024", "000007", "0830")

    balance_reply = cat.reply(cat.balance(stan="000006", card=card, **COMMON), "00", f54=encode_balance(-1234))
    code, out, _ = run(capsys, frame_of(balance_reply).hex())
    assert code == 0 and view(out, "54 balance") == "-12.34 (currency 156)"

    sign_in = cat.sign_in(stan="000001", device_info=encode_device_info(SN="P1000019", FW="3.0.8"), **COMMON)
    code, out, _ = run(capsys, frame_of(sign_in).hex())
    assert code == 0 and view(out, "transaction") == "sign_in (request)"
    assert (view(out, "62 SN"), view(out, "62 FW")) == ("P1000019", "3.0.8")


def test_malformed_composite_is_reported_not_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    msg = Message("0820", {11: "000001", 41: "10000019", 42: "850100082410002", 60: "000000240"})
    code, out, _ = run(capsys, frame_of(msg).hex())
    assert code == 0
    assert "(not a valid layout" in out


# ---------------------------------------------------------------------------------------------
# Other dialects
# ---------------------------------------------------------------------------------------------


def test_iso87_ascii_raw_and_hex(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dialect = get_dialect("iso87-ascii")
    msg = Message("0200", {2: PAN, 3: "000000", 4: "000000000100", 11: "000001", 41: "10000019", 70: "301"})
    body = dialect.encode(msg)
    framed = f"{len(body):04d}".encode() + body
    for content in (framed, body, framed.hex().encode()):
        path = tmp_path / "msg.txt"
        path.write_bytes(content)
        code, out, err = run(capsys, "--file", str(path), "--dialect", "iso87-ascii", "--json", "--unmask")
        assert (code, err) == (0, ""), content
        doc = json.loads(out)
        assert doc == {"tpdu": None, "header": None, "mti": "0200",
                       "fields": {"2": PAN, "3": "000000", "4": "000000000100", "11": "000001",
                                  "41": "10000019", "70": "301"}}


def test_user_spec_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "mini.toml"
    spec.write_text('name = "mini"\n[framing]\ntpdu = false\nheader = false\n'
                    '[fields]\n3 = { format = "n6" }\n11 = { format = "n6" }\n')
    body = bytes.fromhex("0800") + bytes.fromhex("2020000000000000") + bytes.fromhex("000000000001")
    code, out, _ = run(capsys, body.hex(), "--spec", str(spec), "--json")
    assert code == 0
    assert json.loads(out) == {"tpdu": None, "header": None, "mti": "0800", "fields": {"3": "000000", "11": "000001"}}


# ---------------------------------------------------------------------------------------------
# Errors and exit codes
# ---------------------------------------------------------------------------------------------


def test_bad_hex(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "0200 00ZZ")
    assert (code, out) == (1, "")
    assert "not hex text: 'Z' at character 8" in err
    code, _, err = run(capsys, "020")
    assert code == 1 and "odd number of hex digits (3)" in err


def test_decode_error_names_field_and_offset(capsys: pytest.CaptureFixture[str], frame: bytes) -> None:
    truncated = frame[2:-4]  # no length prefix; field 64 cut short
    code, out, err = run(capsys, truncated.hex(), "--json")
    assert (code, out) == (1, "")
    assert "field 64 (message authentication code)" in err
    message_offset = len(frame) - 2 - 11 - 8
    assert f"at byte {message_offset} of the message (byte {message_offset + 11} of the input)" in err

    bad_pan = bytearray(frame)
    bad_pan[13 + 10 + 2] = 0xCC  # a PAN digit byte; the error points at the start of the PAN's digits
    code, _, err = run(capsys, bad_pan.hex())
    assert code == 1 and "field 2 (primary account number) at byte 11 of the message (byte 24 of the input)" in err
    assert "242429" not in err


def test_length_prefix_that_does_not_match(capsys: pytest.CaptureFixture[str], frame: bytes) -> None:
    code, _, err = run(capsys, frame[:100].hex())
    assert code == 1 and "declares 426 bytes but 98 follow" in err


def test_frame_without_a_message(capsys: pytest.CaptureFixture[str], frame: bytes) -> None:
    code, _, err = run(capsys, frame[2:13].hex())
    assert code == 1 and "no message" in err


def test_unreadable_and_empty_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--file", str(tmp_path / "absent.hex"))  # a usage error, like --spec's
    assert code == 2 and f"cannot read {tmp_path / 'absent.hex'}: No such file or directory" in err
    code, _, err = run(capsys, "--file", str(tmp_path))
    assert code == 2 and f"cannot read {tmp_path}: Is a directory" in err
    (tmp_path / "empty.hex").write_text("\n")
    code, _, err = run(capsys, "--file", str(tmp_path / "empty.hex"))
    assert code == 1 and "empty" in err


def test_bad_spec_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[fields]\n2 = { format = "n.19" }\n')
    code, _, err = run(capsys, "0800", "--spec", str(spec))
    assert code == 2 and "field 2" in err and str(spec) in err


@pytest.mark.parametrize("argv", [
    [],  # neither HEX nor --file
    ["00", "--file", "x"],
    ["00", "--dialect", "nope"],
    ["00", "--dialect", "cup-pos", "--spec", "x.toml"],
    ["00", "--bogus"],
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["decode", *argv])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_python_m_terminal_decode_json_subprocess(expected: dict) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "terminal", "decode", "--file", str(VECTOR_HEX), "--json"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mti"] == "0200" and doc["tpdu"] == expected["tpdu"] and doc["header"] == expected["header"]
    masked = dict(expected["fields"], **{"2": "622424******0113"})
    assert {k: v for k, v in doc["fields"].items() if k not in ("35", "52")} == {
        k: v for k, v in masked.items() if k not in ("35", "52")}
    assert PAN not in result.stdout
