"""The simulator's physics as the "true world" behind the emulated chips (``--emulate-hardware``).

Implements ``enerlink.edge.hardware.model.TruthModel``: each INA219 channel reads the bus voltage and
current of one simulated lab-scale meter, the MAX17048 its cell; the physics advances at most
once per ``step_s`` of wall-clock time however often the 10 Hz sampler asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from enerlink.edge.hardware.ina219 import Reading
from enerlink.edge.hardware.max17048 import CellState
from enerlink.edge.sim.engine import Simulator, Step
from enerlink.edge.sim.fleet import Fleet, lab_spec
from enerlink.edge.sim.scenarios import SENSOR_NAMES


@dataclass(slots=True)
class SimTruth:
    sim: Simulator
    step_s: float = 1.0
    clock: Callable[[], float] = time.time
    _step: Step | None = field(default=None)

    @classmethod
    def lab(cls, meter_id: str = "METER001", *, seed: int = 0) -> SimTruth:
        return cls(Simulator.create(Fleet(meters=(lab_spec(meter_id, seed=seed or 1),), seed=seed)))

    def _current(self) -> Step:
        now = self.clock()
        if self._step is None or now - self._step.epoch_s >= self.step_s:
            self._step = self.sim.step(now)
        return self._step

    def reading(self, channel: str) -> Reading:
        step = self._current()
        index = SENSOR_NAMES.get(channel.strip().lower())
        if index is None:
            return Reading(bus_v=0.0, current_a=0.0)
        volts = float(step.voltage[0, index])
        power = float(step.power_w[0, index])
        return Reading(bus_v=volts, current_a=power / volts if volts > 0 else 0.0)

    def cell(self) -> CellState:
        step = self._current()
        battery = self.sim.battery
        rate = float(step.battery_net_w[0] / battery.capacity_wh[0] * 100.0)
        return CellState(
            voltage_v=float(step.battery_voltage[0]), soc_pct=float(battery.soc[0]), crate_pct_per_h=rate
        )
