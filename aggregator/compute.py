"""One pass over a batch of (meter, minute) snapshot sets: validation, statistics, energy, events.

Pure and picklable (no I/O), so a batch can be split over processes. Statistics are computed with
numpy over the whole batch at once (``reduceat`` over each item's rows), not per meter.

Energy from counters: each channel has counters that all measure the same energy but reset at
different moments (``daily_energy`` at local midnight, ``settlement_energy`` after a billing
settlement, ``total_energy`` only on a re-flash). For each pair of consecutive snapshots (the first
paired with the last snapshot *before* the minute, the baseline) the energy is the ``total_energy``
delta when it is non-negative and not larger than the ``daily_energy`` delta (when that one did not
reset; plus 1 mWh for rounding); otherwise the ``daily_energy`` delta if non-negative, else the
``settlement_energy`` delta if non-negative (a re-flash drops ``total`` while the others keep
counting; a ``total`` jumping up is not believed); if every counter went down at once, the smallest
new value (energy since the reset). A reset is never negative energy and a re-flash never a spike,
and over a day the minute energies add up to the counters' growth.
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from aggregator.columns import ENERGY_SUBSYSTEMS, STAT_COLUMNS
from aggregator.fastparse import PERM, VALUE_FIELDS, BadSnapshot, Snap, parse

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
ROUNDING_WH = 1e-3

_VALUE_FIELDS = VALUE_FIELDS
_COL = {f.column: i for i, f in enumerate(_VALUE_FIELDS)}
_ENERGY_COLS: list[tuple[int, list[int]]] = [
    (
        _COL[f"{sub}_total_energy"],
        [_COL[f"{sub}_{n}"] for n in ("daily_energy", "settlement_energy") if f"{sub}_{n}" in _COL],
    )
    for sub in ENERGY_SUBSYSTEMS
]
_COUNTER_COLS: list[int] = [c for total, others in _ENERGY_COLS for c in (total, *others)]
_ENERGY_LOCAL: list[tuple[int, list[int]]] = [
    (_COUNTER_COLS.index(total), [_COUNTER_COLS.index(c) for c in others]) for total, others in _ENERGY_COLS
]
_WIDTH = len(_VALUE_FIELDS)
_ALERT = _COL["battery_alert_active"]
_CONNECTED = _COL["battery_connected"]


@dataclass(frozen=True, slots=True)
class Item:
    """One meter's minute: raw snapshots (timeseries and late data) and the last one before it."""

    meter_id: str
    minute_ms: int
    snapshots: Sequence[bytes]
    baseline: bytes | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    thermal_warn_c: float = 45.0
    thermal_crit_c: float = 60.0


@dataclass(frozen=True, slots=True)
class Event:
    meter_id: str
    at: datetime
    kind: str
    severity: str
    details: dict[str, Any]


@dataclass(slots=True)
class Result:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    bad: int = 0
    samples: int = 0
    has_temperature: bool = False  # any snapshot mentions a temperature (thermal events need a look)

    def merge(self, other: Result) -> None:
        self.rows.extend(other.rows)
        self.events.extend(other.events)
        self.bad += other.bad
        self.samples += other.samples


_CLIENTS: dict[str, Any] = {}


def read_and_compute(
    redis_url: str, key_prefix: str, pairs: Sequence[tuple[str, int]], thresholds: Thresholds
) -> Result:
    """Worker-process entry: read a shard of (meter, minute) pairs from Redis and compute them,
    so reading, validation and statistics all run in parallel across processes."""
    import redis

    from aggregator.reader import read_items_sync
    from schemas.wire import Keys

    client = _CLIENTS.get(redis_url)
    if client is None:
        client = _CLIENTS[redis_url] = redis.Redis.from_url(redis_url)
    return compute(read_items_sync(client, Keys(key_prefix), pairs), thresholds)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _parse(meter_id: str, raws: Sequence[bytes], result: Result) -> dict[int, Snap]:
    out: dict[int, Snap] = {}
    for raw in raws:
        try:
            snap = parse(raw, meter_id)
        except BadSnapshot as exc:
            result.bad += 1
            log.debug("meter %s: snapshot skipped: %s", meter_id, exc)
            continue
        if snap.at_ms in out:
            continue
        out[snap.at_ms] = snap
        if snap.temperature is not None:
            result.has_temperature = True
    return out


