"""Completeness of readings, from ``seq`` (enerlink/completeness.py has the rule).

``GET /meters/{meter_id}/completeness?bucket=1h|1d&start=&end=``: expected, received, repaired and
missing readings per hour (default: the last 24 hours) or per day of ``ENERLINK_TIMEZONE`` (default:
the last 7 days), and their total; unknown (null) for a meter without ``seq``. ``start`` is moved
back to the start of its bucket. ``GET /completeness`` gives the same per bucket for the fleet (over
at most :data:`FLEET_MAX_RANGE`), with the meters below ``ENERLINK_COMPLETENESS_THRESHOLD``.
Queries run under the history routes' statement timeout (503).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from psycopg import sql

from enerlink import completeness
from enerlink.api.deps import AppState, State, iso, utc
from enerlink.api.models import FleetCompleteness, MeterCompleteness, Problem
from enerlink.api.routes.history import bounded_rows, meter_known
from enerlink.api.routes.latest import MeterIdPath

router = APIRouter(tags=["completeness"])

BucketChoice = Literal["1h", "1d"]
#: bucket -> default window when ``start`` is not given
DEFAULT_WINDOW: dict[str, timedelta] = {"1h": timedelta(hours=24), "1d": timedelta(days=7)}
#: the widest range one meter may be asked for (about three months of minute rows)
MAX_RANGE = timedelta(days=93)
#: the widest fleet range (every meter's minute rows are read)
FLEET_MAX_RANGE = timedelta(days=2)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown meter"},
    422: {"model": Problem, "description": "bad id or range"},
    503: {"model": Problem, "description": "the query timed out"},
}
Start = Annotated[datetime | None, Query(description="inclusive, moved back to its bucket's start")]
End = Annotated[datetime | None, Query(description="exclusive; default now; no offset = UTC")]
BucketQuery = Annotated[BucketChoice, Query(description="1h, or 1d (days of ENERLINK_TIMEZONE)")]


def bucket_start(moment: datetime, bucket: str, timezone: str) -> datetime:
    """The start of the hour (UTC) or the local day holding ``moment``."""
    if bucket == "1h":
        return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    local = moment.astimezone(ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _range(
    bucket: str, *, start: datetime | None, end: datetime | None, timezone: str, widest: timedelta
) -> tuple[datetime, datetime]:
    try:
        end_at = utc(end) if end else datetime.now(UTC)
        start_at = bucket_start(utc(start) if start else end_at - DEFAULT_WINDOW[bucket], bucket, timezone)
    except (OverflowError, ValueError) as exc:
        raise HTTPException(422, f"bad range: {exc}") from exc
    if start_at >= end_at:
        raise HTTPException(422, "start must be before end")
    if end_at - start_at > widest:
        raise HTTPException(422, f"the range is longer than {widest.days} days: narrow it")
    return start_at, end_at


def _point(part: completeness.Completeness) -> dict[str, Any]:
    return {"bucket": None if part.bucket is None else iso(part.bucket), **part.to_dict()}


async def _meter(
    state: State, meter_id: str, bucket: BucketChoice, start: datetime, end: datetime
) -> list[Any]:
    params = completeness.params(
        start=start, end=end, timezone=state.settings.common.timezone, meter_id=meter_id
    )
    return await bounded_rows(state, sql.SQL(completeness.query(bucket=bucket, one_meter=True)), params)


@router.get(
    "/meters/{meter_id}/completeness",
    response_model=MeterCompleteness,
    responses=_RESPONSES,
    summary="Readings expected (from seq), received, repaired and missing per hour or day",
)
async def meter_completeness(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    bucket: BucketQuery = "1h",
    start: Start = None,
    end: End = None,
) -> dict[str, Any]:
    timezone = state.settings.common.timezone
    start_at, end_at = _range(bucket, start=start, end=end, timezone=timezone, widest=MAX_RANGE)
    if not await meter_known(state, meter_id):
        raise HTTPException(404, f"unknown meter {meter_id}")
    parts = [completeness.from_row(tuple(r)) for r in await _meter(state, meter_id, bucket, start_at, end_at)]
    return {
        "meter_id": meter_id,
        "bucket": bucket,
        "timezone": timezone,
        "start": iso(start_at),
        "end": iso(end_at),
        "threshold": state.settings.completeness.threshold,
        "total": _point(completeness.total(parts)),
        "points": [_point(p) for p in parts],
    }


@router.get(
    "/completeness",
    response_model=FleetCompleteness,
    responses={k: v for k, v in _RESPONSES.items() if k != 404},
    summary="The fleet's readings expected, received, repaired and missing per hour or day",
)
async def fleet_completeness(
    *, state: AppState, bucket: BucketQuery = "1h", start: Start = None, end: End = None
) -> dict[str, Any]:
    timezone = state.settings.common.timezone
    start_at, end_at = _range(bucket, start=start, end=end, timezone=timezone, widest=FLEET_MAX_RANGE)
    threshold = state.settings.completeness.threshold
    params = {**completeness.params(start=start_at, end=end_at, timezone=timezone), "threshold": threshold}
    rows = await bounded_rows(state, sql.SQL(completeness.fleet_query(bucket)), params)
    points = []
    for b, meters, with_seq, below, minutes, received, expected, repaired, missing in rows:
        part = completeness.Completeness(
            meter_id=None,
            bucket=b,
            minutes=int(minutes),
            received=int(received or 0),
            expected=None if expected is None else int(expected),
            repaired=None if repaired is None else int(repaired),
            missing=None if missing is None else int(missing),
        )
        points.append(
            {**_point(part), "meters": meters, "meters_with_seq": with_seq, "meters_below_threshold": below}
        )
    return {
        "bucket": bucket,
        "timezone": timezone,
        "start": iso(start_at),
        "end": iso(end_at),
        "threshold": threshold,
        "points": points,
    }
