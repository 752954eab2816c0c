"""Fault points: arming by count, probability and always; the per-device collection; the catalogue."""

from __future__ import annotations

import random

import pytest

from terminal.hardware import Hardware, HardwareProfile
from terminal.hardware.faults import FaultPoint, FaultPoints, catalogue, fault_point_names


def test_disarmed_point_never_fires_and_draws_nothing():
    rng = random.Random(1)
    point = FaultPoint("reader.read_error", rng)
    state = rng.getstate()
    assert not any(point.fires() for _ in range(100))
    assert rng.getstate() == state
    assert point.fired == 0
    assert not point.armed


def test_count_fires_next_n_then_disarms():
    point = FaultPoint("reader.read_error", random.Random(1)).arm(count=3)
    assert point.armed and point.remaining == 3
    assert [point.fires() for _ in range(5)] == [True, True, True, False, False]
    assert point.fired == 3
    assert not point.armed


def test_always_fires_until_disarmed():
    point = FaultPoint("printer.jam").arm(always=True)
    assert all(point.fires() for _ in range(10))
    point.disarm()
    assert not point.fires()
    assert point.fired == 10


def test_probability_is_seeded_and_roughly_right():
    def run(seed: int) -> list[bool]:
        point = FaultPoint("x.y", random.Random(seed)).arm(probability=0.3)
        return [point.fires() for _ in range(2000)]

    first = run(42)
    assert first == run(42)  # reproducible
    assert 0.25 < sum(first) / len(first) < 0.35


def test_count_and_probability_fire_at_most_count_times():
    point = FaultPoint("x.y", random.Random(3)).arm(count=2, probability=0.5)
    hits = sum(point.fires() for _ in range(100))
    assert hits == 2
    assert not point.armed


def test_rearming_replaces_the_previous_mode():
    point = FaultPoint("x.y", random.Random(3)).arm(always=True)
    point.arm(count=1)
    assert [point.fires(), point.fires()] == [True, False]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"always": True, "count": 1},
        {"probability": 1.5},
        {"probability": -0.1},
        {"count": -1},
        {"count": True},
        {"count": 1, "param": -2},
    ],
)
def test_bad_arming_is_a_precise_error(kwargs):
    with pytest.raises(ValueError, match=r"x\.y"):
        FaultPoint("x.y", random.Random(0)).arm(**kwargs)


def test_probability_needs_an_rng():
    with pytest.raises(ValueError, match="rng"):
        FaultPoint("x.y").arm(probability=0.5)
    FaultPoint("x.y").arm(probability=1.0)  # certain: no draw needed


def test_describe_reports_mode_and_counts():
    point = FaultPoint("x.y", random.Random(0)).arm(count=2, param=7)
    point.fires()
    assert point.describe() == {"armed": True, "mode": "count", "fired": 1, "remaining": 1, "param": 7}


def test_collection_is_lazy_and_checks_names():
    faults = FaultPoints("reader", ("read_error", "no_card"), random.Random(0))
    assert faults.get("read_error") is None
    assert not faults.fires("read_error")  # never touched: no object created
    assert faults.get("read_error") is None
    faults["read_error"].arm(count=1)
    assert faults.fires("read_error")
    with pytest.raises(KeyError, match=r"read_eror.*read_error, no_card"):
        faults["read_eror"]
    assert [p.name for p in faults] == ["reader.read_error", "reader.no_card"]
    assert faults.describe()["reader.read_error"]["fired"] == 1
    assert faults.describe()["reader.no_card"] == {"armed": False, "mode": "off", "fired": 0}


def test_catalogue_lists_every_fault_point_of_a_terminal():
    names = fault_point_names()
    for expected in (
        "reader.read_error",
        "reader.no_card",
        "printer.out_of_paper",
        "printer.jam",
        "printer.fail_after_lines",
        "battery.power_loss",
        "signature.refuse",
        "signature.timeout",
    ):
        assert expected in names
    assert all(isinstance(text, str) and text for text in catalogue().values())
    hw = Hardware(HardwareProfile(), clock=lambda: 0.0)
    assert sorted(hw.all_fault_points()) == list(names)
    assert all(point.name == name for name, point in hw.all_fault_points().items())


def test_hardware_fault_lookup_by_full_name():
    hw = Hardware(clock=lambda: 0.0)
    assert hw.fault("printer.jam") is hw.printer.faults["jam"]
    with pytest.raises(KeyError, match=r"printer\.jamm"):
        hw.fault("printer.jamm")
    hw.fault("printer.jam").arm(always=True)
    hw.fault("reader.read_error").arm(count=2)
    assert hw.diagnostics()["faults_armed"] == ["printer.jam", "reader.read_error"]
    hw.disarm_all()
    assert hw.diagnostics()["faults_armed"] == []
