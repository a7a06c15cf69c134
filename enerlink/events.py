"""The one writer of the ``events`` table (alerts, presence, commands, settlements, completeness).

An event is stored once per (meter, kind, time): writing it again (a re-aggregation, a retried job) adds
nothing. Many events at once (a fleet-wide outage raises thousands) go through COPY into a staging table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection

from enerlink.schemas.wire import Tables

Conn = AsyncConnection[Any]
Severity = Literal["info", "warning", "critical"]

_TABLE = f'"{Tables.EVENTS}"'
_STAGING = "_enerlink_events_staging"
_COLUMNS = "meter_id, at, kind, severity, details"
COPY_EVENTS_FROM = 50  # more events than this go through COPY


@dataclass(frozen=True, slots=True)
class Event:
    meter_id: str
    at: datetime
    kind: str
    severity: str
    details: dict[str, Any]


async def insert_events(conn: Conn, events: Sequence[Event]) -> int:
    """Insert events; returns how many were new. Call inside a transaction when there may be more than
    :data:`COPY_EVENTS_FROM` (the COPY path's staging table is emptied at commit)."""
    if not events:
        return 0
    rows = [(e.meter_id, e.at, e.kind, e.severity, json.dumps(e.details, default=str)) for e in events]
    if len(rows) > COPY_EVENTS_FROM:
        await conn.execute(
            f"create temp table if not exists {_STAGING} (meter_id text, at timestamptz,"
            " kind text, severity text, details jsonb) on commit delete rows".encode()
        )
        statement = f"copy {_STAGING} ({_COLUMNS}) from stdin".encode()
        async with conn.cursor().copy(statement) as copy:
            for row in rows:
                await copy.write_row(row)
        cur = await conn.execute(
            f"insert into {_TABLE} ({_COLUMNS}) select distinct on (meter_id, kind, at)"
            f" {_COLUMNS} from {_STAGING} on conflict (meter_id, kind, at) do nothing".encode()
        )
        await conn.execute(f"delete from {_STAGING}".encode())
        return max(cur.rowcount, 0)
    async with conn.cursor() as cur:
        await cur.executemany(
            f"insert into {_TABLE} ({_COLUMNS})"
            " values (%s, %s, %s, %s, %s::jsonb) on conflict (meter_id, kind, at) do nothing".encode(),
            rows,
        )
        return max(cur.rowcount, 0)
