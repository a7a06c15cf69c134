"""One pass over a batch of (meter, minute) snapshot sets: validation, statistics, energy, events.

Pure and picklable (no I/O), so a batch can be split over processes. Statistics are computed with
numpy over the whole batch at once (``reduceat`` over each item's rows), not per meter.

Energy from counters: each channel has counters that all measure the same energy but reset at
different moments (``daily_energy`` at local midnight, ``settlement_energy`` after a billing
settlement, ``total_energy`` only on a re-flash). For each pair of consecutive snapshots (the first
paired with the last snapshot *before* the minute, the baseline) the energy is the ``total_energy``
delta when it is non-negative and not larger than the ``daily_energy`` delta (when that one did not
reset; plus 1 mWh for rounding), or equal to the ``settlement_energy`` delta (a gap in the readings
over midnight: the daily counter reset and grew back), or when the pair is a day or more apart;
otherwise the ``daily_energy`` delta if non-negative, else the ``settlement_energy`` delta if
non-negative (a re-flash drops ``total`` while the others keep counting; a ``total`` jumping up alone
is not believed); if every counter went down at once, the smallest
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

from enerlink.aggregator import batch, copybin
from enerlink.aggregator.columns import (
    ENERGY_SUBSYSTEMS,
    ENERGY_UNITS_PER_WH,
    ENUM_TYPES,
    STAT_COLUMNS,
)
from enerlink.aggregator.fastparse import VALUE_FIELDS
from enerlink.events import Event

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
DAY_MS = 86_400_000
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
_ALERT = _COL["battery_alert_active"]
_SOC = _COL["battery_soc"]
_THRESHOLD = _COL["battery_alert_threshold"]
_CONNECTED = _COL["battery_connected"]


@dataclass(frozen=True, slots=True)
class Item:
    """One meter's minute: raw snapshots (timeseries and late data), the last one before it, and
    how many of the minute's readings are listed as repaired (``Keys.repaired``)."""

    meter_id: str
    minute_ms: int
    snapshots: Sequence[bytes]
    baseline: bytes | None = None
    repaired: int = 0


@dataclass(frozen=True, slots=True)
class Thresholds:
    thermal_warn_c: float = 45.0
    thermal_crit_c: float = 60.0


