"""How far the aggregator has got: its watermark row, readable by anyone (settlement waits on it).

The aggregator writes the row (:mod:`enerlink.aggregator.store`). With several shards, each shard
keeps a row of its own (``minutes.K/N``) and the fleet's row holds the oldest of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from enerlink.db import quote
from enerlink.schemas.wire import Tables
from enerlink.shards import Shard

MINUTES = "minutes"  # watermark row: last fully aggregated minute


async def read_watermark(conn: AsyncConnection[Any], shard: Shard = Shard.WHOLE) -> datetime | None:
    """The last minute the aggregator has fully written for every meter (None before its first job);
    with ``shard``, for that shard's meters (a shard without a row of its own yet, after the fleet
    was cut into more shards, starts where the fleet was)."""
    return await read_named(conn, shard.row_name(MINUTES), fallback=MINUTES)


async def read_named(
    conn: AsyncConnection[Any], name: str, *, fallback: str | None = None
) -> datetime | None:
    """The minute of the watermark row ``name``, else of the row ``fallback``."""
    cur = await conn.execute(
        f"select minute from {quote(Tables.AGGREGATOR_WATERMARK)} where name = any(%s)"
        " order by name = %s desc limit 1".encode(),
        ([name, fallback or name], name),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def advance(conn: AsyncConnection[Any], name: str, minute: datetime) -> None:
    """Move the watermark row ``name`` to ``minute``, never back (made when missing)."""
    table = quote(Tables.AGGREGATOR_WATERMARK)
    await conn.execute(
        f"insert into {table} as w (name, minute) values (%s, %s) on conflict (name) do update"
        " set minute = greatest(w.minute, excluded.minute), updated_at = now()".encode(),
        (name, minute),
    )
