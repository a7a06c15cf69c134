"""The real Adafruit drivers against the register-level chip emulations, sensor loss/recovery,
sampling statistics and trapezoidal energy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enerlink.edge.hardware.bus import EmulatedBus
from enerlink.edge.hardware.ina219 import BUS, CONFIG_RESET, EmulatedINA219, Reading
from enerlink.edge.hardware.max17048 import CellState, EmulatedMAX17048
from enerlink.edge.hardware.sampler import Sampler
from enerlink.edge.hardware.sensors import SensorArray, SensorSpec, import_drivers, parse_sensors

ina219_driver, max1704x_driver = import_drivers()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Truth:
    def __init__(self, volts: float = 9.0, amps: float = 0.05) -> None:
        self.volts, self.amps = volts, amps

    def __call__(self) -> Reading:
        return Reading(self.volts, self.amps)


def _ina(truth: Truth, *, shunt_ohm: float = 0.1) -> tuple[EmulatedBus, EmulatedINA219, FakeClock, object]:
    clock = FakeClock()
    bus = EmulatedBus()
    chip = EmulatedINA219(truth, shunt_ohm=shunt_ohm, clock=clock)
    bus.add(0x40, chip)
    driver = ina219_driver.INA219(bus, 0x40)
    return bus, chip, clock, driver


def _read(driver: object, clock: FakeClock) -> tuple[float, float, float]:
    clock.advance(0.01)  # past one conversion time
    return driver.bus_voltage, driver.current, driver.power  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(volts=st.floats(0.0, 32.0), amps=st.floats(-3.2, 3.2))
def test_ina219_driver_reads_back_what_the_chip_encodes(volts: float, amps: float) -> None:
    truth = Truth(volts, amps)
    _, _, clock, driver = _ina(truth)
    bus_v, current_ma, power_w = _read(driver, clock)
    assert abs(bus_v - volts) <= 0.002 + 1e-9  # 4 mV LSB, rounded
    # shunt LSB 10 uV on 0.1 ohm = 0.1 mA, current LSB 0.1 mA: within two LSBs
    assert abs(current_ma - amps * 1000) <= 0.2 + 1e-9
    assert math.copysign(1, current_ma) == math.copysign(1, amps) or abs(amps) < 0.0002
    # power register = |current| x bus / 5000 counts of 2 mW
    assert abs(power_w * 1000 - abs(current_ma) * bus_v) <= 2.0 + abs(current_ma) * 0.004 + 1e-6
    assert not driver.overflow  # type: ignore[attr-defined]


def test_ina219_negative_current_and_shunt_voltage() -> None:
    _, chip, clock, driver = _ina(Truth(12.0, -1.25))
    _bus_v, current_ma, power_w = _read(driver, clock)
    assert current_ma == pytest.approx(-1250.0, abs=0.1)
    assert driver.shunt_voltage == pytest.approx(-0.125, abs=1e-5)  # type: ignore[attr-defined]
    assert chip.register(1) == (-12500) & 0xFFFF  # two's complement in the register
    assert power_w == pytest.approx(1.25 * 12.0, abs=0.004)  # power register is a magnitude


def test_ina219_overflow_bit_and_clipping() -> None:
    truth = Truth(9.0, 5.0)  # 500 mV across 0.1 ohm > the 320 mV PGA range
    _, _chip, clock, driver = _ina(truth)
    _, current_ma, _ = _read(driver, clock)
    assert driver.overflow  # type: ignore[attr-defined]
    assert current_ma == pytest.approx(3200.0, abs=0.1)  # clipped at full scale
    assert driver.shunt_voltage == pytest.approx(0.32)  # type: ignore[attr-defined]
    truth.amps = 1.0
    _, current_ma, _ = _read(driver, clock)
    assert not driver.overflow and current_ma == pytest.approx(1000.0, abs=0.1)  # type: ignore[attr-defined]
    truth.volts = 40.0  # beyond the 32 V range: the register saturates
    bus_v, _, _ = _read(driver, clock)
    assert bus_v == pytest.approx(32.0, abs=0.004)


def test_ina219_conversion_ready_cleared_by_power_read_and_calibration_gates_current() -> None:
    _, chip, clock, driver = _ina(Truth(5.0, 0.5))
    clock.advance(0.01)
    assert driver.bus_voltage == pytest.approx(5.0, abs=0.004)  # type: ignore[attr-defined]
    assert driver.conversion_ready  # type: ignore[attr-defined]
    _ = driver.power  # type: ignore[attr-defined]
    assert not driver.conversion_ready  # type: ignore[attr-defined]
    chip.calibration = 0
    assert chip.register(4) == 0 and chip.register(3) == 0  # no calibration: no current/power
    assert chip.register(BUS) >> 3 == round(5.0 / 0.004)
    chip.write(bytes([0x00, 0x80, 0x00]))  # RST
    assert chip.config == CONFIG_RESET and chip.calibration == 0


def test_ina219_power_down_holds_registers() -> None:
    truth = Truth(5.0, 0.5)
    _, chip, clock, driver = _ina(truth)
    _read(driver, clock)
    chip.write(bytes([0x00, 0x39, 0x98]))  # MODE 000 power-down, rest unchanged
    truth.amps = 1.5
    _, current_ma, _ = _read(driver, clock)
    assert current_ma == pytest.approx(500.0, abs=0.1)


def test_ina219_custom_shunt_calibration_through_sensor_array() -> None:
    truth = Truth(24.0, 8.0)  # 8 A through a 10 mOhm shunt = 80 mV
    bus = EmulatedBus()
    bus.add(0x40, EmulatedINA219(truth, shunt_ohm=0.01))
    array = SensorArray(bus, (SensorSpec(0x40, "Import", shunt_ohm=0.01, max_current_a=10.0),))
    array.start()
    sample = array.read_ina("Import")
    assert sample is not None
    assert sample.current_ma == pytest.approx(8000.0, abs=2.0)  # LSB 0.306 mA here
    assert sample.power_mw == pytest.approx(8.0 * 24.0 * 1000, rel=0.002)


@settings(max_examples=60, deadline=None)
@given(
    volts=st.floats(2.5, 4.5),
    soc=st.floats(0.0, 100.0),
    crate=st.floats(-100.0, 100.0),
)
def test_max17048_driver_reads_back(volts: float, soc: float, crate: float) -> None:
    bus = EmulatedBus()
    chip = EmulatedMAX17048(lambda: CellState(volts, soc, crate))
    bus.add(0x36, chip)
    driver = _gauge(bus)
    assert abs(driver.cell_voltage - volts) <= 78.125e-6 / 2 + 1e-9
    assert abs(driver.cell_percent - soc) <= 1 / 512 + 1e-9
    assert abs(driver.charge_rate - crate) <= 0.104 + 1e-9


def _gauge(bus: EmulatedBus) -> object:
    """The driver's reset sleeps 0.192 s; build it once per bus."""
    driver = max1704x_driver.MAX17048.__new__(max1704x_driver.MAX17048)
    from adafruit_bus_device import i2c_device

    driver.i2c_device = i2c_device.I2CDevice(bus, 0x36)
    return driver


