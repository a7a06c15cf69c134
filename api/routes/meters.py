"""``GET /meters`` (known meters, last seen, online) and ``GET /events`` (from the events table)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg import sql
from psycopg.rows import dict_row

from enerlink.api.deps import AppState, iso, utc
from enerlink.api.models import Event, MeterInfo
from enerlink.schemas.telemetry import METER_ID_PATTERN
from enerlink.schemas.wire import Tables

router = APIRouter(tags=["meters"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@router.get(
    "/meters", response_model=list[MeterInfo], summary="Known meters with last seen time and online state"
)
async def meters(state: AppState) -> list[MeterInfo]:
    keys = state.settings.common.keys
    async with state.redis.pipeline(transaction=False) as pipe:
        for part in keys.each_part():
            pipe.hgetall(part.meters)
            pipe.hgetall(part.presence)
            pipe.hkeys(part.latest_data)
            pipe.hkeys(part.latest_status)
        replies = await pipe.execute()
    seen_raw = {k: v for reply in replies[0::4] for k, v in reply.items()}
    presence_raw = {k: v for reply in replies[1::4] for k, v in reply.items()}
    data_ids = [m for reply in replies[2::4] for m in reply]
    status_ids = [m for reply in replies[3::4] for m in reply]
    now_ms = time.time() * 1000
    # last seen: when its newest message came (a meter whose clock runs ahead is "seen" at its
    # reading's own time, for the aggregator: shown as now)
    seen = {_text(k): int(min(float(_text(v)), now_ms)) for k, v in seen_raw.items()}
    presence: dict[str, dict[str, Any]] = {}
    for k, v in presence_raw.items():
        try:
            parsed = json.loads(v)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            presence[_text(k)] = parsed
    with_data = {_text(k) for k in data_ids}
    with_status = {_text(k) for k in status_ids}
    out: list[MeterInfo] = []
    for meter_id in sorted(set(seen) | set(presence) | with_data | with_status):
        last = seen.get(meter_id)
        marker = presence.get(meter_id)
        if marker is not None and "online" in marker:
            online = bool(marker["online"])
        else:
            online = last is not None and now_ms - last <= state.settings.offline_after_s * 1000
        out.append(
            MeterInfo(
                meter_id=meter_id,
                last_seen=iso(datetime.fromtimestamp(last / 1000, UTC)) if last is not None else None,
                last_seen_ms=last,
                online=online,
                online_since=marker.get("since") if marker else None,
                has_data=meter_id in with_data,
                has_status=meter_id in with_status,
            )
        )
    return out


def _event(row: dict[str, Any]) -> Event:
    fields = {k: (iso(v) if isinstance(v, datetime) else v) for k, v in row.items()}
    return Event.model_validate(fields)


@router.get(
    "/events", response_model=list[Event], summary="Events (offline/online, alarms ...), oldest first"
)
async def events(
    *,
    state: AppState,
    meter_id: Annotated[str | None, Query(pattern=METER_ID_PATTERN, max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="default: 24 hours ago; no offset = UTC")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[Event]:
    if not await state.columns(Tables.EVENTS):
        return []
    try:
        start = utc(since) if since else datetime.now(UTC) - timedelta(days=1)
        end = utc(until) if until is not None else None
    except (OverflowError, ValueError) as exc:  # a date beyond the calendar once in UTC
        raise HTTPException(422, f"bad range: {exc}") from exc
    if since is not None and end is not None and start >= end:
        raise HTTPException(422, "since must be before until")
    conditions: list[sql.Composable] = [sql.SQL("at >= %(start)s")]
    params: dict[str, Any] = {"start": start, "limit": limit}
    if end is not None:
        conditions.append(sql.SQL("at < %(until)s"))
        params["until"] = end
    if meter_id is not None:
        conditions.append(sql.SQL("meter_id = %(meter_id)s"))
        params["meter_id"] = meter_id
    if kind is not None:
        conditions.append(sql.SQL("kind = %(kind)s"))
        params["kind"] = kind
    query = sql.SQL("select * from {} where {} order by at, {} limit %(limit)s").format(
        sql.Identifier(Tables.EVENTS), sql.SQL(" and ").join(conditions), sql.SQL("1")
    )
    async with state.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        return [_event(row) for row in await cur.fetchall()]