@dataclass(slots=True)
class Result:
    """A batch's minute rows: as tuples (``rows``), or encoded for a binary COPY (``encoded``,
    aggregator/copybin.py: what the worker processes send back); ``keys`` (meter, minute start ms)
    of every row either way."""

    keys: list[tuple[str, int]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    bad: int = 0
    samples: int = 0
    has_temperature: bool = False  # any snapshot mentions a temperature (thermal events need a look)

    def merge(self, other: Result) -> None:
        self.keys.extend(other.keys)
        self.rows.extend(other.rows)
        self.encoded.extend(other.encoded)
        self.events.extend(other.events)
        self.bad += other.bad
        self.samples += other.samples


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def compute(items: Sequence[Item], thresholds: Thresholds = Thresholds(), *, encode: bool = False) -> Result:
    """Rows for ``telemetry_aggregates`` (column order of :data:`enerlink.aggregator.columns.MINUTE_COLUMNS`),
    as tuples, or with ``encode`` for a binary COPY.

    The cyclic garbage collector is paused meanwhile: the batch allocates many small containers and
    holds them all to the end, which otherwise triggers repeated full collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compute(items, thresholds, encode=encode)
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True)
class _Flat:
    """Every snapshot of a batch in one list, each item's baseline (if any) before its snapshots."""

    raws: list[bytes] = field(default_factory=list)
    meter_ids: list[str] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # the item each belongs to
    is_base: list[bool] = field(default_factory=list)

    @classmethod
    def of(cls, items: Sequence[Item]) -> _Flat:
        flat = cls()
        for i, item in enumerate(items):
            n = len(item.snapshots) + (item.baseline is not None)
            if item.baseline is not None:
                flat.raws.append(item.baseline)
            flat.raws.extend(item.snapshots)
            flat.meter_ids.extend(itertools.repeat(item.meter_id, n))
            flat.owner.extend(itertools.repeat(i, n))
            flat.is_base.extend(itertools.repeat(False, n))
            if item.baseline is not None:
                flat.is_base[-n] = True
        return flat


def _compute(items: Sequence[Item], thresholds: Thresholds, *, encode: bool) -> Result:
    result = Result()
    flat = _Flat.of(items)
    if not flat.raws:
        return result
    d = batch.decode(flat.raws, flat.meter_ids)
    owner = np.asarray(flat.owner)
    is_base = np.asarray(flat.is_base, dtype=bool)
    lo = np.fromiter((item.minute_ms for item in items), dtype=np.int64, count=len(items))[owner]
    at_ms = d.at_ms
    in_minute = d.ok & ~is_base & (at_ms >= lo) & (at_ms < lo + MINUTE_MS)
    has_rows = np.zeros(len(items), dtype=bool)
    has_rows[owner[in_minute]] = True
    # a baseline counts (and is parsed) only for an item with snapshots in its minute
    looked_at = ~is_base | has_rows[owner]
    for row, why in d.errors:
        if looked_at[row]:
            log.debug("meter %s: snapshot skipped: %s", flat.meter_ids[row], why)
    result.bad = int((~d.ok & looked_at).sum())
    result.has_temperature = bool(np.isfinite(d.temperature[d.ok & looked_at]).any())
    baseline = d.ok & is_base & has_rows[owner] & (at_ms < lo)
    candidates = np.flatnonzero(in_minute | baseline)
    if not len(candidates):
        return result
    # item by item, by time (a baseline is before its minute); of equal times the first stored wins
    order = candidates[np.lexsort((candidates, at_ms[candidates], owner[candidates]))]
    repeated = np.zeros(len(order), dtype=bool)
    repeated[1:] = (owner[order[1:]] == owner[order[:-1]]) & (at_ms[order[1:]] == at_ms[order[:-1]])
    sel = order[~repeated]
    sel_owner, sel_base, sel_at = owner[sel], is_base[sel], at_ms[sel]
    starts = np.ones(len(sel), dtype=bool)
    starts[1:] = sel_owner[1:] != sel_owner[:-1]
    first = np.flatnonzero(starts)  # each kept item's first row: its baseline or first snapshot
    based = sel_base[first]
    s = first + based
    e = np.append(first[1:], len(sel))
    x = d.values[sel]
    counts = e - s
    result.samples = int(counts.sum())
    n_kept = len(first)
    group = np.repeat(np.arange(n_kept), e - first)
    xm = x[~sel_base]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    avg = np.add.reduceat(xm, offsets, axis=0) / counts[:, None]
    mn = np.minimum.reduceat(xm, offsets, axis=0)
    mx = np.maximum.reduceat(xm, offsets, axis=0)
    last = x[e - 1]
    energy = np.rint(_energy(x, sel_at, group, n_kept) * ENERGY_UNITS_PER_WH)  # stored units (10 uWh)
    check_thermal = result.has_temperature
    quiet = _quiet(x, first, based) if not check_thermal else np.zeros(n_kept, dtype=bool)
    # assemble float columns in STAT_COLUMNS order
    floats: list[np.ndarray[Any, Any]] = []
    energy_idx = {sub: i for i, sub in enumerate(ENERGY_SUBSYSTEMS)}
    for col in STAT_COLUMNS:
        if col.sql_type in ENUM_TYPES:
            continue
        if col.stat == "energy":
            floats.append(energy[:, energy_idx[col.subsystem]])
            continue
        assert col.field is not None
        j = _COL[col.field.column]
        if col.stat == "count":  # of a 0/1 value: its mean times the samples
            floats.append(np.rint(avg[:, j] * counts))
            continue
        source = {"avg": avg, "min": mn, "max": mx, "last": last}[col.stat]
        floats.append(source[:, j])
    owners = sel_owner[first].tolist()
    result.keys = [(items[i].meter_id, items[i].minute_ms) for i in owners]
    texts = [d.enums[row] for row in sel[e - 1].tolist()]
    seq_first, seq_last = _seqs(d.seq[sel], sel_base, first)
    repaired = [items[i].repaired for i in owners]
    if encode:
        result.encoded.append(
            copybin.encode_rows(
                meter_ids=[meter for meter, _ in result.keys],
                minute_ms=[minute for _, minute in result.keys],
                counts=counts.tolist(),
                first_ms=sel_at[s].tolist(),
                last_ms=sel_at[e - 1].tolist(),
                floats=np.column_stack(floats),
                texts=texts,
                seq_first=seq_first,
                seq_last=seq_last,
                repaired=repaired,
            )
        )
    else:
        matrix = copybin.as_python(np.column_stack(floats))
        for g, (count, first_ms, last_ms) in enumerate(
            zip(counts.tolist(), sel_at[s].tolist(), sel_at[e - 1].tolist(), strict=True)
        ):
            meter, minute = result.keys[g]
            seqs = copybin.seq_columns(seq_first[g], seq_last[g])
            result.rows.append(
                (
                    meter,
                    ms_to_dt(minute),
                    count,
                    first_ms - minute,
                    last_ms - minute,
                    *matrix[g],
                    *texts[g],
                    *seqs,
                    repaired[g],
                )
            )
    for g, i in enumerate(owners):
        item = items[i]
        if quiet[g]:
            continue
        _events(
            item.meter_id,
            x[first[g] : e[g]],
            [_Point.of(d, row) for row in sel[first[g] : e[g]].tolist()],
            has_base=bool(based[g]),
            thresholds=thresholds,
            out=result.events,
            check_thermal=check_thermal,
        )
    return result


def _seqs(
    seq: np.ndarray[Any, Any], is_base: np.ndarray[Any, Any], first: np.ndarray[Any, Any]
) -> tuple[list[int], list[int]]:
    """Per kept item (rows ``first[g]`` up to the next item's, by time): the ``seq`` of its first and
    last in-minute snapshot that carries one; -1 for both when none does."""
    n = len(first)
    has = (seq >= 0) & ~is_base
    if not has.any():
        none = [-1] * n
        return none, list(none)
    index = np.arange(len(seq))
    lo = np.minimum.reduceat(np.where(has, index, len(seq)), first)
    hi = np.maximum.reduceat(np.where(has, index, -1), first)
    found = hi >= 0
    seq_first = np.where(found, seq[np.minimum(lo, len(seq) - 1)], -1)
    seq_last = np.where(found, seq[np.maximum(hi, 0)], -1)
    return seq_first.tolist(), seq_last.tolist()


@dataclass(frozen=True, slots=True)
class _Point:
    """What an event says of the snapshot that raised it."""

    at: datetime
    temperature: float | None

    @classmethod
    def of(cls, d: batch.Decoded, row: int) -> _Point:
        at = d.at[row]
        assert at is not None  # rows of usable snapshots only
        temperature = float(d.temperature[row])
        return cls(at, None if np.isnan(temperature) else temperature)


def _energy(
    x: np.ndarray[Any, Any], at: np.ndarray[Any, Any], group: np.ndarray[Any, Any], n_groups: int
) -> np.ndarray[Any, Any]:
    out = np.zeros((n_groups, len(_ENERGY_COLS)))
    if len(x) < 2:
        return out
    same = group[1:] == group[:-1]
    pair_group = group[1:][same]
    spans_a_day = (at[1:] - at[:-1])[same] >= DAY_MS  # the daily counter reset in between
    counters = x[:, _COUNTER_COLS]  # only the counters, before the pairs are cut out
    prev, cur = counters[:-1][same], counters[1:][same]
    for k, (total, others) in enumerate(_ENERGY_LOCAL):
        dt = cur[:, total] - prev[:, total]
        d_daily = cur[:, others[0]] - prev[:, others[0]]
        fallback = cur[:, [total, *others]].min(axis=1)  # every counter went down: since the reset
        believed = (d_daily < 0) | (dt <= d_daily + ROUNDING_WH) | spans_a_day
        for col in reversed(others):  # daily first, then settlement
            d = cur[:, col] - prev[:, col]
            fallback = np.where(d >= 0, d, fallback)
            if col != others[0]:  # the settlement counter grew as much (the daily one reset meanwhile)
                believed |= np.abs(dt - d) <= ROUNDING_WH
        use_total = (dt >= 0) & believed
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
    points: list[_Point],
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
    prev_level = _level(points[0].temperature, thresholds) if has_base else 0
    for i in range(first, len(rows)):
        point = points[i]
        at = point.at
        if alert[i] != prev_alert:
            raised = bool(alert[i])
            out.append(
                Event(
                    meter_id,
                    at,
                    "battery_alert_raised" if raised else "battery_alert_cleared",
                    "warning" if raised else "info",
                    {"soc": float(rows[i, _SOC]), "alert_threshold": int(rows[i, _THRESHOLD])},
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
        temp = point.temperature
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
