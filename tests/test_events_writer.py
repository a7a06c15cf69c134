"""The one writer of the events table: once per (meter, kind, time), by rows or through COPY."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from enerlink.db import migrate
from enerlink.events import COPY_EVENTS_FROM, Event, insert_events
from enerlink.schemas.wire import Tables


async def test_events_are_stored_once_by_rows_and_by_copy(pg_schema: str) -> None:
    await migrate(pg_schema)
    at = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    few = [Event("M1", at, "offline", "warning", {"why": "lwt"}), Event("M2", at, "offline", "warning", {})]
    many = [
        Event(f"M{n}", at + timedelta(seconds=1), "battery_low", "critical", {"soc": n}) for n in range(80)
    ]
    assert len(many) > COPY_EVENTS_FROM
    async with await psycopg.AsyncConnection.connect(pg_schema) as conn:
        async with conn.transaction():
            assert await insert_events(conn, few) == 2
            assert await insert_events(conn, few) == 0  # written again: nothing new
        async with conn.transaction():
            assert await insert_events(conn, many + many[:5]) == 80  # duplicates inside one batch too
            assert await insert_events(conn, many) == 0
        assert await insert_events(conn, []) == 0
        query = f'select meter_id, kind, severity, details from "{Tables.EVENTS}" order by kind, meter_id'
        cur = await conn.execute(query.encode())
        rows = await cur.fetchall()
    assert len(rows) == 82
    assert ("M1", "offline", "warning", {"why": "lwt"}) in rows
    assert ("M7", "battery_low", "critical", {"soc": 7}) in rows
