"""`possim firmware ...`: the list --json contract, show, build and verify."""

from __future__ import annotations

import json

from firmware_sim.image import Image, verify
from terminal.cli import main


def test_list_json_contract(capsys):
    assert main(["firmware", "list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert isinstance(items, list)
    by_version = {item["version"]: item for item in items}
    assert {"2.1.5", "2.3.6", "3.0.2", "3.0.8"} <= set(by_version)
    for item in items:
        assert isinstance(item["sha256"], str) and len(item["sha256"]) == 64
        assert item["signed"] is True
        assert isinstance(item["defects"], list) and all(isinstance(d, str) for d in item["defects"])
    assert by_version["2.1.5"]["defects"] == ["settlement-funds-pending"]
    assert by_version["2.3.6"]["defects"] == ["below-minimum"]
    assert by_version["3.0.2"]["defects"] == [] and by_version["3.0.8"]["defects"] == []


def test_list_is_deterministic(capsys):
    main(["firmware", "list", "--json"])
    first = capsys.readouterr().out
    main(["firmware", "list", "--json"])
    assert capsys.readouterr().out == first


def test_list_text(capsys):
    assert main(["firmware", "list"]) == 0
    out = capsys.readouterr().out
    assert "2.1.5" in out and "settlement-funds-pending" in out


def test_show(capsys):
    assert main(["firmware", "show", "2.1.5", "--json"]) == 0
    item = json.loads(capsys.readouterr().out)
    assert item["known"] and "field 49" in item["defect_effects"]["settlement-funds-pending"]
    assert main(["firmware", "show", "5.0.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["known"] is False
    assert main(["firmware", "show", "3.0.8"]) == 0 and "sha256" in capsys.readouterr().out
    assert main(["firmware", "show", "three"]) == 2
    assert "must look like 3.0.8" in capsys.readouterr().err


def test_build_and_verify(tmp_path, capsys):
    out = tmp_path / "fw.img"
    assert main(["firmware", "build", "3.0.8", "--out", str(out), "--size", "1000", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    image = Image.load(out)
    verify(image)
    assert built["sha256"] == image.sha256 and image.size == 1000 and built["signed"]
    assert main(["firmware", "verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_unsigned_and_tampered_images_fail_verify(tmp_path, capsys):
    unsigned = tmp_path / "u.img"
    assert main(["firmware", "build", "3.0.8", "--out", str(unsigned), "--unsigned"]) == 0
    capsys.readouterr()
    assert main(["firmware", "verify", str(unsigned), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "unsigned"
    good = tmp_path / "g.img"
    main(["firmware", "build", "3.0.8", "--out", str(good), "--size", "64"])
    data = bytearray(good.read_bytes())
    data[-1] ^= 1
    good.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["firmware", "verify", str(good), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "hash"


def test_build_with_own_key_verifies_only_with_its_public_key(tmp_path, capsys):
    key = tmp_path / "vendor.key"
    key.write_text("11" * 32)
    from firmware_sim.image import load_private_key, public_key_hex

    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_hex(load_private_key(key)))
    out = tmp_path / "fw.img"
    assert main(["firmware", "build", "3.0.2", "--out", str(out), "--key", str(key)]) == 0
    assert main(["firmware", "verify", str(out)]) == 1  # not the test vendor key
    assert main(["firmware", "verify", str(out), "--pubkey", str(pub)]) == 0
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    assert main(["firmware", "build", "3.0.2", "--out", str(out), "--key", str(bad)]) == 2


def test_usage_errors(capsys, tmp_path):
    assert main(["firmware"]) == 2
    assert main(["firmware", "build", "3.0.8", "--out", str(tmp_path / "x"), "--size", "0"]) == 2
    assert main(["firmware", "verify", str(tmp_path / "missing.img")]) == 2


def test_build_names_an_unwritable_out_or_a_missing_key(tmp_path, capsys):
    """Both were a traceback (exit 1) or an errno without the option's name (QA)."""
    assert main(["firmware", "build", "3.0.8", "--out", str(tmp_path / "no" / "fw.img")]) == 2
    assert f"--out {tmp_path / 'no' / 'fw.img'}: cannot write: No such file or directory" in capsys.readouterr().err
    assert main(["firmware", "build", "3.0.8", "--out", str(tmp_path / "fw.img"), "--key", str(tmp_path / "zz")]) == 2
    assert f"--key {tmp_path / 'zz'}: No such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "fw.img").exists()
