"""Battery: drain on the (virtual) clock and per operation, charging, low/critical flags, power loss."""

from __future__ import annotations

import asyncio
import random

import pytest

from terminal.hardware import Battery


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


HOUR = 3600.0


def battery(clock: FakeClock, **kwargs) -> Battery:
    return Battery(clock=clock, rng=random.Random(0), **kwargs)


def test_idle_drain_follows_the_clock():
    clock = FakeClock()
    b = battery(clock, level=80, idle_drain_per_hour=2.0)
    clock.advance(5 * HOUR)
    assert b.update().level == pytest.approx(70.0)
    clock.advance(0.5 * HOUR)
    assert b.level == pytest.approx(69.0)
    clock.advance(100 * HOUR)
    assert b.level == 0.0
    assert not b.powered
    assert not b.status().powered


def test_low_and_critical_flags():
    clock = FakeClock()
    b = battery(clock, level=51, idle_drain_per_hour=1.0, low=50, critical=10)
    status = b.status()
    assert not status.low and not status.critical and status.can_transact
    clock.advance(2 * HOUR)  # 49%: below the source's "keep it at 50% or more"
    status = b.status()
    assert status.low and not status.critical and status.can_transact
    clock.advance(40 * HOUR)  # 9%
    status = b.status()
    assert status.low and status.critical and not status.can_transact
    assert status.powered


def test_operations_cost_more_for_printing_than_swiping():
    clock = FakeClock()
    b = battery(clock, idle_drain_per_hour=0)
    assert b.op_cost("print_line") * 30 > b.op_cost("swipe")
    b.consume("swipe")
    b.consume("print_line", 40)
    assert b.level == pytest.approx(100 - b.op_cost("swipe") - 40 * b.op_cost("print_line"))
    with pytest.raises(KeyError, match="unknown battery operation 'dance'"):
        b.consume("dance")


def test_custom_operation_costs():
    b = battery(FakeClock(), idle_drain_per_hour=0, op_costs={"swipe": 1.0})
    b.consume("swipe", 3)
    assert b.level == pytest.approx(97.0)
    with pytest.raises(ValueError):
        battery(FakeClock(), op_costs={"swipe": -1})


def test_charging_on_the_clock_and_unplugging():
    clock = FakeClock()
    b = battery(clock, level=20, charge_per_hour=30, idle_drain_per_hour=2)
    b.plug_in()
    clock.advance(2 * HOUR)
    status = b.status()
    assert status.charging and status.level == pytest.approx(80.0)
    clock.advance(10 * HOUR)
    assert b.level == 100.0
    assert b.hours_left() is None
    b.unplug()
    clock.advance(HOUR)
    assert b.level == pytest.approx(98.0)
    assert b.hours_left() == pytest.approx(49.0)
    assert b.hours_to_critical() == pytest.approx(44.0)


def test_mains_power_keeps_an_empty_battery_running():
    clock = FakeClock()
    b = battery(clock, level=0, plugged_in=True)
    assert b.powered
    b.unplug()
    assert not b.powered


def test_power_loss_fault_cuts_power_until_power_on():
    clock = FakeClock()
    b = battery(clock, level=90)
    b.faults["power_loss"].arm(count=1)
    assert b.status().powered  # status() never checks the fault
    status = b.update()
    assert not status.powered and not status.can_transact
    assert b.power_losses == 1
    assert b.level == pytest.approx(90.0)  # a cut is not a drained battery
    assert not b.update().powered
    assert b.power_on()
    assert b.update().powered


def test_set_level_and_validation():
    b = battery(FakeClock())
    b.set_level(9.5)
    assert b.status().critical
    with pytest.raises(ValueError):
        b.set_level(101)
    with pytest.raises(ValueError):
        battery(FakeClock(), low=5, critical=10)


@pytest.mark.looptime
async def test_battery_drains_on_the_event_loop_clock():
    loop = asyncio.get_running_loop()
    b = Battery(clock=loop.time, level=100, idle_drain_per_hour=2.0)
    await asyncio.sleep(10 * HOUR)  # virtual: returns at once
    assert b.status().level == pytest.approx(80.0)


def test_operations_on_mains_cost_the_battery_nothing():
    clock = FakeClock()
    b = battery(clock, level=40, plugged_in=True, charge_per_hour=0, op_costs={"network": 5.0})
    for _ in range(100):  # a busy day on the charging base: no drain, never critical
        b.consume("network")
    assert b.level == pytest.approx(40.0)
    b.unplug()
    b.consume("network")
    assert b.level == pytest.approx(35.0)
