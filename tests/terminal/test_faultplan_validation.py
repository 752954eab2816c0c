"""A fault file is checked where it is written: every mistake is an error naming the file, the table/entry
and the problem (rc 2 from the CLI), never a traceback and never a plan that silently does less."""

import subprocess
import sys
from pathlib import Path

import pytest

from terminal.chaos import MessageFault
from terminal.faultplan import FaultPlan, FaultPlanError, LinkToxic

ROOT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str) -> FaultPlan:
    path = tmp_path / "faults.toml"
    path.write_text(text)
    return FaultPlan.from_toml(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(FaultPlanError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "faults.toml") + ": "), message
    return message.split(": ", 1)[1]


@pytest.mark.parametrize(("text", "expected"), [
    ('[[mesage]]\naction = "drop"\n',
     "unknown table [[mesage]] (did you mean 'message'?); known: seed, [[device]], [[message]], [[link]], [[host]]"),
    ('sed = 3\n', "unknown key sed (did you mean 'seed'?)"),
    ('[faults]\nseed = 1\n[[message]]\naction = "drop"\n', "[[message]] outside [faults]"),
    ('[faults]\n[[faults.mesage]]\naction = "drop"\n', "unknown table [[mesage]]"),
    ('message = { action = "drop" }\n', "message must be an array of tables ([[message]] entries)"),
    ('[[message]]\nacton = "drop"\n', "[[message]] #1: unknown keys 'acton' (did you mean 'action'?)"),
    ('[[message]]\ndirection = "rx"\n', "[[message]] #1: missing action"),
])
def test_unknown_or_misplaced_tables_and_keys_are_rejected(tmp_path, text, expected):
    assert expected in _error(tmp_path, text)


@pytest.mark.parametrize(("entry", "expected"), [
    ('probability = "lots"', "probability must be a number from 0 to 1, got 'lots'"),
    ("probability = 1.5", "probability must be a number from 0 to 1, got 1.5"),
    ("probability = -0.1", "probability must be a number from 0 to 1, got -0.1"),
    ("probability = nan", "probability must be a number from 0 to 1, got nan"),
    ("probability = true", "probability must be a number from 0 to 1, got True"),
    ("count = 0", "count must be an integer >= 1, got 0"),
    ("count = 1.5", "count must be an integer >= 1, got 1.5"),
    ("count = false", "count must be an integer >= 1, got False"),
    ('nth = "2"', "nth must be an integer >= 1, got '2'"),
    ("mti = 210", "mti must be a string like '0210', got 210"),
    ('stan = "12"', "stan must be a string like '000000', got '12'"),
    ("delay = 1.0", "delay applies to action 'delay' only, not 'drop'"),
])
def test_message_numbers_and_match_fields_are_checked(tmp_path, entry, expected):
    message = _error(tmp_path, f'[[message]]\naction = "drop"\n{entry}\n')
    assert message == f"[[message]] #1: {expected}"


@pytest.mark.parametrize(("entry", "expected"), [
    ("", "action 'delay' needs delay = seconds (a number > 0)"),
    ("delay = 0", "delay must be a number > 0 (seconds), got 0"),
    ("delay = -1", "delay must be a number > 0 (seconds), got -1"),
    ("delay = inf", "delay must be a number > 0 (seconds), got inf"),
    ('delay = "2s"', "delay must be a number > 0 (seconds), got '2s'"),
])
def test_delay_action_needs_a_positive_finite_delay(tmp_path, entry, expected):
    message = _error(tmp_path, f'[[message]]\naction = "drop"\n\n[[message]]\naction = "delay"\n{entry}\n')
    assert message == f"[[message]] #2: {expected}"  # the entry number points at the bad one


@pytest.mark.parametrize(("entry", "expected"), [
    ('toxic = "latency"\nlatency_ms = -5', "latency_ms must be a number >= 0, got -5"),
    ('toxic = "latency"\nlatency_ms = nan', "latency_ms must be a number >= 0, got nan"),
    ('toxic = "latency"\nlatency_ms = 10\njitter_ms = -inf', "jitter_ms must be a number >= 0, got -inf"),
    ('toxic = "latency"', "toxic 'latency' needs latency_ms > 0"),
    ('toxic = "bandwidth"', "toxic 'bandwidth' needs rate_kbps > 0"),
    ('toxic = "bandwidth"\nrate_kbps = "fast"', "rate_kbps must be a number >= 0, got 'fast'"),
    ('toxic = "slicer"', "toxic 'slicer' needs bytes > 0"),
    ('toxic = "limit_data"\nbytes = -1', "bytes must be an integer >= 0, got -1"),
    ('toxic = "timeout"\nprobability = 2', "probability must be a number from 0 to 1, got 2"),
])
def test_link_toxic_numbers_and_parameters_are_checked(tmp_path, entry, expected):
    assert _error(tmp_path, f"[[link]]\n{entry}\n") == f"[[link]] #1: {expected}"


