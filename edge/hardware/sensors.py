"""The meter's sensors read through the real Adafruit drivers, with loss and recovery.

A sensor that does not answer at start-up, or stops answering, is marked ``connected: False`` (its
data section says ``valid: false``), an event is recorded for the status topic, and the others keep
being read; every ``retry_s`` the missing ones are probed again and picked up when they answer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Kind = Literal["ina219", "max17048"]


@dataclass(frozen=True, slots=True)
class SensorSpec:
    address: int
    name: str
    kind: Kind = "ina219"
    shunt_ohm: float = 0.1
    max_current_a: float = 3.2
    """Largest expected current; sets the current LSB (3.2 A on 0.1 ohm = the driver's 0.1 mA)."""
    role: str = ""
    """The data message section it feeds (export, import, load_smart_mtr, load_home, solar_input,
    solar_output, battery); by default taken from the address (0x40..0x45, 0x36)."""

    def __post_init__(self) -> None:
        if not self.role:
            object.__setattr__(self, "role", DEFAULT_ROLES.get(self.address, self.name.lower()))


DEFAULT_ROLES = {
    0x40: "export",
    0x41: "import",
    0x42: "load_smart_mtr",
    0x43: "load_home",
    0x44: "solar_input",
    0x45: "solar_output",
    0x36: "battery",
}
DEFAULT_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec(0x40, "Export"),
    SensorSpec(0x41, "Import"),
    SensorSpec(0x42, "Load Smart"),
    SensorSpec(0x43, "Load Home"),
    SensorSpec(0x44, "Solar Input"),
    SensorSpec(0x45, "Solar Output"),
    SensorSpec(0x36, "Battery Fuel Gauge", kind="max17048"),
)


def parse_sensors(text: str) -> tuple[SensorSpec, ...]:
    """``"0x40=Export:0.1:3.2,0x41=Import@import,0x36=Battery Fuel Gauge@max17048"`` -> specs.

    Each item: ``address=name`` with optional ``:shunt_ohm[:max_current_a]`` for INA219s, then
    optional ``@role`` (a data section name, or ``max17048`` for the gauge); without a role the
    address decides (0x40 export ... 0x45 solar_output, 0x36 the gauge)."""
    specs: list[SensorSpec] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        address_text, _, rest = item.partition("=")
        rest, _, role = rest.partition("@")
        address = int(address_text, 0)
        kind: Kind = "ina219"
        if role in ("max17048", "battery") or (not role and DEFAULT_ROLES.get(address) == "battery"):
            kind, role = "max17048", "battery"
        name, *numbers = rest.split(":")
        shunt = float(numbers[0]) if numbers else 0.1
        max_a = float(numbers[1]) if len(numbers) > 1 else 3.2
        specs.append(SensorSpec(address, name.strip() or address_text, kind, shunt, max_a, role))
    return tuple(specs)


@dataclass(frozen=True, slots=True)
class InaSample:
    voltage_v: float
    current_ma: float
    power_mw: float
    """Signed: the chip's power register (always positive) with the current's sign."""
    overflow: bool


@dataclass(frozen=True, slots=True)
class GaugeSample:
    voltage_v: float
    soc_pct: float
    charge_rate: float
    alert: bool


@dataclass(frozen=True, slots=True)
class SensorEvent:
    kind: Literal["sensor_lost", "sensor_recovered", "sensor_missing"]
    name: str
    address: int
    reason: str
    at: float


def import_drivers() -> tuple[Any, Any]:
    """The Adafruit driver modules. On a Pi, Blinka needs gpiod 2.x and raises RuntimeError (not
    ImportError) from its dependency check unless ``BLINKA_SKIP_DEPENDENCY_CHECK`` is set."""
    os.environ.setdefault("BLINKA_SKIP_DEPENDENCY_CHECK", "1")
    try:
        import adafruit_ina219  # the [edge] extra's drivers: a Pi only
        import adafruit_max1704x
    except (ImportError, RuntimeError) as exc:
        raise RuntimeError(f"the sensor drivers cannot be imported: {exc}") from exc
    return adafruit_ina219, adafruit_max1704x


def _calibrate(driver: Any, spec: SensorSpec) -> None:
    """Program the calibration for this shunt (datasheet 8.5.1): Cal = trunc(0.04096 / (LSB x R))."""
    if math.isclose(spec.shunt_ohm, 0.1) and math.isclose(spec.max_current_a, 3.2):
        return  # the driver's default (32 V, 2 A range, 0.1 mA LSB, Cal 4096) already fits
    lsb_a = spec.max_current_a / 32768
    lsb_a = math.ceil(lsb_a * 1e6) / 1e6  # a round number of uA
    cal = min(0xFFFE, int(0.04096 / (lsb_a * spec.shunt_ohm))) & 0xFFFE
    driver._cal_value = cal
    driver._current_lsb = lsb_a * 1000  # mA per bit
    driver._power_lsb = 20 * lsb_a  # W per bit
    driver._raw_calibration = cal


