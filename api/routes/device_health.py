"""``GET /meters/{meter_id}/health``: a meter's device-health history and its events.

Rows come from ``Tables.DEVICE_HEALTH`` (one per meter per minute, written by the aggregator from
status messages). Longer buckets are computed in SQL with the proper weighting: averages and
ratios weighted by ``sample_count``, minimum of minimums, maximum of maximums, sum of reboots, the
last uptime. Buckets of a day or less start on the clock of ``ENERLINK_TIMEZONE`` (so ``1d`` is a
local day, like the daily rollup). ``bucket=auto`` picks the finest width that gives at most
``AUTO_POINTS`` buckets. Unknown meter: 404 (as history); a known meter with no rows: 200, empty.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg import sql

from enerlink.aggregator.health import COLUMNS as HEALTH_COLUMNS
from enerlink.api.deps import AppState, iso, utc
from enerlink.api.models import Event, HealthBucket, HealthHistory, HealthPoint, Problem
from enerlink.api.routes.history import bounded_rows, meter_known, too_many_points
from enerlink.api.routes.latest import MeterIdPath
from enerlink.schemas.wire import Tables

router = APIRouter(tags=["device health"])

BUCKETS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
AUTO_POINTS = 1500  # ``auto``: a chart's worth of buckets
EVENTS_LIMIT = 1000
DEFAULT_WINDOW = timedelta(days=1)
_ORIGIN = datetime(2000, 1, 1)  # local midnight: day buckets start at midnight of ENERLINK_TIMEZONE

# weighted by sample_count over the rows where the value is known
_WEIGHTED = ("rssi_avg", "wifi_disconnected_ratio", "mqtt_disconnected_ratio")
_COLUMNS = ("minutes", *HEALTH_COLUMNS[2:])  # the table's columns after meter_id, minute


#: A bucket's start: buckets of a day or more (and 6 h) on the local calendar; shorter ones are
#: instants (the local boundary as a distance into the bucket), so the two 01:00 hours of the night
#: the clocks go back stay two buckets.
_LOCAL_START = "date_bin(%(step)s, minute at time zone %(tz)s, %(origin)s) at time zone %(tz)s"
_INSTANT_START = (
    "minute - ((minute at time zone %(tz)s) - date_bin(%(step)s, minute at time zone %(tz)s, %(origin)s))"
)
_SHORT = timedelta(hours=1)


def _bucket_query(start: str) -> sql.Composed:
    def weighted(name: str) -> sql.Composable:
        col = sql.Identifier(name)
        return sql.SQL(
            "sum({c} * sample_count) / nullif(sum(sample_count) filter (where {c} is not null), 0)"
        ).format(c=col)

    stats: list[sql.Composable] = [
        sql.SQL("count(*)"),
        sql.SQL("sum(sample_count)"),
        weighted("rssi_avg"),
        sql.SQL("min(rssi_min)"),
        weighted("wifi_disconnected_ratio"),
        weighted("mqtt_disconnected_ratio"),
        sql.SQL("max(mqtt_attempts_max)"),
        sql.SQL("min(free_heap_min)"),
        sql.SQL("sum(reboots)"),
        sql.SQL("min(sensors_connected_min)"),
        sql.SQL("max(sensors_total)"),
        sql.SQL(
            "(array_agg(uptime_last_ms order by minute desc) filter (where uptime_last_ms is not null))[1]"
        ),
    ]
    return sql.SQL(
        "select {} as b, {} from {} where meter_id = %(meter)s and minute >= %(start)s and minute < %(end)s"
        " group by b order by b limit %(limit)s"
    ).format(sql.SQL(start), sql.SQL(", ").join(stats), sql.Identifier(Tables.DEVICE_HEALTH))


_QUERY_LOCAL, _QUERY_INSTANT = _bucket_query(_LOCAL_START), _bucket_query(_INSTANT_START)
_EVENTS = sql.SQL(
    "select id, meter_id, at, kind, severity, details from {} where meter_id = %s and at >= %s and at < %s"
    " order by at, id limit %s"
).format(sql.Identifier(Tables.EVENTS))


def _choose(
    choice: str, *, start: datetime | None, end: datetime | None, limit: int
) -> tuple[str, datetime, datetime]:
    try:
        end_at = utc(end) if end else datetime.now(UTC)
        start_at = utc(start) if start else end_at - DEFAULT_WINDOW
    except (OverflowError, ValueError) as exc:
        raise HTTPException(422, f"bad range: {exc}") from exc
    if start_at >= end_at:
        raise HTTPException(422, "start must be before end")
    span = end_at - start_at
    if choice == "auto":
        most = min(AUTO_POINTS, limit) - 1
        fits = [name for name, step in BUCKETS.items() if math.ceil(span / step) <= most]
        choice = fits[0] if fits else "1d"
    points = math.ceil(span / BUCKETS[choice]) + 1  # +1: the first bucket may start before ``start``
    if points > limit:
        raise too_many_points(start=start_at, end=end_at, points=points, unit=choice, limit=limit)
    return choice, start_at, end_at


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _event(row: tuple[Any, ...]) -> Event:
    ident, meter_id, at, kind, severity, details = row
    if isinstance(details, str):
        details = json.loads(details)
    return Event(id=ident, meter_id=meter_id, at=iso(at) or "", kind=kind, severity=severity, details=details)


@router.get(
    "/meters/{meter_id}/health",
    response_model=HealthHistory,
    responses={
        404: {"model": Problem, "description": "unknown meter"},
        422: {"model": Problem, "description": "bad id or range, or more buckets than allowed"},
        503: {"model": Problem, "description": "the query took longer than ENERLINK_API_QUERY_TIMEOUT_S"},
    },
    summary="Device health of a meter (RSSI, disconnections, free heap, reboots, sensors) and its events",
)
async def device_health(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    start: Annotated[datetime | None, Query(description="inclusive; default 24 h before end")] = None,
    end: Annotated[datetime | None, Query(description="exclusive; default now; no offset = UTC")] = None,
    bucket: Annotated[HealthBucket, Query(description="bucket width; auto: at most 1500 buckets")] = "auto",
) -> HealthHistory:
    limit = state.settings.max_points
    chosen, start_at, end_at = _choose(bucket, start=start, end=end, limit=limit)
    if not await meter_known(state, meter_id, Tables.DEVICE_HEALTH):
        raise HTTPException(404, f"unknown meter {meter_id}")
    timezone = state.settings.common.timezone
    rows = await bounded_rows(
        state,
        _QUERY_INSTANT if BUCKETS[chosen] <= _SHORT else _QUERY_LOCAL,
        {
            "step": BUCKETS[chosen],
            "tz": timezone,
            "origin": _ORIGIN,
            "meter": meter_id,
            "start": start_at,
            "end": end_at,
            "limit": limit,
        },
    )
    events = await bounded_rows(state, _EVENTS, (meter_id, start_at, end_at, EVENTS_LIMIT + 1))
    return HealthHistory(
        meter_id=meter_id,
        start=iso(start_at) or "",
        end=iso(end_at) or "",
        bucket=chosen,  # type: ignore[arg-type]
        timezone=timezone,
        points=[
            HealthPoint(
                bucket=iso(row[0]) or "",
                **{name: _number(value) for name, value in zip(_COLUMNS, row[1:], strict=True)},
            )
            for row in rows
        ],
        events=[_event(row) for row in events[:EVENTS_LIMIT]],
        events_truncated=len(events) > EVENTS_LIMIT,
    )
