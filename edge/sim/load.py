"""Household and business load from published standard load profiles (demandlib).

Residential meters follow BDEW H0, small commercial G0 (both with their weekday/weekend and
seasonal shapes, and H0's dynamisation), industrial demandlib's step profile (day and night shift
levels, lower at weekends). Profiles are built once per year, offline (no holiday calendar: the
simulated year has no public holidays), normalised to kW per 1,000 kWh/a, and looked up per step
at each meter's local time. A temperature-driven cooling load and AR(1) noise are added on top.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
PROFILE_ORDER = ("residential", "commercial", "industrial")
COOLING_SETPOINT_C = 24.0
COOLING_KW_PER_K_PER_MWH = 0.018  # cooling kW per kelvin above the set point, per MWh/a of base load


@contextmanager
def _quiet_demandlib() -> Iterator[None]:
    """demandlib 0.2 calls ``warnings.simplefilter("error")`` inside; with pandas >= 3.1 that turns a
    deprecation warning into an exception (and would leave warnings as errors process-wide).
    Keep its filter change local and harmless."""
    with warnings.catch_warnings():
        original = warnings.simplefilter

        def _ignore(*_args: object, **_kwargs: object) -> None:
            original("ignore")

        warnings.simplefilter = _ignore
        try:
            warnings.filterwarnings("ignore")
            yield
        finally:
            warnings.simplefilter = original


def profile_year(year: int) -> FloatArray:
    """Array (3, quarter-hours of ``year``): kW per 1,000 kWh/a, rows in :data:`PROFILE_ORDER`."""
    from demandlib import bdew, particular_profiles  # the [sim] extra, loaded only to build a profile

    with _quiet_demandlib():
        slp = bdew.ElecSlp(year).get_profile({"h0": 1000.0, "g0": 1000.0})
        index = pd.date_range(dt.datetime(year, 1, 1), periods=len(slp), freq="15min")
        industrial = particular_profiles.IndustrialLoadProfile(index).simple_profile(
            1000.0,
            am=dt.time(6, 0),
            pm=dt.time(22, 0),
            profile_factors={
                "week": {"day": 1.0, "night": 0.55},
                "weekend": {"day": 0.6, "night": 0.5},
                "holiday": {"day": 0.5, "night": 0.5},
            },
        )
    rows = [
        slp["h0"].to_numpy(np.float64),
        slp["g0"].to_numpy(np.float64),
        np.asarray(industrial, np.float64),
    ]
    return np.vstack(rows)  # demandlib gives mean kW per quarter-hour (sum/4 = annual kWh)


class LoadModel:
    """Base load (kW) for every meter at one instant, from its profile, size and local time."""

    def __init__(
        self, *, timezones: Sequence[str], tz_index: IntArray, profile_index: IntArray, annual_kwh: FloatArray
    ) -> None:
        self.zones = [ZoneInfo(name) for name in timezones]
        self.tz_index = tz_index
        self.profile_index = profile_index
        self.scale = annual_kwh / 1000.0
        self.cooling_kw_per_k = COOLING_KW_PER_K_PER_MWH * annual_kwh / 1000.0
        self._years: dict[int, FloatArray] = {}

    def _year(self, year: int) -> FloatArray:
        table = self._years.get(year)
        if table is None:
            if len(self._years) > 3:
                self._years.clear()
            table = profile_year(year)
            self._years[year] = table
        return table

    def base_kw(self, epoch_s: float) -> FloatArray:
        """Standard-profile load in kW per meter (no weather, no noise)."""
        out = np.empty(self.tz_index.size, dtype=np.float64)
        moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
        for zone_number, zone in enumerate(self.zones):
            mask = self.tz_index == zone_number
            if not mask.any():
                continue
            local = moment.astimezone(zone)
            table = self._year(local.year)
            start = dt.datetime(local.year, 1, 1, tzinfo=zone)
            quarter = (local.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds() / 900.0
            position = max(0.0, quarter - 0.5)  # values are quarter-hour means: centre them
            low = min(int(position), table.shape[1] - 1)
            high = min(low + 1, table.shape[1] - 1)
            frac = position - int(position)
            values = table[:, low] * (1 - frac) + table[:, high] * frac
            out[mask] = values[self.profile_index[mask]]
        return out * self.scale

    def cooling_kw(self, temp_c: FloatArray) -> FloatArray:
        """Air-conditioning load per meter for the outdoor temperature (per meter)."""
        return self.cooling_kw_per_k * np.maximum(0.0, temp_c - COOLING_SETPOINT_C)
