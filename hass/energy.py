"""Lifetime energy counters for Home Assistant that never decrease, whatever the meter's counters do.

Home Assistant's ``state_class: total_increasing`` reads any decrease of a sensor as the start of a
new meter cycle (a reset to a lower value) and counts the new value as fresh energy: a real reset to
about zero is fine, but a counter that dips a little, or a lifetime counter restarting after a
re-flash while the state still shows a large number, becomes negative or spiking energy in the
Energy dashboard. So the values published here are sums that only grow.

Per meter and channel the bridge keeps the last counters it saw (``total_energy``, ``daily_energy``
and, on the grid channels, ``settlement_energy``, in Wh) and a lifetime sum, started at the meter's
own ``total_energy`` the first time the meter is seen. Each newer data message adds the energy
between the two snapshots, by the rule the aggregator uses for its minute energies
(:mod:`enerlink.aggregator.compute`): the ``total_energy`` delta when it is non-negative and not larger than
the ``daily_energy`` delta (unless the daily counter reset at midnight; plus 1 mWh for rounding);
otherwise the ``daily_energy`` delta if non-negative, else the ``settlement_energy`` delta if
non-negative (a re-flash drops ``total_energy`` while the others keep counting; a ``total_energy``
jumping up is not believed); if every counter went down at once, the smallest new value (the energy
since the reset). Every step is >= 0, so the sum never decreases and a reset is never a spike.

Battery charge and discharge: the meter has no battery energy counter, so they are derived from the
energy balance of the counters over each step: solar output + grid import - grid export - loads is
the energy into the battery (positive: charge, negative: discharge). A step spans the interval between
two messages the bridge saw, so charge and discharge within one interval net out (at 5-10 s per
message, nothing a dashboard shows).

A message not newer than the last one seen (a redelivery, a replayed backlog arriving after newer
data) changes nothing: the counters are cumulative, so its energy is in the newer message already.
(So a meter whose clock went back gets no new state until its clock passes the last message seen;
messages dated more than a day ahead are skipped for the same reason, see :mod:`enerlink.hass.service`.)
The state lives in Redis (``Keys.ha_counters``), written before the HA state is published, so a
restarted bridge continues the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from enerlink.schemas.telemetry import MeterData

ROUNDING_WH = 1e-3
#: The channels whose counters are summed (field names of the data message's ``data`` object).
CHANNELS = ("export", "import", "load_smart_mtr", "load_home", "solar_output")
BATTERY_CHARGE = "battery_charge"
BATTERY_DISCHARGE = "battery_discharge"


@dataclass(frozen=True, slots=True)
class Reading:
    """One channel's counters in one message (Wh)."""

    total: float
    daily: float
    settlement: float | None = None


def readings(data: MeterData) -> dict[str, Reading]:
    """The counters of :data:`CHANNELS` in a validated data message."""
    grid = {"export": data.export, "import": data.import_}
    other = {
        "load_smart_mtr": data.load_smart_mtr,
        "load_home": data.load_home,
        "solar_output": data.solar_output,
    }
    out = {name: Reading(ch.total_energy, ch.daily_energy, ch.settlement_energy) for name, ch in grid.items()}
    out.update({name: Reading(ch.total_energy, ch.daily_energy) for name, ch in other.items()})
    return out


def step_energy(prev: Reading, cur: Reading) -> float:
    """Energy (Wh, >= 0) between two snapshots of one channel; see the module docstring."""
    d_total = cur.total - prev.total
    d_daily = cur.daily - prev.daily
    if d_total >= 0 and (d_daily < 0 or d_total <= d_daily + ROUNDING_WH):
        return d_total
    if d_daily >= 0:
        return d_daily
    if cur.settlement is not None and prev.settlement is not None:
        d_settlement = cur.settlement - prev.settlement
        if d_settlement >= 0:
            return d_settlement
    values = [cur.total, cur.daily] + ([cur.settlement] if cur.settlement is not None else [])
    return max(min(values), 0.0)


@dataclass(slots=True)
class MeterCounters:
    """One meter's bridge state: the last counters seen and the lifetime sums (Wh)."""

    at_ms: int
    last: dict[str, Reading]
    lifetime: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, at_ms: int, current: dict[str, Reading]) -> MeterCounters:
        lifetime = {name: reading.total for name, reading in current.items()}
        lifetime[BATTERY_CHARGE] = lifetime[BATTERY_DISCHARGE] = 0.0
        return cls(at_ms=at_ms, last=dict(current), lifetime=lifetime)

    def advance(self, at_ms: int, current: dict[str, Reading]) -> bool:
        """Add the energy since the last snapshot; False (nothing changed) if ``at_ms`` is not newer."""
        if at_ms <= self.at_ms:
            return False
        steps = {name: step_energy(self.last[name], reading) for name, reading in current.items()}
        for name, energy in steps.items():
            self.lifetime[name] += energy
        balance = (
            steps["solar_output"]
            + steps["import"]
            - steps["export"]
            - steps["load_smart_mtr"]
            - steps["load_home"]
        )
        if balance > 0:
            self.lifetime[BATTERY_CHARGE] += balance
        else:
            self.lifetime[BATTERY_DISCHARGE] -= balance
        self.at_ms = at_ms
        self.last = dict(current)
        return True

    def dumps(self) -> bytes:
        last = {name: [r.total, r.daily, r.settlement] for name, r in self.last.items()}
        return orjson.dumps({"at": self.at_ms, "last": last, "lifetime": self.lifetime})

    @classmethod
    def loads(cls, raw: bytes) -> MeterCounters:
        body: dict[str, Any] = orjson.loads(raw)
        last = {
            name: Reading(float(t), float(d), None if s is None else float(s))
            for name, (t, d, s) in body["last"].items()
        }
        lifetime = {name: float(v) for name, v in body["lifetime"].items()}
        return cls(at_ms=int(body["at"]), last=last, lifetime=lifetime)
