"""Billing settlements: the record of closed periods, shared by the API and ``enerlink settle``.
Closing periods (the settle command round) is :mod:`enerlink.settlement.settling`; this module holds the row,
the rules that finalize it, and reading/exporting it.

Life of a row: ``requested`` while ``settle`` waits for the meter's ack (deleted again on timeout,
refusal or an unreachable broker, with a ``command`` event either way), ``pending`` once the meter
has acknowledged: ``period_end`` = the ack's ``datetime`` (the device clock, the same clock the
minute aggregates are bucketed by) and the device's ``settled_import_wh`` / ``settled_export_wh``
stored; ``final`` once the aggregator's watermark covers ``period_end`` (:func:`finalize_ready`,
called after the ack, on every read, and while ``enerlink settle --wait-final`` polls).

Finalizing: energy = the sum of the minute aggregates' import / export energies (``*_energy_10uwh``)
(counter deltas, right across daily resets, settlements and re-flashes); a minute whose data span
(previous snapshot, last snapshot] straddles a boundary is split pro rata by time, so consecutive
periods add up to exactly the minutes' sum. Each period starts where the previous one ended; a
meter's first period starts at its first snapshot in the minute aggregates. A period is finalized
once the aggregator has done the minute of its end and the next one (about two minutes after the
close with the default grace).

Completeness: a period whose minutes still miss readings (from ``seq``: enerlink/completeness.py;
the minutes the period touches, ``[start's minute, end)``) stays ``pending`` while the pipeline
repairs them (the edge re-sends, the aggregator re-aggregates), until none is missing or
``ENERLINK_SETTLEMENT_REPAIR_DEADLINE_S`` has passed since ``period_end``; it is then final with
``readings_expected`` / ``_received`` / ``_repaired`` / ``_missing`` recorded (null for a meter
without ``seq``, which is finalized as soon as the watermark allows, as before).

``diff`` = device - pipeline; beyond the tolerance (max of ``ENERLINK_SETTLEMENT_TOLERANCE_WH`` and
``_PCT`` of the period's larger energy) the row is flagged ``mismatch`` and a
``settlement_mismatch`` warning event is raised. Late data re-aggregated after a settlement is final
does not change it (a bill, once issued, stays as issued).

A request cut off after sending (the process killed before the ack was recorded) leaves a
``requested`` row; the next request for that meter after its deadline deletes it and raises a
``settlement_abandoned`` warning event (the device may have reset its counters: the next
settlement's comparison shows it).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from enerlink import completeness
from enerlink.db import quote
from enerlink.events import Event, insert_events
from enerlink.schemas.wire import Tables
from enerlink.settlement.settings import SettlementSettings
from enerlink.watermark import read_watermark

log = logging.getLogger(__name__)

Conn = AsyncConnection[Any]
Connect = Callable[[], AbstractAsyncContextManager[Conn]]
MISMATCH_EVENT = "settlement_mismatch"
ABANDONED_EVENT = "settlement_abandoned"
_MINUTE = timedelta(minutes=1)
_T = quote(Tables.SETTLEMENTS)
_AGG = quote(Tables.TELEMETRY_AGGREGATES)


class SettlementError(Exception):
    """A settlement that could not be made; ``status`` is the HTTP status the API answers with."""

    status = 500


class MeterTimeout(SettlementError):
    status = 504


class MeterRefused(SettlementError):
    status = 502


class InProgress(SettlementError):
    status = 409


class UnknownMeter(SettlementError):
    status = 404


class BrokerUnavailable(SettlementError):
    status = 503


@dataclass(frozen=True, slots=True)
class Settlement:
    """One row of ``settlements``; also the JSON and CSV shape (same names, same order)."""

    id: int
    meter_id: str
    seq: int
    status: str
    period_start: datetime | None
    period_end: datetime | None
    import_wh: float | None
    export_wh: float | None
    net_wh: float | None  # export - import, like the firmware's net_grid (negative = net import)
    device_import_wh: float | None
    device_export_wh: float | None
    diff_import_wh: float | None  # device - pipeline
    diff_export_wh: float | None
    tolerance_wh: float | None
    mismatch: bool | None
    minutes: int | None
    request_id: str
    source: str
    requested_at: datetime
    acked_at: datetime | None
    finalized_at: datetime | None
    readings_expected: int | None = None  # the period's readings from seq (null: unknown) ...
    readings_received: int | None = None
    readings_repaired: int | None = None  # ... stored after a re-send
    readings_missing: int | None = None  # ... still missing when it became final
    ack: dict[str, Any] | None = None  # the meter's acknowledgement as received (not in JSON/CSV)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})

    def to_dict(self) -> dict[str, Any]:
        """The JSON/CSV fields (times as ISO 8601 UTC)."""
        return {c: _iso(v) if isinstance(v := getattr(self, c), datetime) else v for c in COLUMNS}


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Settlement) if f.name != "ack")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


async def fetch(conn: Conn, query: str, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query.encode(), params)
    return await cur.fetchall()


def table() -> str:
    """The settlements table, quoted for SQL."""
    return _T


async def event(conn: Conn, *, meter_id: str, at: datetime, kind: str, details: dict[str, Any]) -> None:
    """A settlement warning (abandoned, refused, ...) in the events table."""
    await insert_events(conn, [Event(meter_id, at, kind, "warning", details)])


# Each minute row's energy flowed over the span (previous row's last_at, last_at]: its first snapshot
# is paired with the last one before the minute (the aggregator's baseline), which is the previous
# row's last snapshot; a meter's very first row spans from its own first_at. A period [start, end)
# takes from every row the share of that span it covers, so a boundary inside a minute (or inside an
# outage, whose energy the first minute after it carries) is split by time, and consecutive periods
# add up to exactly the minutes' sum.
_IMPORT_WH, _EXPORT_WH = Tables.energy_wh_sql("import"), Tables.energy_wh_sql("export")
_FIRST_AT, _LAST_AT = Tables.minute_time_sql("first_at"), Tables.minute_time_sql("last_at")
_ENERGY_SQL = f"""
with scan as (
  select bucket, first_at, last_at, imp, exp, lag(last_at) over (order by bucket) as prev_last
  from (select bucket, {_FIRST_AT} as first_at, {_LAST_AT} as last_at, {_IMPORT_WH} as imp,
               {_EXPORT_WH} as exp, meter_id
        from {_AGG}) minutes
  where meter_id = %(meter)s
    and bucket >= coalesce((select max(bucket) from {_AGG} where meter_id = %(meter)s
                            and bucket < %(start)s::timestamptz - interval '1 minute'), '-infinity')
    and bucket <= coalesce((select min(bucket) from {_AGG} where meter_id = %(meter)s
                            and bucket >= %(end)s::timestamptz), %(end)s::timestamptz)
), spans as (
  select imp, exp, coalesce(prev_last, first_at) as lo, last_at as hi from scan
), shares as (
  select imp, exp, case
    when hi > lo then greatest(0.0, extract(epoch from least(hi, %(end)s) - greatest(lo, %(start)s)))
                      / extract(epoch from hi - lo)
    when lo >= %(start)s and lo < %(end)s then 1.0 else 0.0 end as share
  from spans
)
select coalesce(sum(coalesce(imp, 0) * share), 0) as imp_wh,
       coalesce(sum(coalesce(exp, 0) * share), 0) as exp_wh,
       count(*) filter (where share > 0) as minutes
