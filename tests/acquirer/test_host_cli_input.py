"""`possim host` and `possim host admin` on bad input: a usage error (2) naming the path or value, no traceback,
nothing created or served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from terminal.cli import main

ROOT = Path(__file__).resolve().parents[2]
LISTEN = "tcp://127.0.0.1:6402"  # never bound: every case here stops before serving


def host(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["host", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("db", "reason"), [
    ("missing/x.sqlite", "does not exist"),
    (".", "it is a directory"),
])
def test_host_ledger_that_cannot_be_opened(capsys, tmp_path: Path, db: str, reason: str) -> None:
    path = str(tmp_path / db)
    code, err = host(capsys, "--listen", LISTEN, "--db", path)
    assert code == 2 and f"cannot open ledger {path}: " in err and reason in err


def test_host_trace_file_that_cannot_be_opened_is_refused_before_the_ledger(capsys, tmp_path: Path) -> None:
    trace, db = tmp_path / "missing" / "t.txt", tmp_path / "host.sqlite"
    code, err = host(capsys, "--listen", LISTEN, "--db", str(db), "--trace", str(trace))
    assert code == 2 and f"cannot open --trace {trace}: No such file or directory" in err
    assert not db.exists()


@pytest.mark.parametrize("url", ["bogus", "tcp://127.0.0.1", "carrier-pigeon://coop"])
def test_host_bad_listen_url_is_a_usage_error(capsys, tmp_path: Path, url: str) -> None:
    db = tmp_path / "host.sqlite"
    code, err = host(capsys, "--listen", url, "--db", str(db))
    assert code == 2 and "--listen" in err and repr(url) in err
    assert not db.exists()


@pytest.mark.parametrize("version", ["banana", "3.0.8.1"])
def test_host_min_firmware_must_be_a_version(tmp_path: Path, version: str) -> None:
    # a subprocess: a host that accepted the version would serve until the timeout, not hang the suite
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "terminal", "host", "--listen", LISTEN, "--db",
                             str(tmp_path / "host.sqlite"), "--min-firmware", version],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--min-firmware: firmware version {version!r} must look like 3.0.8" in result.stderr


@pytest.mark.parametrize("action", [["funds", "898100012340001"], ["ledger"]])
def test_admin_refuses_a_ledger_that_does_not_exist_and_creates_none(capsys, tmp_path: Path,
                                                                      action: list[str]) -> None:
    db = tmp_path / "typo.sqlite"
    code, err = host(capsys, "admin", "--db", str(db), *action)
    assert code == 2 and f"no ledger at {db}: no such file" in err
    assert list(tmp_path.iterdir()) == []


def test_admin_refuses_a_file_that_is_not_a_ledger(capsys, tmp_path: Path) -> None:
    db = tmp_path / "notes.sqlite"
    db.write_text("not a database, at least 100 bytes long " * 4)
    code, err = host(capsys, "admin", "--db", str(db), "ledger")
    assert code == 2 and f"cannot open ledger {db}: file is not a database" in err
    code, err = host(capsys, "admin", "--db", str(tmp_path), "ledger")
    assert code == 2 and f"cannot open ledger {tmp_path}: it is a directory" in err
