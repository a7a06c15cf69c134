"""Weather for the simulator: an offline seeded cloud model (default) and Open-Meteo over HTTP.

Both answer :meth:`WeatherProvider.arrays` synchronously from memory, so the simulation's hot
path never waits on the network; :meth:`WeatherProvider.refresh` (a background task) fetches.
Locations are weather cells: coordinates rounded to a 0.25 degree grid (see :func:`cell`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Cell = tuple[float, float]
FloatArray = npt.NDArray[np.float64]
OPEN_METEO_URL = "https://api.open-meteo.com/v1/forecast"


def cell(latitude: float, longitude: float) -> Cell:
    """The weather cell (0.25 degree grid) a coordinate belongs to."""
    return (round(latitude * 4) / 4, round(longitude * 4) / 4)


@dataclass(frozen=True, slots=True)
class WeatherArrays:
    """Per cell: air temperature (degC), cloud cover (0-1), GHI (W/m2, NaN = derive from clear sky)."""

    temp_c: FloatArray
    cloud: FloatArray
    ghi: FloatArray


class WeatherProvider(Protocol):
    name: str

    async def refresh(self, cells: Sequence[Cell]) -> None: ...

    def arrays(self, cells: Sequence[Cell], epoch_s: float) -> WeatherArrays: ...


def _climate_temp(lat: float, lon: float, epoch_s: float, cloud: float) -> float:
    """A plausible air temperature: climate mean by latitude and season plus a diurnal cycle."""
    doy = (epoch_s / 86400.0) % 365.25
    season = math.cos(2 * math.pi * (doy - 196) / 365.25) * (1 if lat >= 0 else -1)
    extra_tropical = max(0.0, abs(lat) - 23.0)
    mean = 27.0 - 0.45 * extra_tropical + season * min(12.0, 0.35 * extra_tropical)
    solar_hour = (epoch_s / 3600.0 + lon / 15.0) % 24
    amplitude = (4.5 + 0.05 * extra_tropical) * (1 - 0.6 * cloud)
    return mean + amplitude * math.cos(2 * math.pi * (solar_hour - 15.0) / 24) - 1.5 * cloud


@dataclass(slots=True)
class OfflineWeather:
    """Clear sky with a stochastic, seeded cloud model; no network.

    Each cell-day draws a cloudiness from a Beta distribution (mostly fair days, some overcast
    ones), each hour adds seeded noise around it, and values are interpolated between hours,
    so the same seed and time always give the same weather.
    """

    seed: int = 0
    name: str = "offline"
    _hours: dict[tuple[Cell, int], float] = field(default_factory=dict)

    async def refresh(self, cells: Sequence[Cell]) -> None:
        return None

    def _cloud_at_hour(self, c: Cell, hour: int) -> float:
        key = (c, hour)
        value = self._hours.get(key)
        if value is None:
            day_rng = random.Random(f"{self.seed}:{c}:{hour // 24}")
            daily = day_rng.betavariate(0.9, 1.6)
            hour_rng = random.Random(f"{self.seed}:{c}:{hour}")
            value = min(1.0, max(0.0, daily + hour_rng.gauss(0.0, 0.12)))
            if len(self._hours) > 100_000:
                self._hours.clear()
            self._hours[key] = value
        return value

    def cloud(self, c: Cell, epoch_s: float) -> float:
        hours = epoch_s / 3600.0
        hour = math.floor(hours)
        frac = hours - hour
        return (1 - frac) * self._cloud_at_hour(c, hour) + frac * self._cloud_at_hour(c, hour + 1)

    def arrays(self, cells: Sequence[Cell], epoch_s: float) -> WeatherArrays:
        clouds = np.array([self.cloud(c, epoch_s) for c in cells], dtype=np.float64)
        temps = np.array(
            [_climate_temp(c[0], c[1], epoch_s, cl) for c, cl in zip(cells, clouds, strict=True)],
            dtype=np.float64,
        )
        return WeatherArrays(temp_c=temps, cloud=clouds, ghi=np.full(len(cells), np.nan))


@dataclass(slots=True)
class _Series:
    times: FloatArray
    temp_c: FloatArray
    cloud: FloatArray
    ghi: FloatArray
    fetched_at: float


@dataclass(slots=True)
class OpenMeteoWeather:
    """Open-Meteo's forecast API (hourly temperature, cloud cover, shortwave radiation).

    Each cell is fetched at most once per ``ttl_s`` (an hour). When a fetch fails the cached
    series is kept and a warning says so; a cell never fetched falls back to the offline model.
    ``state(cell)`` tells which: ``live``, ``cached`` (last fetch failed) or ``offline``.
    """

    base_url: str = OPEN_METEO_URL
    ttl_s: float = 3600.0
    timeout_s: float = 10.0
    retry_s: float = 60.0
    seed: int = 0
    name: str = "open-meteo"
    _series: dict[Cell, _Series] = field(default_factory=dict)
    _failed: set[Cell] = field(default_factory=set)
    _fallback: OfflineWeather = field(default_factory=OfflineWeather)
    fetches: int = 0
    failures: int = 0

    def state(self, c: Cell) -> str:
        if c not in self._series:
            return "offline"
        return "cached" if c in self._failed else "live"

    def _url(self, c: Cell) -> str:
        query = urllib.parse.urlencode(
            {
                "latitude": c[0],
                "longitude": c[1],
                "hourly": "temperature_2m,cloud_cover,shortwave_radiation",
                "past_days": 1,
                "forecast_days": 2,
                "timezone": "GMT",
                "timeformat": "unixtime",
            }
        )
        return f"{self.base_url}?{query}"

    def _fetch(self, c: Cell) -> _Series:
        with urllib.request.urlopen(self._url(c), timeout=self.timeout_s) as response:
            document = json.loads(response.read())
        hourly = document["hourly"]
        times = np.asarray(hourly["time"], dtype=np.float64)
        if times.size == 0:
            raise ValueError("empty hourly series")

        def column(name: str) -> FloatArray:
            values = [np.nan if v is None else float(v) for v in hourly[name]]
            if len(values) != times.size:
                raise ValueError(f"{name}: {len(values)} values for {times.size} times")
            return np.asarray(values, dtype=np.float64)

        # shortwave_radiation is the mean over the preceding hour: centre it on the half hour
        return _Series(
            times=times,
            temp_c=column("temperature_2m"),
            cloud=column("cloud_cover") / 100.0,
            ghi=np.interp(times, times - 1800.0, column("shortwave_radiation")),
            fetched_at=time.monotonic(),
        )

    async def refresh(self, cells: Sequence[Cell]) -> None:
        now = time.monotonic()
        for c in dict.fromkeys(cells):
            cached = self._series.get(c)
            if cached is not None and now - cached.fetched_at < self.ttl_s:
                continue
            self.fetches += 1
            try:
                series = await asyncio.to_thread(self._fetch, c)
            except Exception as exc:  # any failure: keep what we have
                self.failures += 1
                self._failed.add(c)
                if cached is not None:
                    cached.fetched_at = now - self.ttl_s + self.retry_s  # try again in retry_s
                    log.warning("open-meteo %s: fetch failed (%s); keeping cached weather", c, exc)
                else:
                    log.warning("open-meteo %s: fetch failed (%s); using the offline model", c, exc)
                continue
            self._failed.discard(c)
            self._series[c] = series

    def arrays(self, cells: Sequence[Cell], epoch_s: float) -> WeatherArrays:
        offline = self._fallback.arrays(cells, epoch_s)
        temps, clouds, ghis = offline.temp_c.copy(), offline.cloud.copy(), offline.ghi.copy()
        for index, c in enumerate(cells):
            series = self._series.get(c)
            if series is None or not (series.times[0] <= epoch_s <= series.times[-1]):
                continue
            for target, values in ((temps, series.temp_c), (clouds, series.cloud), (ghis, series.ghi)):
                value = float(np.interp(epoch_s, series.times, values))
                if not math.isnan(value):
                    target[index] = value
        return WeatherArrays(temp_c=temps, cloud=np.clip(clouds, 0.0, 1.0), ghi=np.maximum(ghis, 0.0))