@pytest.mark.parametrize(("entry", "expected"), [
    ('point = "printer.out_of_papr"\ncount = 1', "unknown device fault point 'printer.out_of_papr' "
                                                 "(did you mean 'printer.out_of_paper'?)"),
    ('point = "printer.jam"', "printer.jam needs count = N, probability = p or always = true"),
    ('point = "printer.jam"\ncount = -1', "count must be an integer >= 0, got -1"),
    ('point = "printer.jam"\nprobability = nan', "probability must be a number from 0 to 1, got nan"),
    ('point = "printer.jam"\nalways = 1', "always must be true or false, got 1"),
    ('point = "printer.jam"\nalways = true\ncount = 1', "always cannot be combined with count or probability"),
])
def test_device_faults_are_checked_on_load(tmp_path, entry, expected):
    assert _error(tmp_path, f"[[device]]\n{entry}\n").startswith(f"[[device]] #1: {expected}")


@pytest.mark.parametrize(("entry", "expected"), [
    ('action = "maintenance"\nseconds = -60', "seconds must be a number > 0, got -60"),
    ('action = "maintenance"\nseconds = nan', "seconds must be a number > 0, got nan"),
    ('action = "maintenance"\nmode = 96', "mode must be a string, got 96"),
    ('action = "min_firmware"', "version must be a string like '3.0.8', got ''"),
    ('action = "merchant_changed"\ntid = "T1"', "action 'merchant_changed' needs tid and a new mid or name"),
    ('action = "hold_funds"', "action 'hold_funds' needs mid"),
])
def test_host_actions_are_checked_on_load(tmp_path, entry, expected):
    assert _error(tmp_path, f"[[host]]\n{entry}\n").startswith(f"[[host]] #1: {expected}")


def test_seed_must_be_an_integer(tmp_path):
    assert _error(tmp_path, 'seed = "7"\n') == "seed must be an integer, got '7'"


def test_a_good_plan_still_loads_under_faults_or_at_the_top(tmp_path):
    body = ('seed = 4\n[[message]]\naction = "delay"\ndelay = 0.2\nmti = "0210"\n'
            '[[link]]\ntoxic = "slicer"\nbytes = 7\n')
    for text in (body, "[faults]\n" + body.replace("[[", "[[faults.")):
        plan = _load(tmp_path, text)
        assert plan.seed == 4 and plan.message[0].delay == 0.2 and plan.link == [LinkToxic("slicer", bytes=7)]


def test_rules_built_in_python_are_checked_too():
    with pytest.raises(ValueError, match="probability must be a number from 0 to 1, got 'lots'"):
        MessageFault("drop", probability="lots")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency_ms must be a number >= 0, got -5"):
        LinkToxic("latency", latency_ms=-5)


@pytest.mark.parametrize("text", [
    '[[mesage]]\naction = "drop"\n',
    '[[message]]\naction = "drop"\nprobability = "lots"\n',
    '[[link]]\ntoxic = "latency"\nlatency_ms = -5\n',
    '[[message]]\naction = "delay"\n',
])
def test_proxy_refuses_a_bad_fault_file_at_once_with_rc_2(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "terminal", "proxy", "--listen", "tcp://127.0.0.1:6452",
                           "--upstream", "tcp://127.0.0.1:6453", "--faults", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=10,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"possim proxy: {path}: ") and "Traceback" not in done.stderr


def test_a_scenario_files_top_level_plan_is_a_file_error_not_a_traceback(tmp_path):
    from terminal.scenarios.files import ScenarioFileError, load_scenario_file

    path = tmp_path / "case.toml"
    path.write_text('name = "X"\n[faults]\n[[faults.mesage]]\naction = "drop"\n'
                    '[[steps]]\nop = "sign-in"\nexpect = { ok = true }\n')
    with pytest.raises(ScenarioFileError, match=r"case.toml \[faults\]: unknown table \[\[mesage\]\]"):
        load_scenario_file(path)
