"""`possim scenario run` on bad input: usage errors (2) found before anything runs, naming the path, the step and
the problem; never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal.cli import main
from terminal.commands import scenario as scenario_command


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["scenario", "run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("where", "reason"), [
    ("missing/dir/x.xml", "directory {tmp}/missing/dir does not exist"),
    (".", "is a directory"),
])
def test_junit_path_that_cannot_be_written_is_refused_before_running(capsys, tmp_path: Path, where: str,
                                                                      reason: str) -> None:
    junit = str(tmp_path / where)
    code, out, err = run(capsys, "FM-12", "--quiet", "--junit", junit)
    assert code == 2 and f"--junit {junit}: {reason.format(tmp=tmp_path)}" in err
    assert "FM-12" not in out  # nothing ran
    assert [p.name for p in tmp_path.iterdir()] == []  # and the check left nothing behind


def test_junit_that_fails_after_the_run_keeps_the_results_and_exits_1(capsys, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(results: object, path: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scenario_command, "write_junit", disk_full)
    junit = tmp_path / "out.xml"
    code, out, err = run(capsys, "FM-12", "--quiet", "--junit", str(junit))
    assert code == 1 and "FM-12 PASSED" in out and "1 passed, 0 failed" in out
    assert f"cannot write --junit {junit}: No space left on device" in err