def compute(items: Sequence[Item], thresholds: Thresholds = Thresholds()) -> Result:
    """Rows for ``telemetry_aggregates`` (column order of :data:`aggregator.columns.ALL_COLUMNS`).

    The cyclic garbage collector is paused meanwhile: the batch allocates many small containers and
    holds them all to the end, which otherwise triggers repeated full collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compute(items, thresholds)
    finally:
        if enabled:
            gc.enable()


def _compute(items: Sequence[Item], thresholds: Thresholds) -> Result:
    result = Result()
    vectors: list[tuple[Any, ...]] = []  # snapshot rows of every item, baseline (if any) first
    starts: list[int] = []  # index of each item's first in-minute row
    ends: list[int] = []
    kept: list[tuple[Item, list[int], list[Snap], bool]] = []
    for item in items:
        lo, hi = item.minute_ms, item.minute_ms + MINUTE_MS
        parsed = _parse(item.meter_id, item.snapshots, result)
        times = sorted(t for t in parsed if lo <= t < hi)
        if not times:
            continue
        base_msg: Snap | None = None
        if item.baseline is not None:
            base = _parse(item.meter_id, [item.baseline], result)
            base_msg = next((m for t, m in base.items() if t < lo), None)
        msgs = [parsed[t] for t in times]
        if base_msg is not None:
            vectors.append(base_msg.vector)
        starts.append(len(vectors))
        vectors.extend(m.vector for m in msgs)
        ends.append(len(vectors))
        kept.append((item, times, [base_msg, *msgs] if base_msg else msgs, base_msg is not None))
    if not kept:
        return result
    x = np.fromiter(itertools.chain.from_iterable(vectors), dtype=np.float64, count=len(vectors) * _WIDTH)
    x = x.reshape(len(vectors), _WIDTH)[:, PERM]
    s = np.asarray(starts)
    e = np.asarray(ends)
    counts = e - s
    result.samples = int(counts.sum())
    based = np.fromiter((k[3] for k in kept), dtype=bool, count=len(kept))
    first = s - based  # every row of x belongs to one item: [baseline,] snapshots, item after item
    group = np.repeat(np.arange(len(kept)), e - first)
    in_minute = np.ones(len(x), dtype=bool)
    in_minute[first[based]] = False
    xm = x[in_minute]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.add.reduceat(xm, offsets, axis=0)
    avg = sums / counts[:, None]
    mn = np.minimum.reduceat(xm, offsets, axis=0)
    mx = np.maximum.reduceat(xm, offsets, axis=0)
    last = x[e - 1]
    energy = _energy(x, group, len(kept))
    quiet = _quiet(x, first, based) if not result.has_temperature else np.zeros(len(kept), dtype=bool)
    # assemble float columns in STAT_COLUMNS order
    floats: list[np.ndarray[Any, Any]] = []
    names: list[str] = []
    energy_idx = {sub: i for i, sub in enumerate(ENERGY_SUBSYSTEMS)}
    for col in STAT_COLUMNS:
        if col.sql_type == "text":
            continue
        names.append(col.name)
        if col.stat == "energy":
            floats.append(energy[:, energy_idx[col.subsystem]])
            continue
        assert col.field is not None
        j = _COL[col.field.column]
        source = {"avg": avg, "min": mn, "max": mx, "last": last, "ratio": avg}[col.stat]
        floats.append(source[:, j])
    matrix = np.column_stack(floats).tolist()
    for g, (item, times, msgs, has_base) in enumerate(kept):
        enums = msgs[-1].enums
        result.rows.append(
            (
                item.meter_id,
                ms_to_dt(item.minute_ms),
                len(times),
                ms_to_dt(times[0]),
                ms_to_dt(times[-1]),
                *matrix[g],
                *enums,
            )
        )
        if quiet[g]:
            continue
        _events(
            item.meter_id,
            x[first[g] : ends[g]],
            msgs,
            has_base=has_base,
            thresholds=thresholds,
            out=result.events,
            check_thermal=result.has_temperature,
        )
    return result


def _energy(x: np.ndarray[Any, Any], group: np.ndarray[Any, Any], n_groups: int) -> np.ndarray[Any, Any]:
    out = np.zeros((n_groups, len(_ENERGY_COLS)))
    if len(x) < 2:
        return out
    same = group[1:] == group[:-1]
    pair_group = group[1:][same]
    counters = x[:, _COUNTER_COLS]  # only the counters, before the pairs are cut out
    prev, cur = counters[:-1][same], counters[1:][same]
    for k, (total, others) in enumerate(_ENERGY_LOCAL):
        dt = cur[:, total] - prev[:, total]
        d_daily = cur[:, others[0]] - prev[:, others[0]]
        fallback = cur[:, [total, *others]].min(axis=1)  # every counter went down: since the reset
        for col in reversed(others):  # daily first, then settlement
            d = cur[:, col] - prev[:, col]
            fallback = np.where(d >= 0, d, fallback)
        use_total = (dt >= 0) & ((d_daily < 0) | (dt <= d_daily + ROUNDING_WH))
        pair_energy = np.where(use_total, dt, fallback)
        out[:, k] = np.bincount(pair_group, weights=pair_energy, minlength=n_groups)
    return out


def _quiet(x: np.ndarray[Any, Any], first: np.ndarray[Any, Any], has_base: np.ndarray[Any, Any]) -> Any:
    """Items that raise no event, for the whole batch at once (the common case): battery alert and
    sensor connection steady over the baseline and the minute, no alert raised from a start without
    baseline, sensor connected (thermal events are looked at item by item when any snapshot has a
    temperature)."""
    flags = x[:, [_ALERT, _CONNECTED]]
    low = np.minimum.reduceat(flags, first, axis=0)
    high = np.maximum.reduceat(flags, first, axis=0)
    start = flags[first]
    steady = (low == high).all(axis=1)
    return steady & ((start[:, 0] == 0) | has_base) & (start[:, 1] == 1)


def _level(temp: float | None, t: Thresholds) -> int:
    if temp is None:
        return 0
    return 2 if temp >= t.thermal_crit_c else 1 if temp >= t.thermal_warn_c else 0


def _events(
    meter_id: str,
    rows: np.ndarray[Any, Any],
    msgs: list[Snap],
    *,
    has_base: bool,
    thresholds: Thresholds,
    out: list[Event],
    check_thermal: bool,
) -> None:
    """Transitions inside the minute (the baseline is the state before it; it raises nothing)."""
    alert = rows[:, _ALERT]
    conn = rows[:, _CONNECTED]
    steady = alert.min() == alert.max() and conn.min() == conn.max()
    if steady and (alert[0] == 0 or has_base) and conn[0] == 1 and not check_thermal:
        return
    first = 1 if has_base else 0
    prev_alert = alert[0] if has_base else 0.0
    prev_conn = conn[0] if has_base else 1.0
    prev_level = _level(msgs[0].temperature, thresholds) if has_base else 0
    for i in range(first, len(rows)):
        snap = msgs[i]
        at = snap.at
        if alert[i] != prev_alert:
            raised = bool(alert[i])
            out.append(
                Event(
                    meter_id,
                    at,
                    "battery_alert_raised" if raised else "battery_alert_cleared",
                    "warning" if raised else "info",
                    {"soc": snap.soc, "alert_threshold": snap.alert_threshold},
                )
            )
        if conn[i] != prev_conn:
            lost = not bool(conn[i])
            out.append(
                Event(
                    meter_id,
                    at,
                    "sensor_disconnected" if lost else "sensor_reconnected",
                    "warning" if lost else "info",
                    {"sensor": "max17048", "subsystem": "battery"},
                )
            )
        temp = snap.temperature
        level = _level(temp, thresholds)
        if level != prev_level:
            if level > prev_level:
                kind, severity = "thermal_limit_crossed", "critical" if level == 2 else "warning"
            else:
                kind, severity = "thermal_limit_cleared" if level == 0 else "thermal_limit_crossed", "info"
            out.append(
                Event(
                    meter_id,
                    at,
                    kind,
                    severity,
                    {
                        "temperature_c": temp,
                        "warn_c": thresholds.thermal_warn_c,
                        "crit_c": thresholds.thermal_crit_c,
                    },
                )
            )
        prev_alert, prev_conn, prev_level = alert[i], conn[i], level
