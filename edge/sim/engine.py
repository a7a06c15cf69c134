"""One time step for the whole fleet: weather -> PV -> load -> power balance -> battery -> counters.

Everything is a numpy array with one entry per meter, so a step costs about the same for 3 or
5,000 meters plus a small per-meter part. Power balance each step: PV covers the load, the surplus
charges the battery and the rest is exported (curtailed during an outage); a deficit discharges
the battery and the rest is imported (shed during an outage). The :class:`Ledger` keeps the true
energy flows, so conservation can be checked: solar out = load + export - import + change in stored
energy + battery losses.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from enerlink.edge.sim.battery import BatteryBank
from enerlink.edge.sim.fleet import PROFILES, Fleet
from enerlink.edge.sim.load import LoadModel
from enerlink.edge.sim.scenarios import DEGRADATION_FACTOR, HEATWAVE_C, ScenarioBoard
from enerlink.edge.sim.solar import SolarField
from enerlink.edge.sim.weather import Cell, OfflineWeather, WeatherProvider, cell

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# channel columns of the counter matrices
EXPORT, IMPORT, LOAD_SMART, LOAD_HOME, SOLAR_IN, SOLAR_OUT = range(6)
N_CHANNELS = 6


@dataclass(slots=True)
class Counters:
    """Energy counters (Wh) per meter and channel, as the meter integrates what it measures."""

    daily: FloatArray  # (meters, 6), reset at local midnight
    total: FloatArray  # (meters, 6), never reset
    settlement: FloatArray  # (meters, 2): export, import; reset by the settle command
    day: npt.NDArray[np.int64]  # local date (ordinal) the daily counters belong to

    @classmethod
    def create(cls, meters: int) -> Counters:
        return cls(
            daily=np.zeros((meters, N_CHANNELS)),
            total=np.zeros((meters, N_CHANNELS)),
            settlement=np.zeros((meters, 2)),
            day=np.zeros(meters, dtype=np.int64),
        )


@dataclass(slots=True)
class Ledger:
    """True energy flows (Wh) since the ledger was created, for the conservation check."""

    solar_out: FloatArray
    load: FloatArray
    export: FloatArray
    import_: FloatArray
    battery_loss: FloatArray
    curtailed: FloatArray
    shed: FloatArray

    @classmethod
    def create(cls, meters: int) -> Ledger:
        return cls(*(np.zeros(meters) for _ in range(7)))


@dataclass(slots=True)
class Step:
    """What the meters measure at one instant (W, V, degC), before formatting."""

    epoch_s: float
    power_w: FloatArray  # (meters, 6) measured; a failed sensor reads 0
    voltage: FloatArray  # (meters, 6)
    sensor_ok: BoolArray  # (meters, 6)
    grid_ok: BoolArray
    battery_net_w: FloatArray  # + charging (energy into the pack's terminals)
    battery_voltage: FloatArray
    ambient_c: FloatArray


@dataclass(slots=True)
class Simulator:
    """The state of a simulated fleet and the physics that advances it."""

    fleet: Fleet
    weather: WeatherProvider
    cells: list[Cell]
    lab: BoolArray
    solar: SolarField
    load: LoadModel
    battery: BatteryBank
    counters: Counters
    scenarios: ScenarioBoard
    ledger: Ledger
    zones: list[ZoneInfo]
    tz_index: npt.NDArray[np.intp]
    noise: FloatArray
    rssi_base: FloatArray
    mqtt_attempts: npt.NDArray[np.int64]
    last_epoch: float | None = None
    last: Step | None = None
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, fleet: Fleet, *, weather: WeatherProvider | None = None) -> Simulator:
        meters = fleet.meters
        n = len(meters)
        cells = list(dict.fromkeys(cell(m.latitude, m.longitude) for m in meters))
        cell_index = np.array([cells.index(cell(m.latitude, m.longitude)) for m in meters], dtype=np.intp)
        zone_names = list(dict.fromkeys(m.timezone for m in meters))
        tz_index = np.array([zone_names.index(m.timezone) for m in meters], dtype=np.intp)
        lab = np.array([m.scale == "lab" for m in meters], dtype=np.bool_)
        seeds = np.array([m.seed for m in meters], dtype=np.int64)
        rng = np.random.default_rng([fleet.seed, n])
        return cls(
            fleet=fleet,
            weather=weather or OfflineWeather(seed=fleet.seed),
            cells=cells,
            lab=lab,
            solar=SolarField(
                cells=cells,
                cell_index=cell_index,
                tilt=np.array([m.tilt for m in meters], dtype=np.float64),
                azimuth=np.array([m.azimuth for m in meters], dtype=np.float64),
                pdc0_w=np.array([m.pv_kw * 1000.0 for m in meters], dtype=np.float64),
            ),
            load=LoadModel(
                timezones=zone_names,
                tz_index=tz_index,
                profile_index=np.array([PROFILES.index(m.profile) for m in meters], dtype=np.intp),
                annual_kwh=np.array([m.annual_kwh for m in meters], dtype=np.float64),
            ),
            battery=BatteryBank.create(
                capacity_kwh=np.array([m.battery_kwh for m in meters], dtype=np.float64),
                lab=lab,
                soc=40.0 + (seeds % 50).astype(np.float64),
            ),
            counters=Counters.create(n),
            scenarios=ScenarioBoard.create(n),
            ledger=Ledger.create(n),
            zones=[ZoneInfo(z) for z in zone_names],
            tz_index=tz_index,
            noise=np.zeros(n),
            rssi_base=-40.0 - (seeds % 30).astype(np.float64) - rng.uniform(0, 1, n),
            mqtt_attempts=np.zeros(n, dtype=np.int64),
            index={m.id: i for i, m in enumerate(meters)},
        )

    @property
    def size(self) -> int:
        return len(self.fleet.meters)

    def _local_days(self, epoch_s: float) -> npt.NDArray[np.int64]:
        moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
        per_zone = np.array([moment.astimezone(z).toordinal() for z in self.zones], dtype=np.int64)
        return per_zone[self.tz_index]

    def settle(self, meters: npt.NDArray[np.intp]) -> None:
        self.counters.settlement[meters] = 0.0

    def step(self, epoch_s: float, *, max_dt_s: float = 300.0) -> Step:
        """Advance to ``epoch_s`` (simulated time) and return what the meters measure there."""
        dt_s = 0.0 if self.last_epoch is None else min(max(epoch_s - self.last_epoch, 0.0), max_dt_s)
        self.last_epoch = epoch_s
        n = self.size
        rng = np.random.default_rng([self.fleet.seed, int(epoch_s * 1000) & 0xFFFFFFFFFFFF])
        board = self.scenarios
        board.expire(epoch_s)
        heatwave, cloudy = board.mask("heatwave"), board.mask("cloudy")
        outage, hvac = board.mask("grid_outage"), board.mask("hvac_failure")
        runaway = board.mask("thermal_runaway")

        # weather, with scenario overrides
        w = self.weather.arrays(self.cells, epoch_s)
        idx = self.solar.cell_index
        hour_angle = 2 * math.pi * ((epoch_s / 3600.0) % 24) / 24
        ambient = np.where(heatwave, HEATWAVE_C - 2.0 + 2.0 * math.sin(hour_angle), w.temp_c[idx])
        cloud = np.where(cloudy, np.maximum(w.cloud[idx], 0.95), w.cloud[idx])
        ghi = np.where(cloudy, np.nan, w.ghi[idx])

        # PV: DC from pvlib, then the MPPT/charge controller (less efficient at low power)
        pv = self.solar.step(epoch_s=epoch_s, temp_c=ambient, cloud=cloud, ghi=ghi)
        pdc0 = np.maximum(self.solar.pdc0_w, 1e-9)
        eta_mppt = np.where(self.lab, 0.90, 0.965) * pv.dc_w / (pv.dc_w + 0.01 * pdc0)
        solar_in = pv.dc_w
        solar_out = solar_in * eta_mppt

        # load: standard profile + cooling + AR(1) noise
        self.noise = 0.9 * self.noise + 0.436 * rng.standard_normal(n)
        cooling = np.where(hvac, 0.0, self.load.cooling_kw(ambient))
        load = (self.load.base_kw(epoch_s) + cooling) * 1000.0 * np.clip(1.0 + 0.12 * self.noise, 0.4, 2.0)
        smart_share = np.where(self.lab, 1.0, 0.4)

        # power balance
        grid_ok = ~outage
        charge_max, discharge_max = self.battery.limits(dt_s if dt_s > 0 else 5.0)
        surplus = solar_out - load
        charge = np.where(surplus > 0, np.minimum(surplus, charge_max), 0.0)
        spill = np.where(surplus > 0, surplus - charge, 0.0)
        export = np.where(grid_ok, spill, 0.0)
        curtailed = spill - export
        deficit = np.maximum(-surplus, 0.0)
        discharge = np.minimum(deficit, discharge_max)
        unmet = deficit - discharge
        imported = np.where(grid_ok, unmet, 0.0)
        shed = unmet - imported
        if curtailed.any():
            cut = np.where(solar_out > 0, (solar_out - curtailed) / np.maximum(solar_out, 1e-12), 1.0)
            solar_out = solar_out - curtailed
            solar_in = solar_in * cut
        load = load - shed

        # battery: energy, losses, heat, ageing
        cycles_before = self.battery.cycles.copy()
        loss_wh = self.battery.apply(charge_w=charge, discharge_w=discharge, dt_s=dt_s)
        loss_w = loss_wh * 3600.0 / dt_s if dt_s > 0 else np.zeros(n)
        surroundings = np.where(self.lab, 25.0, np.where(hvac, ambient + 8.0, 25.0 + 0.5 * (ambient - 25.0)))
        self.battery.heat(
            surroundings_c=surroundings,
            loss_w=loss_w,
            dt_s=dt_s,
            runaway=runaway,
            jitter=np.sin(epoch_s / 97.0 + np.arange(n)),
        )
        factor = np.where(board.mask("degradation"), DEGRADATION_FACTOR, 1.0)
        fade_wh = self.battery.age(cycles_before=cycles_before, dt_s=dt_s, factor=factor)

        hours = dt_s / 3600.0
        lg = self.ledger
        lg.solar_out += solar_out * hours
        lg.load += load * hours
        lg.export += export * hours
        lg.import_ += imported * hours
        lg.battery_loss += loss_wh + fade_wh
        lg.curtailed += curtailed * hours
        lg.shed += shed * hours

        # what the INA219s see
        power = np.stack(
            [export, imported, load * smart_share, load * (1 - smart_share), solar_in, solar_out], axis=1
        )
        sensor_ok = np.ones((n, N_CHANNELS), dtype=np.bool_)
        failed = board.mask("sensor_failure")
        if failed.any():
            rows = np.flatnonzero(failed)
            sensor_ok[rows, board.failed_sensor[rows]] = False
        power = np.where(sensor_ok, power, 0.0)
        battery_net = charge - discharge
        battery_v = self.battery.terminal_voltage(battery_net)
        voltage = self._voltages(
            epoch_s,
            rng=rng,
            grid_ok=grid_ok,
            pv_cell_temp=pv.cell_temp,
            solar_in=solar_in,
            solar_out=solar_out,
            battery_v=battery_v,
        )
        voltage = np.where(sensor_ok, voltage, 0.0)

        # counters integrate measured power; daily ones reset at local midnight
        days = self._local_days(epoch_s)
        c = self.counters
        new_day = days != c.day
        if new_day.any():
            c.daily[new_day] = 0.0
            c.day = days
        energy = power * hours
        c.daily += energy
        c.total += energy
        c.settlement += energy[:, :2]

        step = Step(
            epoch_s=epoch_s,
            power_w=power,
            voltage=voltage,
            sensor_ok=sensor_ok,
            grid_ok=grid_ok,
            battery_net_w=battery_net,
            battery_voltage=battery_v,
            ambient_c=ambient,
        )
        self.last = step
        return step

    def _voltages(
        self,
        epoch_s: float,
        *,
        rng: np.random.Generator,
        grid_ok: BoolArray,
        pv_cell_temp: FloatArray,
        solar_in: FloatArray,
        solar_out: FloatArray,
        battery_v: FloatArray,
    ) -> FloatArray:
        n = self.size
        lab = self.lab
        wave = np.sin(2 * math.pi * epoch_s / 3600.0 + np.arange(n))
        mains = np.where(lab, 8.95 + 0.01 * wave, 230.0 + 3.0 * wave) + np.where(lab, 0.004, 0.4) * (
            rng.standard_normal(n)
        )
        grid_v = np.where(grid_ok, mains, 0.0)
        inverter_v = np.where(grid_ok, mains, np.where(lab, 8.94, 230.0))
        modules = np.clip(np.ceil(self.solar.pdc0_w / 400.0), 1, 12)
        vmp = np.where(lab, 6.0, 37.0 * modules) * (1.0 - 0.0035 * (pv_cell_temp - 25.0))
        night_v = np.where(lab, 0.58, 1.5)
        generating = solar_in > np.where(lab, 1e-3, 5.0)
        pv_v = np.where(generating, vmp, night_v)
        out_v = np.where(solar_out > 0.0, battery_v, 0.0)
        return np.stack([grid_v, grid_v, inverter_v, inverter_v, pv_v, out_v], axis=1)
