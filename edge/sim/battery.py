"""Battery packs of a fleet, vectorised: energy, OCV-SOC voltage, efficiency, C-rate limits,
temperature, ageing (cycles and calendar, Arrhenius), all as numpy arrays (one entry per meter).

``home`` packs are 16-cell LFP (51.2 V nominal); the ``lab`` rig is one Li-ion (NMC) cell behind a
MAX17048, 1.7 Ah. Stored energy is the state; SOC = energy / (nominal capacity x state of health).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SOC_POINTS = np.array([0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], dtype=np.float64)
OCV_LFP = np.array([2.80, 3.05, 3.18, 3.24, 3.27, 3.29, 3.30, 3.31, 3.32, 3.34, 3.36, 3.40, 3.55])
OCV_NMC = np.array([3.00, 3.40, 3.52, 3.60, 3.66, 3.71, 3.76, 3.82, 3.90, 3.98, 4.07, 4.12, 4.20])
NOMINAL_CELL_V = {"lfp": 3.2, "nmc": 3.7}
ACTIVATION_J_PER_MOL = 50_000.0
GAS_CONSTANT = 8.314
T_REF_K = 298.15
FADE_PER_CYCLE = 0.2 / 4000  # 80 % health after 4,000 equivalent full cycles at 25 degC
FADE_PER_SECOND = 0.02 / (365.25 * 86400)  # calendar ageing, 2 %/year at 25 degC
MIN_HEALTH = 0.5


def arrhenius(temp_c: FloatArray) -> FloatArray:
    """Ageing acceleration relative to 25 degC."""
    return np.exp(ACTIVATION_J_PER_MOL / GAS_CONSTANT * (1.0 / T_REF_K - 1.0 / (temp_c + 273.15)))


@dataclass(slots=True)
class BatteryBank:
    capacity_nominal_wh: FloatArray
    lfp: BoolArray  # True: 16s LFP home pack; False: single NMC cell (lab)
    cells: FloatArray
    energy_wh: FloatArray
    health: FloatArray  # state of health, 0-1
    temp_c: FloatArray
    cycles: FloatArray  # equivalent full cycles
    eta_charge: FloatArray
    eta_discharge: FloatArray
    c_charge: FloatArray  # max charge power, in units of capacity per hour
    c_discharge: FloatArray
    resistance_ohm: FloatArray
    heat_capacity_j_per_k: FloatArray
    tau_s: FloatArray  # thermal time constant to the surroundings

    @classmethod
    def create(cls, *, capacity_kwh: FloatArray, lab: BoolArray, soc: FloatArray) -> BatteryBank:
        n = capacity_kwh.size
        cap = capacity_kwh * 1000.0
        return cls(
            capacity_nominal_wh=cap,
            lfp=~lab,
            cells=np.where(lab, 1.0, 16.0),
            energy_wh=cap * soc / 100.0,
            health=np.ones(n),
            temp_c=np.full(n, 25.0),
            cycles=np.zeros(n),
            eta_charge=np.where(lab, 0.95, 0.97),
            eta_discharge=np.where(lab, 0.95, 0.97),
            c_charge=np.where(lab, 0.5, 0.5),
            c_discharge=np.where(lab, 1.0, 1.0),
            resistance_ohm=np.where(lab, 0.12, 0.04),
            heat_capacity_j_per_k=np.maximum(cap * 8.0, 40.0),
            tau_s=np.where(lab, 900.0, 7200.0),
        )

    @property
    def capacity_wh(self) -> FloatArray:
        return self.capacity_nominal_wh * self.health

    @property
    def soc(self) -> FloatArray:
        return np.clip(self.energy_wh / self.capacity_wh * 100.0, 0.0, 100.0)

    @property
    def nominal_v(self) -> FloatArray:
        return np.where(self.lfp, NOMINAL_CELL_V["lfp"], NOMINAL_CELL_V["nmc"]) * self.cells

    def ocv(self) -> FloatArray:
        soc = self.soc
        per_cell = np.where(
            self.lfp, np.interp(soc, SOC_POINTS, OCV_LFP), np.interp(soc, SOC_POINTS, OCV_NMC)
        )
        volts: FloatArray = per_cell * self.cells
        return volts

    def terminal_voltage(self, net_charge_w: FloatArray) -> FloatArray:
        """OCV plus the IR drop (up while charging, down while discharging)."""
        ocv = self.ocv()
        current = net_charge_w / np.maximum(ocv, 0.1)
        return ocv + current * self.resistance_ohm

    def limits(self, dt_s: float) -> tuple[FloatArray, FloatArray]:
        """(max charge power in, max discharge power out) in W for a step of ``dt_s``."""
        cap = self.capacity_wh
        hours = max(dt_s, 1e-9) / 3600.0
        room = np.maximum(cap - self.energy_wh, 0.0) / hours / self.eta_charge
        available = np.maximum(self.energy_wh, 0.0) / hours * self.eta_discharge
        return (
            np.minimum(self.c_charge * cap, room),
            np.minimum(self.c_discharge * cap, available),
        )

    def apply(self, *, charge_w: FloatArray, discharge_w: FloatArray, dt_s: float) -> FloatArray:
        """Move energy; returns conversion losses (Wh) per meter for this step."""
        hours = dt_s / 3600.0
        stored_in = charge_w * self.eta_charge * hours
        drawn = discharge_w / self.eta_discharge * hours
        self.energy_wh = np.clip(self.energy_wh + stored_in - drawn, 0.0, self.capacity_wh)
        self.cycles = self.cycles + (stored_in + drawn) / (2.0 * self.capacity_nominal_wh)
        return charge_w * hours - stored_in + drawn - discharge_w * hours

    def heat(
        self,
        *,
        surroundings_c: FloatArray,
        loss_w: FloatArray,
        dt_s: float,
        runaway: BoolArray,
        jitter: FloatArray,
    ) -> None:
        """First-order thermal model; thermal runaway drives the pack to 65-75 degC."""
        equilibrium = surroundings_c + loss_w * self.tau_s / self.heat_capacity_j_per_k
        decay = np.exp(-dt_s / self.tau_s)
        normal = equilibrium + (self.temp_c - equilibrium) * decay
        runaway_target = 70.0 + 4.5 * jitter
        hot = runaway_target + (self.temp_c - runaway_target) * np.exp(-dt_s / 60.0)
        self.temp_c = np.where(runaway, np.clip(hot, None, 75.0), normal)

    def age(self, *, cycles_before: FloatArray, dt_s: float, factor: FloatArray) -> FloatArray:
        """Lose health with cycles and time, faster when hot; returns energy lost to fade (Wh)."""
        fade = (FADE_PER_CYCLE * (self.cycles - cycles_before) + FADE_PER_SECOND * dt_s) * arrhenius(
            self.temp_c
        )
        self.health = np.maximum(MIN_HEALTH, self.health - fade * factor)
        excess = np.maximum(self.energy_wh - self.capacity_wh, 0.0)
        self.energy_wh = self.energy_wh - excess
        return excess
