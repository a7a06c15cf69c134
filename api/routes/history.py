"""``GET /telemetry/history/{meter_id}``: aggregates at 1m/5m/1h/1d from PostgreSQL, JSON or CSV."""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from psycopg import sql

from api.deps import AppState, iso, utc
from api.models import HistoryResponse, Problem, Resolution
from api.routes.latest import MeterIdPath
from schemas.wire import Tables

router = APIRouter(prefix="/telemetry", tags=["history"])

#: resolution -> (table, bucket width, default window when ``start`` is not given)
RESOLUTIONS: dict[str, tuple[str, timedelta, timedelta]] = {
    "1m": (Tables.TELEMETRY_AGGREGATES, timedelta(minutes=1), timedelta(hours=6)),
    "5m": (Tables.TELEMETRY_5M, timedelta(minutes=5), timedelta(days=1)),
    "1h": (Tables.TELEMETRY_1H, timedelta(hours=1), timedelta(days=7)),
    "1d": (Tables.TELEMETRY_1D, timedelta(days=1), timedelta(days=90)),
}
KEY_COLUMNS = ("meter_id", "bucket")
STAT_SUFFIXES = ("avg", "min", "max", "last", "ratio")
_FIELD = re.compile(r"^[a-z0-9_]{1,80}$")


def resolve_fields(requested: str | None, columns: list[str]) -> list[str]:
    """``battery_soc`` -> its existing stat columns; an exact column name is taken as is."""
    available = [c for c in columns if c not in KEY_COLUMNS]
    if not requested:
        return available
    out: list[str] = []
    for name in (part.strip() for part in requested.split(",")):
        if not name:
            continue
        if not _FIELD.match(name):
            raise HTTPException(422, f"field {name!r}: use lower-case field names like battery_soc")
        if name in available:
            matches = [name]
        else:
            matches = [c for c in (f"{name}_{s}" for s in STAT_SUFFIXES) if c in available]
        if not matches:
            raise HTTPException(422, f"unknown field {name!r}")
        out.extend(m for m in matches if m not in out)
    return out


async def _meter_known(state: AppState, meter_id: str, table: str) -> bool:
    keys = state.settings.common.keys
    if await state.redis.hexists(keys.meters, meter_id) or await state.redis.hexists(
        keys.latest_data, meter_id
    ):
        return True
    for name in (table, Tables.TELEMETRY_AGGREGATES):
        if not await state.columns(name):
            continue
        async with state.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("select exists(select 1 from {} where meter_id = %s)").format(sql.Identifier(name)),
                (meter_id,),
            )
            row = await cur.fetchone()
        if row and row[0]:
            return True
    return False


def _plain_query(table: str, chosen: list[str]) -> sql.Composed:
    return sql.SQL(
        "select bucket{} from {} where meter_id = %s and bucket >= %s and bucket < %s"
        " order by bucket limit %s"
    ).format(sql.SQL("").join(sql.SQL(", ") + sql.Identifier(c) for c in chosen), sql.Identifier(table))


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv(fields: list[str], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["bucket", *fields])
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return out.getvalue()


@router.get(
    "/history/{meter_id}",
    response_model=HistoryResponse,
    responses={
        200: {"content": {"text/csv": {"example": "bucket,battery_soc_avg\n2025-10-26T04:27:00Z,86.6\n"}}},
        404: {"model": Problem, "description": "unknown meter"},
        422: {"model": Problem, "description": "bad id, range, field, or more points than allowed"},
        503: {"model": Problem, "description": "the table for this resolution does not exist yet"},
    },
    summary="Aggregated history of a meter (JSON, or CSV with Accept: text/csv)",
)
async def history(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    start: Annotated[datetime | None, Query(description="inclusive; default depends on resolution")] = None,
    end: Annotated[datetime | None, Query(description="exclusive; default now; no offset = UTC")] = None,
    resolution: Annotated[Resolution, Query()] = "1m",
    fields: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="comma-separated, e.g. battery_soc,import_power",
            examples=["battery_soc"],
        ),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    table, step, window = RESOLUTIONS[resolution]
    try:
        end_at = utc(end) if end else datetime.now(UTC)
        start_at = utc(start) if start else end_at - window
    except (OverflowError, ValueError) as exc:
        raise HTTPException(422, f"bad range: {exc}") from exc
    if start_at >= end_at:
        raise HTTPException(422, "start must be before end")
    points = math.ceil((end_at - start_at) / step)
    if points > state.settings.max_points:
        raise HTTPException(
            422,
            f"{start_at:%Y-%m-%dT%H:%MZ}..{end_at:%Y-%m-%dT%H:%MZ} is {points} points at {resolution};"
            f" the maximum is {state.settings.max_points}: narrow the range or use a coarser resolution",
        )
    columns = await state.columns(table)
    if not columns:
        raise HTTPException(503, f"resolution {resolution} is not available: table {table} does not exist")
    try:
        chosen = resolve_fields(fields, columns)
    except HTTPException as exc:
        if exc.status_code != 422:
            raise
        chosen = resolve_fields(fields, await state.columns(table, refresh=True))
    if not await _meter_known(state, meter_id, table):
        raise HTTPException(404, f"unknown meter {meter_id}")
    query = _plain_query(table, chosen)
    async with state.pool.connection() as conn:
        cur = await conn.execute(query, (meter_id, start_at, end_at, state.settings.max_points))
        rows = await cur.fetchall()
    if accept and "text/csv" in accept.lower():
        return Response(_csv(chosen, rows), media_type="text/csv; charset=utf-8")
    body = {
        "meter_id": meter_id,
        "resolution": resolution,
        "table": table,
        "start": iso(start_at),
        "end": iso(end_at),
        "fields": chosen,
        "points": [
            {"bucket": iso(row[0]), **{c: _cell(v) for c, v in zip(chosen, row[1:], strict=True)}}
            for row in rows
        ],
    }
    return JSONResponse(body)
