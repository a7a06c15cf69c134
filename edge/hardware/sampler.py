"""Sampling every sensor at a fixed rate (default 10 Hz) and summarising each publish interval.

Each interval yields, per INA219 channel: the mean voltage, current and power over its samples,
min/max of each, the sample count, and the energy integrated from the samples with the trapezoidal
rule (Wh, only positive flow is counted; the segment from the previous interval's last sample is
included, so no energy falls between intervals). A gap longer than ``max_gap_s`` (sensor lost,
process stalled) is not bridged: energy is only integrated where there are samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enerlink.edge.hardware.sensors import GaugeSample, InaSample, SensorArray

MW_S_PER_WH = 3_600_000.0


@dataclass(slots=True)
class ChannelWindow:
    count: int = 0
    sum_v: float = 0.0
    sum_i: float = 0.0
    sum_p: float = 0.0
    min_v: float = float("inf")
    max_v: float = float("-inf")
    min_i: float = float("inf")
    max_i: float = float("-inf")
    min_p: float = float("inf")
    max_p: float = float("-inf")
    energy_wh: float = 0.0
    overflow: bool = False

    def add(self, sample: InaSample) -> None:
        self.count += 1
        self.sum_v += sample.voltage_v
        self.sum_i += sample.current_ma
        self.sum_p += sample.power_mw
        self.min_v, self.max_v = min(self.min_v, sample.voltage_v), max(self.max_v, sample.voltage_v)
        self.min_i, self.max_i = min(self.min_i, sample.current_ma), max(self.max_i, sample.current_ma)
        self.min_p, self.max_p = min(self.min_p, sample.power_mw), max(self.max_p, sample.power_mw)
        self.overflow = self.overflow or sample.overflow


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    valid: bool
    voltage: float
    current: float
    power: float
    energy_wh: float
    count: int
    min_power: float
    max_power: float
    min_voltage: float
    max_voltage: float
    min_current: float
    max_current: float
    overflow: bool

    def stats(self) -> dict[str, float | int | bool]:
        return {
            "samples": self.count,
            "power_min": round(self.min_power, 4),
            "power_max": round(self.max_power, 4),
            "voltage_min": round(self.min_voltage, 4),
            "voltage_max": round(self.max_voltage, 4),
            "current_min": round(self.min_current, 4),
            "current_max": round(self.max_current, 4),
            "overflow": self.overflow,
        }


@dataclass(frozen=True, slots=True)
class Interval:
    started: float
    ended: float
    channels: dict[str, ChannelSummary]
    gauges: dict[str, GaugeSample | None]


def _summary(window: ChannelWindow) -> ChannelSummary:
    if window.count == 0:
        return ChannelSummary(False, 0.0, 0.0, 0.0, window.energy_wh, 0, 0, 0, 0, 0, 0, 0, False)
    n = window.count
    return ChannelSummary(
        True,
        window.sum_v / n,
        window.sum_i / n,
        window.sum_p / n,
        window.energy_wh,
        n,
        window.min_p,
        window.max_p,
        window.min_v,
        window.max_v,
        window.min_i,
        window.max_i,
        window.overflow,
    )


@dataclass
class Sampler:
    sensors: SensorArray
    rate_hz: float = 10.0
    max_gap_s: float = 2.0
    _windows: dict[str, ChannelWindow] = field(default_factory=dict)
    _last: dict[str, tuple[float, float]] = field(default_factory=dict)
    _gauges: dict[str, GaugeSample | None] = field(default_factory=dict)
    _started: float | None = None

    def sample(self, now: float) -> None:
        """Read every connected sensor once (``now``: monotonic seconds of this sample)."""
        if self._started is None:
            self._started = now
        self.sensors.probe_missing()
        for name in self.sensors.ina_names():
            reading = self.sensors.read_ina(name)
            if reading is None:
                self._last.pop(name, None)
                continue
            self.add(name, now, reading)
        for name in self.sensors.gauge_names():
            self._gauges[name] = self.sensors.read_gauge(name)

    def add(self, name: str, now: float, reading: InaSample) -> None:
        window = self._windows.setdefault(name, ChannelWindow())
        window.add(reading)
        previous = self._last.get(name)
        if previous is not None:
            t0, p0 = previous
            dt = now - t0
            if 0 < dt <= self.max_gap_s:
                mean_mw = (p0 + reading.power_mw) / 2.0
                if mean_mw > 0:
                    window.energy_wh += mean_mw * dt / MW_S_PER_WH
        self._last[name] = (now, reading.power_mw)

    def harvest(self, now: float) -> Interval:
        """The summary of everything sampled since the last harvest; starts a new interval."""
        started = self._started if self._started is not None else now
        channels = {
            name: _summary(self._windows.get(name, ChannelWindow())) for name in self.sensors.ina_names()
        }
        self._windows = {}
        self._started = now
        return Interval(started, now, channels, dict(self._gauges))
