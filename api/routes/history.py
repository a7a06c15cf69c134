"""History of a meter: aggregates at 1m/5m/1h/1d from PostgreSQL, JSON or CSV.

``GET /telemetry/history/{meter_id}`` (default resolution 1m) and ``GET /meters/{meter_id}/history``
(default ``auto``: the finest resolution whose point count fits ``ENERLINK_API_MAX_POINTS``, so a
ten-year range is answered from the daily rollup). Each resolution has its own retention in
PostgreSQL (the archiver moves older months to the archive store): a range reaching into archived
months is answered at the finest coarser resolution still holding it, and the answer says so
(``resolution``, ``note``; the ``X-Enerlink-Resolution`` header, also on CSV). Every query is
bounded three ways: the point count is checked before querying (422 naming a coarser resolution),
the rows are capped by ``LIMIT``, and PostgreSQL cancels the statement after
``ENERLINK_API_QUERY_TIMEOUT_S`` (503). Each refusal is counted in :data:`QUERY_STATS`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import CounterMetricFamily
from psycopg import sql

from enerlink.aggregator.columns import DERIVED, OFFSET_COLUMNS
from enerlink.api.deps import AppState, State, iso, utc
from enerlink.api.models import HistoryResponse, Problem, Resolution, ResolutionChoice
from enerlink.api.routes.latest import MeterIdPath
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)
router = APIRouter(tags=["history"])

#: resolution -> (table, bucket width, default window when ``start`` is not given)
RESOLUTIONS: dict[str, tuple[str, timedelta, timedelta]] = {
    "1m": (Tables.TELEMETRY_AGGREGATES, timedelta(minutes=1), timedelta(hours=6)),
    "5m": (Tables.TELEMETRY_5M, timedelta(minutes=5), timedelta(days=1)),
    "1h": (Tables.TELEMETRY_1H, timedelta(hours=1), timedelta(days=7)),
    "1d": (Tables.TELEMETRY_1D, timedelta(days=1), timedelta(days=90)),
}
#: the table whose months the archiver moves to the archive store, per resolution (its retention)
ARCHIVED_AS: dict[str, str] = {
    "1m": Tables.TELEMETRY_AGGREGATES,
    "5m": Tables.TELEMETRY_5M_CLOSED,
    "1h": Tables.TELEMETRY_1H_FOLDED,
    "1d": Tables.TELEMETRY_1D_FOLDED,
}
KEY_COLUMNS = ("meter_id", "bucket")
STAT_SUFFIXES = ("avg", "min", "max", "last", "ratio", "count")
_FIELD = re.compile(r"^[a-z0-9_]{1,80}$")


@dataclass(slots=True, eq=False)  # hashable: a Prometheus registry keys its collectors
class QueryStats:
    """Bounded-query counters of the history and health routes (a Prometheus collector)."""

    too_many_points: int = 0  # refused before querying: more points than ENERLINK_API_MAX_POINTS
    timeouts: int = 0  # cancelled by statement_timeout
    auto_resolution: int = 0  # ``auto`` requests, answered at the resolution they fit

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc, value in (
            (
                "too_many_points",
                "History/health requests refused: more points than allowed",
                self.too_many_points,
            ),
            ("timeouts", "History/health queries cancelled by the statement timeout", self.timeouts),
            ("auto_resolution", "History requests with resolution=auto", self.auto_resolution),
        ):
            yield CounterMetricFamily(f"enerlink_api_query_{name}", doc, value=value)


#: one per process; registered on the app's /metrics registry
QUERY_STATS = QueryStats()


async def bounded_rows(
    state: State, query: sql.Composable, params: Sequence[Any] | Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """Run one read under ``statement_timeout``; a cancelled query is a 503 that says what to do."""
    timeout_s = state.settings.query_timeout_s
    try:
        async with state.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select set_config('statement_timeout', %s, true)", (str(max(1, round(timeout_s * 1000))),)
            )
            cur = await conn.execute(query, params)
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows
    except psycopg.errors.QueryCanceled as exc:
        QUERY_STATS.timeouts += 1
        log.warning("api: query cancelled after %.1f s: %s", timeout_s, exc)
        raise HTTPException(
            503, f"the query took longer than {timeout_s:g} s: narrow the range or use a coarser resolution"
        ) from exc


def too_many_points(*, start: datetime, end: datetime, points: int, unit: str, limit: int) -> HTTPException:
    QUERY_STATS.too_many_points += 1
    return HTTPException(
        422,
        f"{start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ} is {points} points at {unit};"
        f" the maximum is {limit}: narrow the range or use a coarser resolution",
    )


def available_fields(columns: list[str]) -> list[str]:
    """A table's statistic columns, then the values computed from them (:data:`DERIVED`: e.g.
    ``net_grid_import_power_avg``, a copy of ``import_power_avg`` that is not stored, the shares
    ``*_ratio`` and the energies in Wh ``*_energy_wh``)."""
    stored = [c for c in columns if c not in KEY_COLUMNS and c not in OFFSET_COLUMNS]
    present = set(columns)
    return stored + [d.name for d in DERIVED if d.name not in present and present.issuperset(d.sources)]


def resolve_fields(requested: str | None, columns: list[str]) -> list[str]:
    """``battery_soc`` -> its existing stat columns; an exact column name is taken as is."""
    available = available_fields(columns)
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


async def meter_known(state: State, meter_id: str, *tables: str) -> bool:
    """Seen by the ingest (Redis) or present in one of ``tables`` (or the minute table)."""
    keys = state.settings.common.keys.of(meter_id)
    for key in (keys.meters, keys.latest_data, keys.latest_status):
        if await state.redis.hexists(key, meter_id):
            return True
    for name in dict.fromkeys((*tables, Tables.TELEMETRY_AGGREGATES)):
        if not await state.columns(name):
            continue
        query = sql.SQL("select exists(select 1 from {} where meter_id = %s)").format(sql.Identifier(name))
        if (await bounded_rows(state, query, (meter_id,)))[0][0]:
            return True
    return False


_DERIVED = {d.name: d for d in DERIVED}


def select_item(name: str, columns: Collection[str]) -> sql.Composable:
    """A stored column (of ``columns``), or the expression of a derived one under its name."""
    derived = _DERIVED.get(name)
    if derived is None or name in columns:
        return sql.Identifier(name)
    # the expression is the catalogue's own text (column names from it, never from the request)
    return sql.SQL("{} as {}").format(sql.SQL(derived.sql), sql.Identifier(name))


def _plain_query(table: str, chosen: list[str], columns: Collection[str]) -> sql.Composed:
    return sql.SQL(
        "select bucket{} from {} where meter_id = %s and bucket >= %s and bucket < %s"
        " order by bucket limit %s"
    ).format(sql.SQL("").join(sql.SQL(", ") + select_item(c, columns) for c in chosen), sql.Identifier(table))


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


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"example": "bucket,battery_soc_avg\n2025-10-26T04:27:00Z,86.6\n"}}},
    404: {"model": Problem, "description": "unknown meter"},
    422: {"model": Problem, "description": "bad id, range, field, or more points than allowed"},
    503: {"model": Problem, "description": "table missing for this resolution, or the query timed out"},
}
_AUTO_WINDOW = timedelta(days=1)
Fields = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="comma-separated, e.g. battery_soc,import_power",
        examples=["battery_soc"],
    ),
]
Start = Annotated[datetime | None, Query(description="inclusive; default depends on resolution")]
End = Annotated[datetime | None, Query(description="exclusive; default now; no offset = UTC")]


async def _archived_months(state: State, table: str, *, start: datetime, end: datetime) -> list[str]:
    """The months of ``table`` within ``[start, end)`` that are in the archive store, not in PostgreSQL."""
    query = sql.SQL(
        "select year, month from {} where table_name = %s"
        " and make_timestamptz(year, month, 1, 0, 0, 0, 'UTC') < %s"
        " and make_timestamptz(year, month, 1, 0, 0, 0, 'UTC') + interval '1 month' > %s order by 1, 2"
    ).format(sql.Identifier(Tables.ARCHIVE_MANIFEST))
    rows = await bounded_rows(state, query, (table, end, start))
    return [f"{int(year):04d}-{int(month):02d}" for year, month in rows]


async def held_resolution(
    state: State, resolution: Resolution, *, start: datetime, end: datetime
) -> tuple[Resolution, str | None]:
    """``resolution``, or the finest coarser one whose rows of ``[start, end)`` are all still in
    PostgreSQL when some of ``resolution``'s are archived (each resolution has its own retention),
    with a note that says so."""
    archived = await _archived_months(state, ARCHIVED_AS[resolution], start=start, end=end)
    if not archived:
        return resolution, None
    months = ", ".join(archived)
    order = list(RESOLUTIONS)
    for coarser in order[order.index(resolution) + 1 :]:
        if not await _archived_months(state, ARCHIVED_AS[coarser], start=start, end=end):
            return coarser, (  # type: ignore[return-value]
                f"the {resolution} rows of {months} are archived (GET /archive; enerlink archive"
                f" --restore YYYY-MM brings a month back): answered at {coarser}, the finest still held"
            )
    return (
        resolution,
        f"the {resolution} rows of {months} are archived and no coarser resolution holds them all",
    )


def _choose(
    choice: str, *, start: datetime | None, end: datetime | None, limit: int
) -> tuple[Resolution, datetime, datetime]:
    """The resolution and the UTC range; ``auto`` is the finest resolution within ``limit`` points."""
    try:
        end_at = utc(end) if end else datetime.now(UTC)
        window = _AUTO_WINDOW if choice == "auto" else RESOLUTIONS[choice][2]
        start_at = utc(start) if start else end_at - window
    except (OverflowError, ValueError) as exc:
        raise HTTPException(422, f"bad range: {exc}") from exc
    if start_at >= end_at:
        raise HTTPException(422, "start must be before end")
    candidates: list[Resolution] = ["1m", "5m", "1h", "1d"] if choice == "auto" else [choice]  # type: ignore[list-item]
    if choice == "auto":
        QUERY_STATS.auto_resolution += 1
    for resolution in candidates:
        points = math.ceil((end_at - start_at) / RESOLUTIONS[resolution][1])
        if points <= limit:
            return resolution, start_at, end_at
    raise too_many_points(start=start_at, end=end_at, points=points, unit=candidates[-1], limit=limit)


async def _history(
    *,
    state: State,
    meter_id: str,
    start: datetime | None,
    end: datetime | None,
    choice: str,
    fields: str | None,
    accept: str | None,
) -> Response:
    limit = state.settings.max_points
    resolution, start_at, end_at = _choose(choice, start=start, end=end, limit=limit)
    resolution, note = await held_resolution(state, resolution, start=start_at, end=end_at)
    table = RESOLUTIONS[resolution][0]
    columns = await state.columns(table)
    if not columns:
        raise HTTPException(503, f"resolution {resolution} is not available: table {table} does not exist")
    try:
        chosen = resolve_fields(fields, columns)
    except HTTPException as exc:
        if exc.status_code != 422:
            raise
        columns = await state.columns(table, refresh=True)
        chosen = resolve_fields(fields, columns)
    if not await meter_known(state, meter_id, table):
        raise HTTPException(404, f"unknown meter {meter_id}")
    rows = await bounded_rows(
        state, _plain_query(table, chosen, columns), (meter_id, start_at, end_at, limit)
    )
    headers = {"X-Enerlink-Resolution": resolution}
    if accept and "text/csv" in accept.lower():
        return Response(_csv(chosen, rows), media_type="text/csv; charset=utf-8", headers=headers)
    body = {
        "meter_id": meter_id,
        "resolution": resolution,
        **({"note": note} if note else {}),
        "table": table,
        "start": iso(start_at),
        "end": iso(end_at),
        "fields": chosen,
        "points": [
            {"bucket": iso(row[0]), **{c: _cell(v) for c, v in zip(chosen, row[1:], strict=True)}}
            for row in rows
        ],
    }
    return JSONResponse(body, headers=headers)


@router.get(
    "/telemetry/history/{meter_id}",
    response_model=HistoryResponse,
    responses=_RESPONSES,
    summary="Aggregated history of a meter (JSON, or CSV with Accept: text/csv)",
)
async def history(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    start: Start = None,
    end: End = None,
    resolution: Annotated[ResolutionChoice, Query(description="auto: the finest within the limit")] = "1m",
    fields: Fields = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    return await _history(
        state=state, meter_id=meter_id, start=start, end=end, choice=resolution, fields=fields, accept=accept
    )


@router.get(
    "/meters/{meter_id}/history",
    response_model=HistoryResponse,
    responses=_RESPONSES,
    summary="The same history; resolution defaults to auto (any range, e.g. ten years, at 1d)",
)
async def meter_history(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    start: Start = None,
    end: End = None,
    resolution: Annotated[ResolutionChoice, Query(description="auto: the finest within the limit")] = "auto",
    fields: Fields = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    return await _history(
        state=state, meter_id=meter_id, start=start, end=end, choice=resolution, fields=fields, accept=accept
    )
