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
    (".", "it is a directory"),
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


SIGN_IN = '[[steps]]\nop = "sign-in"\nexpect = { ok = true }\n'


@pytest.mark.parametrize(("steps", "problem"), [
    ('[[steps]]\nop = "sale"\namount = "12.345"\n', "step 2 (sale): amount '12.345' has more than two decimals"),
    ('[[steps]]\nop = "sale"\namount = 12.345\n', "step 2 (sale): amount 12.345 has more than two decimals"),
    ('[[steps]]\nop = "sale"\namount = "-5"\n', "step 2 (sale): amount '-5' is negative"),
    ('[[steps]]\nop = "sale"\namount = "0.00"\n', "step 2 (sale): amount '0.00' is zero"),
    ('[[steps]]\nop = "sale"\namount = "abc"\n', "step 2 (sale): amount 'abc' is not an amount in yuan"),
    ('[[steps]]\nop = "sale"\namount = "NaN"\n', "step 2 (sale): amount 'NaN' is not an amount in yuan"),
    ('[[steps]]\nop = "sale"\namount = "1e3"\n', "step 2 (sale): amount '1e3' is not an amount in yuan"),
    ('[[steps]]\nop = "sale"\namount = "10000000000.00"\n', "step 2 (sale): amount '10000000000.00' is more than"),
    ('[[steps]]\nop = "sale"\n', "step 2 (sale): sale needs amount"),
    ('[[steps]]\nop = "refund"\nstan = "1"\n', "step 2 (refund): refund needs amount"),
    ('[[steps]]\nop = "void"\nstan = "@nosuch"\n', "step 2 (void): stan '@nosuch' refers to no earlier step"),
    ('[[steps]]\nop = "void"\nstan = "@later"\n[[steps]]\nop = "sale"\namount = "1.00"\nname = "later"\n',
     "step 2 (void): stan '@later' refers to no earlier step"),
    ('[[steps]]\nop = "void"\nstan = "12ab"\n', "step 2 (void): stan '12ab' must be up to 6 digits"),
    ('[[steps]]\nop = "check"\nexpect = { funds_status = "credited" }\n',
     "step 2 (check): expectation 'funds_status' needs stan"),
    ('[[steps]]\nop = "check"\nexpect = { colour = "red" }\n', "step 2 (check): unknown expectation 'colour'"),
    ('[[steps]]\nop = "wait"\nseconds = "soon"\n', "step 2 (wait): seconds 'soon' must be a number"),
], ids=lambda v: None if v.startswith("[[") else v.split("): ", 1)[-1][:40])
def test_bad_scenario_file_is_refused_before_running(capsys, tmp_path: Path, steps: str, problem: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('name = "SHOP-01"\n' + SIGN_IN + steps)
    code, out, err = run(capsys, "--file", str(path))
    assert code == 2 and f"{path}: {problem}" in err and "Traceback" not in err
    assert out == ""  # nothing ran


def test_scenario_file_without_checks_is_refused(capsys, tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('name = "SHOP-02"\n[[steps]]\nop = "sign-in"\n[[steps]]\nop = "sale"\namount = "12.34"\n')
    code, out, err = run(capsys, "--file", str(path))
    assert code == 2 and f"{path}: scenario SHOP-02 has no checks" in err and out == ""


def test_good_amounts_and_stan_references_still_run(capsys, tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('name = "SHOP-03"\n' + SIGN_IN
                    + '[[steps]]\nop = "sale"\namount = "12.3"\nname = "s"\nexpect = { ok = true }\n'
                    + '[[steps]]\nop = "sale"\namount = 5\nexpect = { ok = true }\n'
                    + '[[steps]]\nop = "void"\nstan = "@s"\nexpect = { ok = true, host_totals = [1730, 2, 1230, 1] }\n')
    code, out, err = run(capsys, "--file", str(path), "--quiet")
    assert code == 0 and "SHOP-03 PASSED" in out, out + err