from shares"""


async def _energy(conn: Conn, *, meter_id: str, start: datetime, end: datetime) -> tuple[float, float, int]:
    """Import and export Wh in ``[start, end)`` from the minute aggregates (see ``_ENERGY_SQL``)."""
    rows = await fetch(conn, _ENERGY_SQL, {"meter": meter_id, "start": start, "end": end})
    return float(rows[0]["imp_wh"]), float(rows[0]["exp_wh"]), int(rows[0]["minutes"])


async def _first_snapshot(conn: Conn, *, meter_id: str, end: datetime) -> datetime:
    """Where a meter's first period starts: its first snapshot in the minute aggregates."""
    rows = await fetch(
        conn,
        f"select min({_FIRST_AT}) as first from {_AGG} where meter_id = %s and bucket < %s",
        (meter_id, end),
    )
    first: datetime | None = rows[0]["first"]
    return min(first, end) if first is not None else end


def _difference(device: float | None, pipeline: float) -> float | None:
    return None if device is None else round(device - pipeline, 6)


async def _readings(
    conn: Conn, *, meter_id: str, start: datetime, end: datetime
) -> completeness.Completeness:
    """The completeness of the minutes a period touches."""
    parts = await completeness.of_meter(
        conn, meter_id=meter_id, start=start.replace(second=0, microsecond=0), end=end, bucket="all"
    )
    return completeness.total(parts)


def _repairing(s: Settlement, readings: completeness.Completeness, settings: SettlementSettings) -> bool:
    """Readings of the period are missing and the repair deadline has not passed yet."""
    assert s.period_end is not None
    deadline = s.period_end + timedelta(seconds=settings.repair_deadline_s)
    return bool(readings.missing) and datetime.now(UTC) < deadline


