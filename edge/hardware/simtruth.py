"""The simulator's physics (``edge.sim``, the [sim] extra) as the "true world" of the emulated chips.

One lab-scale meter (the firmware's bench rig: small panel, one Li-ion cell) is stepped in real
time, at most every ``min_step_s`` (the chips are read ~70 times a second; the physics need not be).
Each INA219 sees the simulated voltage of its channel and the current P / V; the MAX17048 sees the
cell voltage, SOC and charge rate. A channel whose simulated sensor failed reads 0 V / 0 A.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge.hardware.ina219 import Reading
from edge.hardware.max17048 import CellState

_CHANNELS = ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output")


class SimulatorTruth:
    def __init__(
        self,
        meter_id: str,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        min_step_s: float = 0.5,
    ) -> None:
        from edge.sim.engine import Simulator
        from edge.sim.fleet import Fleet, lab_spec

        self.sim = Simulator.create(Fleet((lab_spec(meter_id, seed=seed),), seed=seed))
        self.clock = clock
        self.min_step_s = min_step_s
        self._step: Any = None

    def _current(self) -> Any:
        now = self.clock()
        if self._step is None or now - self._step.epoch_s >= self.min_step_s:
            self._step = self.sim.step(now)
        return self._step

    def reading(self, channel: str) -> Reading:
        step = self._current()
        k = _CHANNELS.index(channel) if channel in _CHANNELS else -1
        if k < 0 or not bool(step.sensor_ok[0, k]):
            return Reading(0.0, 0.0)
        volts = float(step.voltage[0, k])
        power = float(step.power_w[0, k])
        return Reading(volts, power / volts if volts > 0 else 0.0)

    def cell(self) -> CellState:
        step = self._current()
        battery = self.sim.battery
        capacity_wh = float(battery.capacity_wh[0])
        crate = float(step.battery_net_w[0]) / capacity_wh * 100.0 if capacity_wh > 0 else 0.0
        volts = float(step.battery_voltage[0]) / float(battery.cells[0])
        return CellState(voltage_v=volts, soc_pct=float(battery.soc[0]), crate_pct_per_h=crate)


def default_truth(meter_id: str) -> Any:
    """The simulator's physics when the [sim] extra is installed, else the simple lab model."""
    try:
        return SimulatorTruth(meter_id)
    except ImportError:
        from edge.hardware.model import LabModel

        return LabModel()
