"""Host configuration: TOML, mappings, CLI specs and CSV; every error names the entry and the problem."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from acquirer.config import HostConfig, HostConfigError, MaintenanceWindow, RiskRules, parse_when

TMK = "0123456789ABCDEFFEDCBA9876543210"
MID = "898100012340001"

FULL = f"""
[host]
min_firmware = "3.0.2"
key_mode = "003"
durability = "full"
listen = "tcp://127.0.0.1:0"   # the runner's key: tolerated

[host.risk]
single_limit = "20000.50"
daily_count_limit = 10

[[host.merchants]]
mid = "{MID}"
name = "GOOD FOOD CAFE"
settlement_type = "T0"

[[host.terminals]]
tid = "10000001"
mid = "{MID}"
tmk = "{TMK.lower()}"

[[host.terminals]]
tid = "10000002"
mid = "{MID}"
tmk = "{TMK}"
status = "disabled"

[[host.maintenance]]
start = 2026-11-22T01:00:00+08:00
end = "2026-11-22T01:30:00+08:00"

[[host.maintenance]]
daily = "23:50-00:10"
mode = "refuse"

[host.calendar]
holidays = [2026-10-01, "2026-10-02"]
workdays = [2026-09-27]
"""


def load(tmp_path, text: str) -> HostConfig:
    path = tmp_path / "host.toml"
    path.write_text(text, "utf-8")
    return HostConfig.load(path)


def test_full_file(tmp_path):
    config = load(tmp_path, FULL)
    assert config.min_firmware == "3.0.2" and config.key_mode == "003" and config.durability == "full"
    assert config.risk == RiskRules(2_000_050, 10)
    assert config.merchants[MID].name == "GOOD FOOD CAFE" and config.merchants[MID].settlement_type == "T0"
    assert config.terminals["10000001"].tmk == TMK and config.terminals["10000001"].tmk_bytes == bytes.fromhex(TMK)
    assert config.terminals["10000002"].status == "disabled"
    first, daily = config.maintenance
    assert first.start == datetime.fromisoformat("2026-11-22T01:00:00+08:00").timestamp()
    assert first.end - first.start == 1800 and first.mode == "96"
    assert daily.daily == (23 * 60 + 50, 10) and daily.mode == "refuse"
    assert config.holidays == {date(2026, 10, 1), date(2026, 10, 2)}
    assert config.workdays == {date(2026, 9, 27)}
    assert not config.is_business_day(date(2026, 10, 1))  # holiday (Thursday)
    assert config.is_business_day(date(2026, 9, 27))  # a Sunday made a workday
    assert not config.is_business_day(date(2026, 9, 26))  # Saturday


def test_defaults_follow_the_source_documents():
    config = HostConfig()
    assert config.risk.single_limit_fen == 50_000_00 and config.risk.daily_count_limit == 500
    assert config.key_mode == "004" and config.min_firmware == "0.0.0" and config.maintenance == []


def test_mapping_without_host_wrapper_and_terminals_without_merchants():
    config = HostConfig.from_mapping({"terminals": [{"tid": "10000001", "mid": MID, "tmk": TMK}]})
    assert config.merchants[MID].settlement_type == "T1" and config.merchants[MID].name == f"MERCHANT {MID}"


def test_terminal_specs_create_t1_merchants():
    config = HostConfig.from_terminal_specs([f"10000001:{MID}:{TMK}", f"10000002:{MID}:{TMK}"])
    assert set(config.terminals) == {"10000001", "10000002"}
    assert list(config.merchants) == [MID] and config.merchants[MID].settlement_type == "T1"


def test_terminals_csv(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text(f"tid,mid,tmk\n10000001,{MID},{TMK}\n10000002,{MID},{TMK}\n", "utf-8")
    config = HostConfig()
    assert config.add_terminals_csv(path) == 2 and "10000002" in config.terminals
    path.write_text(f"tid,mid,tmk\n10000001,{MID},{TMK}\n1000002,{MID},{TMK}\n", "utf-8")
    with pytest.raises(HostConfigError, match=r"line 3: terminal '1000002': id must be 8 characters"):
        HostConfig().add_terminals_csv(path)


@pytest.mark.parametrize(("spec", "message"), [
    (f"1000001:{MID}:{TMK}", r"--terminal '1000001'.*id must be 8 characters"),
    (f"10000001:{MID[:-1]}:{TMK}", r"10000001.*merchant id '\d{14}' must be 15 characters"),
    (f"10000001:{MID}:{TMK[:-2]}", r"10000001.*tmk must be 32 hex characters"),
    (f"10000001:{MID}:{'G' * 32}", r"tmk must be 32 hex characters"),
    (f"10000001:{MID}", r"expected TID:MID:TMKHEX"),
])
def test_bad_terminal_specs(spec, message):
    with pytest.raises(HostConfigError, match=message):
        HostConfig.from_terminal_specs([spec])


@pytest.mark.parametrize(("patch", "message"), [
    ({"merchants": [{"mid": MID, "settlement_type": "T2"}]}, rf"merchants\[0\] \({MID}\).*T0 or T1.*'T2'"),
    ({"merchants": [{"name": "X"}]}, r"merchants\[0\]: missing key 'mid'"),
    ({"merchants": [{"mid": "123"}]}, r"merchants\[0\] \(123\).*15 characters"),
    ({"merchants": [{"mid": MID}, {"mid": MID}]}, rf"merchants\[1\].*{MID} is listed twice"),
    ({"merchants": [{"mid": MID, "nmae": "typo"}]}, r"merchants\[0\].*unknown key\(s\) 'nmae'"),
    ({"terminals": [{"tid": "10000001", "mid": MID}]}, r"terminals\[0\] \(10000001\): missing key 'tmk'"),
    ({"terminals": [{"tid": "10000001", "mid": MID, "tmk": TMK, "status": "paused"}]},
     r"terminals\[0\] \(10000001\).*active or disabled"),
    ({"terminals": [{"tid": "10000001", "mid": MID, "tmk": TMK}] * 2}, r"terminals\[1\].*listed twice"),
    ({"merchants": [{"mid": MID}], "terminals": [{"tid": "10000001", "mid": "898100099990001", "tmk": TMK}]},
     r"terminals\[0\] \(10000001\): merchant 898100099990001 is not among the merchants listed"),
    ({"min_firmware": "three"}, r"min_firmware.*not a version"),
    ({"key_mode": "002"}, r"key_mode: must be 001, 003 or 004"),
    ({"durability": "sometimes"}, r"durability"),
    ({"risk": {"single_limit": "12.345"}}, r"risk.single_limit.*two decimals"),
    ({"risk": {"single_limit": "lots"}}, r"risk.single_limit"),
    ({"risk": {"daily_count_limit": -1}}, r"risk.daily_count_limit.*>= 0"),
    ({"risk": {"single_limit": "1.00", "single_limit_fen": 100}}, r"not both"),
    ({"maintenance": [{"start": 10, "end": 5}]}, r"maintenance\[0\].*ends before it starts"),
    ({"maintenance": [{"start": 10}]}, r"maintenance\[0\].*missing key 'end'"),
    ({"maintenance": [{"start": 0, "end": 10, "mode": "97"}]}, r"maintenance\[0\].*'96' or 'refuse'"),
    ({"maintenance": [{"daily": "25:00-01:00"}]}, r"maintenance\[0\].*not a valid time range"),
    ({"maintenance": [{"daily": "soon"}]}, r"maintenance\[0\].*HH:MM-HH:MM"),
    ({"maintenance": [{"start": "tomorrow", "end": 5}]}, r"maintenance\[0\].*'tomorrow' is not a time"),
    ({"holidays": ["2026-13-01"]}, r"holidays\[0\].*not a date"),
    ({"calendar": {"holidays": ["2026-10-01"], "workdays": ["2026-10-01"]}}, r"both a holiday and a workday"),
    ({"colour": "red"}, r"\[host\]: unknown key\(s\) 'colour'"),
    ({"merchants": {"mid": MID}}, r"merchants: must be an array"),
])
def test_validation_errors_name_the_entry(patch, message):
    with pytest.raises(HostConfigError, match=message):
        HostConfig.from_mapping({"host": patch}, source="host.toml")


def test_file_errors(tmp_path):
    with pytest.raises(HostConfigError, match="cannot read"):
        HostConfig.load(tmp_path / "missing.toml")
    with pytest.raises(HostConfigError, match="not valid TOML"):
        load(tmp_path, "[host\n")


def test_maintenance_windows_absolute_and_daily():
    window = MaintenanceWindow(100.0, 200.0)
    assert window.active(100) and window.active(199.9) and not window.active(200) and not window.active(99)
    assert window.ends_at(150) == 200 and window.ends_at(250) is None
    night = MaintenanceWindow(mode="refuse", daily=(23 * 60 + 50, 10))
    at = datetime(2026, 11, 22, 23, 55).timestamp()
    assert night.active(at) and night.active(datetime(2026, 11, 23, 0, 5).timestamp())
    assert not night.active(datetime(2026, 11, 23, 0, 10).timestamp())
    assert not night.active(datetime(2026, 11, 22, 12, 0).timestamp())
    assert night.ends_at(at) == pytest.approx(datetime(2026, 11, 23, 0, 10).timestamp())
    assert MaintenanceWindow(mode="96", daily=(60, 90)).as_dict() == {"daily": "01:00-01:30", "mode": "96"}


def test_parse_when():
    assert parse_when(12.5) == 12.5 and parse_when("12") == 12.0
    assert parse_when("2026-11-22T00:00:00+00:00") == datetime.fromisoformat("2026-11-22T00:00:00+00:00").timestamp()
    with pytest.raises(HostConfigError):
        parse_when(True)