def test_max17048_driver_init_resets_chip_and_clears_flags() -> None:
    bus = EmulatedBus()
    chip = EmulatedMAX17048(lambda: CellState(3.9, 75.0, -2.0))
    chip.memory[0x06] |= 0x20  # EnSleep set
    chip.memory[0x0D] |= 0x80  # CONFIG.SLEEP set
    bus.add(0x36, chip)
    driver = max1704x_driver.MAX17048(bus, 0x36)
    assert chip.resets == 2  # power-on + the driver's 0x5400 to CMD (which the chip NACKs)
    assert not driver.reset_alert and chip.memory[0x1A] & 0x01 == 0
    assert not driver.enable_sleep and not driver.sleep
    assert driver.chip_version & 0xFFF0 == 0x0010
    assert driver.chip_id == 0x96
    driver.voltage_alert_min = 3.3
    assert chip.memory[0x14] == round(3.3 / 0.02)


def test_max17048_wrong_version_is_rejected_by_the_driver() -> None:
    bus = EmulatedBus()
    chip = EmulatedMAX17048(lambda: CellState(3.9, 75.0, 0.0))
    chip.memory[0x08], chip.memory[0x09] = 0x00, 0x20
    bus.add(0x36, chip)
    with pytest.raises(RuntimeError, match="MAX1704X"):
        max1704x_driver.MAX17048(bus, 0x36)


