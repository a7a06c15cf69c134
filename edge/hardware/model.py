"""A deterministic "true world" for the emulated chips, when nothing better feeds them.

Lab scale, like the firmware's bench rig: a ~9 V bus, tens to hundreds of mA, one Li-ion cell.
Solar follows the sun (a half-sine from 06:00 to 18:00 local clock time), loads have a slow ripple,
export/import are what balances them, and the cell's SOC drifts with the net power. Anything that
implements :class:`TruthModel` can replace it (the simulator's physics, a CSV replay)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from enerlink.edge.hardware.ina219 import Reading
from enerlink.edge.hardware.max17048 import CellState

EXPORT, IMPORT, LOAD_SMART, LOAD_HOME, SOLAR_IN, SOLAR_OUT = (
    "export",
    "import",
    "load_smart_mtr",
    "load_home",
    "solar_input",
    "solar_output",
)


class TruthModel(Protocol):
    def reading(self, channel: str) -> Reading:
        """Bus voltage and current of the INA219 feeding data section ``channel`` (its role), now."""
        ...

    def cell(self) -> CellState: ...


@dataclass(slots=True)
class LabModel:
    bus_v: float = 8.95
    solar_peak_a: float = 0.30
    load_smart_a: float = 0.053
    load_home_a: float = 0.020
    capacity_mah: float = 1730.0
    soc_pct: float = 80.0
    clock: Callable[[], float] = time.time
    _last: float | None = field(default=None)

    def _hour(self, now: float) -> float:
        local = time.localtime(now)
        return local.tm_hour + local.tm_min / 60 + local.tm_sec / 3600

    def _flows(self, now: float) -> dict[str, float]:
        hour = self._hour(now)
        sun = max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0)) if 6.0 <= hour <= 18.0 else 0.0
        solar_in = self.solar_peak_a * sun
        solar_out = 0.92 * solar_in
        ripple = 1.0 + 0.1 * math.sin(now / 7.0)
        smart = self.load_smart_a * ripple
        home = self.load_home_a * (1.0 + 0.2 * math.sin(now / 31.0))
        net = solar_out - smart - home
        return {
            SOLAR_IN: solar_in,
            SOLAR_OUT: solar_out,
            LOAD_SMART: smart,
            LOAD_HOME: home,
            EXPORT: max(0.0, net),
            IMPORT: max(0.0, -net),
        }

    def reading(self, channel: str) -> Reading:
        now = self.clock()
        current = self._flows(now).get(channel, 0.0)
        volts = self.bus_v * (1.08 if channel == SOLAR_IN else 1.0) - 0.05 * current
        return Reading(bus_v=volts, current_a=current)

    def cell(self) -> CellState:
        now = self.clock()
        flows = self._flows(now)
        charge_ma = (flows[SOLAR_OUT] - flows[LOAD_SMART] - flows[LOAD_HOME]) * 1000 * 0.2
        if self._last is not None:
            dt_h = max(0.0, now - self._last) / 3600
            self.soc_pct = min(100.0, max(0.0, self.soc_pct + charge_ma * dt_h / self.capacity_mah * 100))
        self._last = now
        crate = charge_ma / self.capacity_mah * 100
        voltage = 3.4 + 0.8 * self.soc_pct / 100
        return CellState(voltage_v=voltage, soc_pct=self.soc_pct, crate_pct_per_h=crate)
