"""One part of a batch: its minute rows into PostgreSQL, inside the minute's (or late batch's) transaction."""

from __future__ import annotations

import logging
import time

import psycopg

from enerlink.aggregator import rollups, store
from enerlink.aggregator.compute import Result, ms_to_dt
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)


async def write_part(
    conn: store.Conn,
    part: Result,
    *,
    partitions: store.Partitions,
    timezone: str,
    maybe_folded: bool,
    new_minute: bool = False,
    bucket_open: bool = False,
) -> float:
    """COPY to the emptied staging table, note which rows replace stored ones, one insert or
    upsert, the 5-minute rollup merged or recomputed (rollups.refresh). Returns the rollup's seconds.

    ``new_minute`` (a minute after the watermark: no stored row expected) COPYs the rows into the
    ``bucket_open``: the minute's 5-minute bucket is known to be open (:func:`rollups.bucket_open`).
    ``new_minute`` COPYs the rows into the
    minute table too, under a savepoint, and only if a row was there after all notes the replaced
    rows and upserts: a successful COPY proves none was replaced, without a primary-key probe per
    row (and COPY inserts in batches, which an ``insert ... select`` does not)."""
    if not part.keys:
        return 0.0
    await partitions.ensure(conn, {ms_to_dt(minute) for minute in {m for _, m in part.keys}})
    await store.clear_staging(conn)
    await store.copy_encoded(conn, part.encoded)  # both compute paths encode (compute(encode=True))
    replaced = -1
    if new_minute:
        try:
            async with conn.transaction():  # COPY again, into the minute table: cheaper than an insert
                await store.copy_encoded(conn, part.encoded, table=Tables.TELEMETRY_AGGREGATES)
            await rollups.none_replaced(conn)
            replaced = 0
        except psycopg.errors.UniqueViolation:
            log.warning("aggregate: minute rows already stored after the watermark; replacing them")
    if replaced < 0:
        replaced = await rollups.mark_replaced(conn, staging=store.STAGING)
        await store.upsert_from_staging(conn, replaces=replaced > 0)
    began = time.monotonic()
    await rollups.refresh(
        conn,
        staging=store.STAGING,
        timezone=timezone,
        replaced=replaced,
        one_per_meter=len({meter for meter, _ in part.keys}) == len(part.keys),
        maybe_folded=maybe_folded,
        bucket_open=bucket_open,
    )
    return time.monotonic() - began