async def _finalize(conn: Conn, s: Settlement, settings: SettlementSettings) -> Settlement:
    assert s.period_end is not None
    async with conn.transaction():
        start = s.period_start or await _first_snapshot(conn, meter_id=s.meter_id, end=s.period_end)
        readings = await _readings(conn, meter_id=s.meter_id, start=start, end=s.period_end)
        if _repairing(s, readings, settings):
            return s
        imp, exp, minutes = await _energy(conn, meter_id=s.meter_id, start=start, end=s.period_end)
        tolerance = max(settings.tolerance_wh, settings.tolerance_pct / 100 * max(imp, exp))
        diff_imp = _difference(s.device_import_wh, imp)
        diff_exp = _difference(s.device_export_wh, exp)
        known = [abs(d) for d in (diff_imp, diff_exp) if d is not None]
        mismatch = any(d > tolerance for d in known) if known else None
        rows = await fetch(
            conn,
            f"update {_T} set status = 'final', finalized_at = now(), period_start = %s, import_wh = %s,"
            " export_wh = %s, net_wh = %s, minutes = %s, diff_import_wh = %s, diff_export_wh = %s,"
            " tolerance_wh = %s, mismatch = %s, readings_expected = %s, readings_received = %s,"
            " readings_repaired = %s, readings_missing = %s where id = %s and status = 'pending'"
            " returning *",
            (
                start,
                round(imp, 6),
                round(exp, 6),
                round(exp - imp, 6),
                minutes,
                diff_imp,
                diff_exp,
                round(tolerance, 6),
                mismatch,
                readings.expected,
                readings.received,
                readings.repaired,
                readings.missing,
                s.id,
            ),
        )
        if not rows:  # finalized meanwhile by another reader
            rows = await fetch(conn, f"select * from {_T} where id = %s", (s.id,))
            return Settlement.from_row(rows[0])
        done = Settlement.from_row(rows[0])
        if readings.missing:
            log.warning(
                "settlement %s of %s: final with %d of %d readings missing (repair deadline passed)",
                done.id,
                s.meter_id,
                readings.missing,
                readings.expected or 0,
            )
        if mismatch:
            await event(
                conn,
                meter_id=s.meter_id,
                at=s.period_end,
                kind=MISMATCH_EVENT,
                details={
                    "settlement_id": done.id,
                    "seq": done.seq,
                    "period_start": _iso(start),
                    "period_end": _iso(s.period_end),
                    "import": {"device": s.device_import_wh, "pipeline": done.import_wh, "diff": diff_imp},
                    "export": {"device": s.device_export_wh, "pipeline": done.export_wh, "diff": diff_exp},
                    "tolerance_wh": done.tolerance_wh,
                },
            )
            log.warning("settlement %s of %s: device and pipeline disagree %s", done.id, s.meter_id, known)
    return done


def ready(s: Settlement, watermark: datetime | None) -> bool:
    """Whether the minutes the period's end touches are aggregated: the end's own minute and the next
    one (whose span may start before the end). The watermark is the last aggregated minute."""
    if s.status != "pending" or s.period_end is None or watermark is None:
        return False
    end_minute = s.period_end.replace(second=0, microsecond=0)
    return watermark >= end_minute + _MINUTE


async def finalize_ready(
    connect: Connect, settlements: Sequence[Settlement], settings: SettlementSettings
) -> list[Settlement]:
    """The settlements with every ``pending`` one the watermark has passed made ``final`` (unless
    readings of its period are missing and the repair deadline has not passed)."""
    if not any(s.status == "pending" for s in settlements):
        return list(settlements)
    started = time.monotonic()
    out: list[Settlement] = []
    async with connect() as conn:
        watermark = await read_watermark(conn)
        for s in settlements:
            out.append(await _finalize(conn, s, settings) if ready(s, watermark) else s)
    done = sum(1 for a, b in zip(settlements, out, strict=True) if a.status != b.status)
    if done:
        log.info("finalized %d settlements in %.3f s", done, time.monotonic() - started)
    return out


async def get(connect: Connect, settings: SettlementSettings, *, meter_id: str, id: int) -> Settlement | None:
    async with connect() as conn:
        rows = await fetch(conn, f"select * from {_T} where meter_id = %s and id = %s", (meter_id, id))
    if not rows:
        return None
    return (await finalize_ready(connect, [Settlement.from_row(rows[0])], settings))[0]


async def list_for(
    connect: Connect, settings: SettlementSettings, *, meter_id: str, limit: int = 100
) -> list[Settlement]:
    """A meter's settlements, newest first."""
    async with connect() as conn:
        rows = await fetch(
            conn, f"select * from {_T} where meter_id = %s order by seq desc limit %s", (meter_id, limit)
        )
    return await finalize_ready(connect, [Settlement.from_row(r) for r in rows], settings)


def to_csv(settlements: Sequence[Settlement]) -> str:
    """Header plus one line per settlement (RFC 4180, UTC ISO times, empty for unknown)."""

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for s in settlements:
        row = s.to_dict()
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return buffer.getvalue()