def test_sensor_vanishes_and_comes_back() -> None:
    bus = EmulatedBus()
    specs = parse_sensors("0x40=Export,0x44=Solar Input")
    for spec in specs:
        bus.add(spec.address, EmulatedINA219(Truth(9.0, 0.1)))
    bus.detach(0x44)  # absent at start-up
    array = SensorArray(bus, specs, retry_s=0.0)
    array.start()
    assert [e.kind for e in array.drain_events()] == ["sensor_missing"]
    assert array.read_ina("Solar Input") is None and array.read_ina("Export") is not None
    assert array.inventory()["ina219_count"] == 1
    bus.attach(0x44)
    array.probe_missing()
    assert [e.kind for e in array.drain_events()] == ["sensor_recovered"]
    assert array.read_ina("Solar Input") is not None
    bus.detach(0x40)  # stops answering mid-run
    assert array.read_ina("Export") is None
    events = array.drain_events()
    assert [(e.kind, e.name) for e in events] == [("sensor_lost", "Export")]
    assert "Remote I/O" in events[0].reason
    inventory = array.inventory()
    assert inventory["ina219"][0] == {"address": "0x40", "name": "Export", "connected": False}
    bus.attach(0x40)
    array.probe_missing()
    assert array.read_ina("Export") is not None


def test_parse_sensors_roles_and_calibration() -> None:
    specs = parse_sensors("0x40=Grid Out:0.01:10@export,0x41=Grid In,0x36=Gauge")
    assert specs[0].role == "export" and specs[0].shunt_ohm == 0.01 and specs[0].max_current_a == 10.0
    assert specs[1].role == "import" and specs[1].shunt_ohm == 0.1
    assert specs[2].kind == "max17048" and specs[2].role == "battery"


def test_sampler_stats_and_trapezoidal_energy() -> None:
    """A power ramp sampled at 10 Hz: trapezoids integrate a line exactly, while one instantaneous
    value per interval (what a naive meter does) is off by half the ramp."""
    clock = FakeClock()
    truth = Truth(10.0, 0.0)
    bus = EmulatedBus()
    bus.add(0x40, EmulatedINA219(truth, clock=clock))
    array = SensorArray(bus, (SensorSpec(0x40, "Import"),))
    array.start()
    sampler = Sampler(array, rate_hz=10.0)
    for k in range(51):  # 0..5 s, current ramps 0 -> 1 A at 10 V: 0 -> 10 W
        truth.amps = k / 50
        clock.advance(0.1)
        sampler.sample(k * 0.1)
    interval = sampler.harvest(5.0)
    summary = interval.channels["Import"]
    exact_wh = 0.5 * 10.0 * 5.0 / 3600  # area of the triangle: 25 J
    assert summary.count == 51
    assert summary.energy_wh == pytest.approx(exact_wh, rel=0.002)
    naive_wh = summary.max_power / 1000 * 5.0 / 3600
    assert abs(naive_wh - exact_wh) > 0.9 * exact_wh
    assert summary.power == pytest.approx(5000.0, rel=0.002)  # mean of the ramp, mW
    assert summary.min_power == pytest.approx(0.0, abs=2) and summary.max_power == pytest.approx(10000, abs=2)
    assert summary.stats()["samples"] == 51
    # The next interval continues from the last sample: no energy lost between intervals.
    clock.advance(0.1)
    sampler.sample(5.1)
    assert sampler.harvest(5.1).channels["Import"].energy_wh == pytest.approx(10.0 * 0.1 / 3600, rel=0.01)


def test_sampler_does_not_bridge_a_sensor_gap() -> None:
    clock = FakeClock()
    truth = Truth(10.0, 1.0)
    bus = EmulatedBus()
    bus.add(0x40, EmulatedINA219(truth, clock=clock))
    array = SensorArray(bus, (SensorSpec(0x40, "Import"),), retry_s=0.0)
    array.start()
    sampler = Sampler(array)
    for k in range(11):
        clock.advance(0.1)
        sampler.sample(k * 0.1)
    bus.detach(0x40)
    for k in range(11, 31):
        clock.advance(0.1)
        sampler.sample(k * 0.1)
    bus.attach(0x40)
    for k in range(31, 42):
        clock.advance(0.1)
        sampler.sample(k * 0.1)
    summary = sampler.harvest(4.1).channels["Import"]
    # 1 s before the gap + 1 s after it (the recovery sample starts a new segment)
    assert summary.energy_wh == pytest.approx(10.0 * 1.9 / 3600, rel=0.06)
