"""Scenarios a running simulator can switch on per meter, optionally for a duration.

Several can be active at once on one meter; ``normal`` (or the ``clear`` command) ends them all. The
names and what each does are part of the command contract: :data:`enerlink.schemas.commands.SCENARIOS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from enerlink.schemas.commands import SCENARIO_NAMES

SCENARIOS: tuple[str, ...] = SCENARIO_NAMES
ACTIVE_SCENARIOS = SCENARIOS[1:]
# INA219 channels in the order the firmware lists them (address, name, data section)
CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("0x40", "Export", "export"),
    ("0x41", "Import", "import"),
    ("0x42", "Load Smart", "load_smart_mtr"),
    ("0x43", "Load Home", "load_home"),
    ("0x44", "Solar Input", "solar_input"),
    ("0x45", "Solar Output", "solar_output"),
)
SENSOR_NAMES = {name.lower(): i for i, (_, name, _) in enumerate(CHANNELS)} | {
    section: i for i, (_, _, section) in enumerate(CHANNELS)
}
DEFAULT_FAILED_SENSOR = 4  # Solar Input
HEATWAVE_C = 45.0
DEGRADATION_FACTOR = 500.0


class ScenarioError(ValueError):
    pass


def sensor_index(name: str | None) -> int:
    if name is None:
        return DEFAULT_FAILED_SENSOR
    index = SENSOR_NAMES.get(name.strip().lower())
    if index is None:
        raise ScenarioError(f"unknown sensor {name!r}; one of {[c[1] for c in CHANNELS]}")
    return index


@dataclass(slots=True)
class ScenarioBoard:
    """Which scenario is on for which meter, and until when (epoch s of simulated time)."""

    active: npt.NDArray[np.bool_]  # (len(ACTIVE_SCENARIOS), meters)
    until: npt.NDArray[np.float64]
    failed_sensor: npt.NDArray[np.intp]

    @classmethod
    def create(cls, meters: int) -> ScenarioBoard:
        shape = (len(ACTIVE_SCENARIOS), meters)
        return cls(
            active=np.zeros(shape, dtype=np.bool_),
            until=np.full(shape, np.inf),
            failed_sensor=np.full(meters, DEFAULT_FAILED_SENSOR, dtype=np.intp),
        )

    def mask(self, name: str) -> npt.NDArray[np.bool_]:
        row: npt.NDArray[np.bool_] = self.active[ACTIVE_SCENARIOS.index(name)]
        return row

    def set(
        self, name: str, meters: npt.NDArray[np.intp], *, until: float = np.inf, sensor: str | None = None
    ) -> None:
        if name not in SCENARIOS:
            raise ScenarioError(f"unknown scenario {name!r}; one of {list(SCENARIOS)}")
        if name == "normal":
            self.clear(meters)
            return
        row = ACTIVE_SCENARIOS.index(name)
        if name == "sensor_failure":
            self.failed_sensor[meters] = sensor_index(sensor)
        self.active[row, meters] = True
        self.until[row, meters] = until

    def clear(self, meters: npt.NDArray[np.intp], name: str | None = None) -> None:
        rows = slice(None) if name in (None, "normal") else ACTIVE_SCENARIOS.index(str(name))
        self.active[rows, meters] = False
        self.until[rows, meters] = np.inf

    def expire(self, epoch_s: float) -> None:
        done = self.active & (self.until <= epoch_s)
        if done.any():
            self.active[done] = False
            self.until[done] = np.inf

    def names(self, meter: int) -> list[str]:
        return [name for row, name in enumerate(ACTIVE_SCENARIOS) if self.active[row, meter]]
