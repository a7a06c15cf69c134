"""How far the aggregator has got: its watermark row, readable by anyone (settlement waits on it).

The aggregator writes the row (:mod:`enerlink.aggregator.store`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from enerlink.db import quote
from enerlink.schemas.wire import Tables

MINUTES = "minutes"  # watermark row: last fully aggregated minute


async def read_watermark(conn: AsyncConnection[Any]) -> datetime | None:
    """The last minute the aggregator has fully written (None before its first job)."""
    cur = await conn.execute(
        f"select minute from {quote(Tables.AGGREGATOR_WATERMARK)} where name = %s".encode(), (MINUTES,)
    )
    row = await cur.fetchone()
    return row[0] if row else None