@dataclass
class Sensor:
    spec: SensorSpec
    driver: Any = None
    connected: bool = False
    last_error: str = ""
    next_probe: float = 0.0
    failures: int = 0

    def inventory(self) -> dict[str, Any]:
        return {"address": f"0x{self.spec.address:02x}", "name": self.spec.name, "connected": self.connected}


@dataclass
class SensorArray:
    bus: Any
    specs: tuple[SensorSpec, ...] = DEFAULT_SENSORS
    retry_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sensors: dict[str, Sensor] = field(default_factory=dict)
    events: list[SensorEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ina219, self._max1704x = import_drivers()
        for spec in self.specs:
            self.sensors[spec.name] = Sensor(spec)

    def start(self) -> None:
        for sensor in self.sensors.values():
            if not self._open(sensor) and sensor.spec is not None:
                self._event("sensor_missing", sensor)

    def _open(self, sensor: Sensor) -> bool:
        spec = sensor.spec
        try:
            if spec.kind == "ina219":
                driver = self._ina219.INA219(self.bus, spec.address)
                _calibrate(driver, spec)
            else:
                driver = self._max1704x.MAX17048(self.bus, spec.address)
        except (OSError, ValueError, RuntimeError) as exc:
            sensor.driver, sensor.connected, sensor.last_error = None, False, str(exc)
            sensor.next_probe = self.clock() + self.retry_s
            return False
        sensor.driver, sensor.connected, sensor.last_error, sensor.failures = driver, True, "", 0
        return True

    def _event(
        self, kind: Literal["sensor_lost", "sensor_recovered", "sensor_missing"], sensor: Sensor
    ) -> None:
        event = SensorEvent(kind, sensor.spec.name, sensor.spec.address, sensor.last_error, time.time())
        self.events.append(event)
        level = logging.INFO if kind == "sensor_recovered" else logging.WARNING
        log.log(level, "%s: %s at 0x%02x %s", kind, sensor.spec.name, sensor.spec.address, sensor.last_error)

    def _lost(self, sensor: Sensor, exc: Exception) -> None:
        sensor.connected, sensor.driver, sensor.last_error = False, None, str(exc)
        sensor.failures += 1
        sensor.next_probe = self.clock() + self.retry_s
        self._event("sensor_lost", sensor)

    def probe_missing(self) -> None:
        """Try the sensors that are down and due for a probe; re-initialise those that answer."""
        now = self.clock()
        for sensor in self.sensors.values():
            if not sensor.connected and now >= sensor.next_probe and self._open(sensor):
                self._event("sensor_recovered", sensor)

    def read_ina(self, name: str) -> InaSample | None:
        sensor = self.sensors[name]
        if not sensor.connected:
            return None
        try:
            driver = sensor.driver
            volts = float(driver.bus_voltage)
            current = float(driver.current)
            power_mw = math.copysign(float(driver.power) * 1000.0, current)
            overflow = bool(driver.overflow)
        except (OSError, ValueError) as exc:
            self._lost(sensor, exc)
            return None
        return InaSample(volts, current, power_mw, overflow)

    def read_gauge(self, name: str) -> GaugeSample | None:
        sensor = self.sensors[name]
        if not sensor.connected:
            return None
        try:
            driver = sensor.driver
            sample = GaugeSample(
                float(driver.cell_voltage),
                float(driver.cell_percent),
                float(driver.charge_rate),
                bool(driver.active_alert),
            )
        except (OSError, ValueError) as exc:
            self._lost(sensor, exc)
            return None
        return sample

    def ina_names(self) -> list[str]:
        return [s.spec.name for s in self.sensors.values() if s.spec.kind == "ina219"]

    def gauge_names(self) -> list[str]:
        return [s.spec.name for s in self.sensors.values() if s.spec.kind == "max17048"]

    def drain_events(self) -> list[SensorEvent]:
        events, self.events = self.events, []
        return events

    def inventory(self) -> dict[str, Any]:
        ina = [s.inventory() for s in self.sensors.values() if s.spec.kind == "ina219"]
        gauges = [s.inventory() for s in self.sensors.values() if s.spec.kind == "max17048"]
        return {
            "total_count": sum(1 for s in self.sensors.values() if s.connected),
            "ina219": ina,
            "max17048": gauges,
            "ina219_count": sum(1 for s in ina if s["connected"]),
            "max17048_count": sum(1 for s in gauges if s["connected"]),
        }
