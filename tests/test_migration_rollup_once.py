"""Migration 0011 (5-minute rows written once) on a database at the previous head: what the API
serves before and after (history JSON and CSV at every resolution, energy, completeness, settlement
energy) is the same, value by value; the complete buckets are in the closed table (full pages), the
open one in the open table, none in both; and the aggregator goes on from there: the rollups stay
the rollups of the minute rows.

The rows are realistic: the real aggregator computes two households' minutes in a schema of its
own; the test copies its minute rows, 5-minute rows, folded rows and fold state into a schema
migrated up to 0010, as the previous aggregator kept them (the same values: only where the
5-minute rows are stored changes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis.asyncio as aioredis

from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import as_before_compact, insert_rows, month_partitions
from tests.support.energyday import Household, aggregate_homes
from tests.test_aggregator import _assert_same, _sql_rollup, rows
from tests.test_migration_narrow import FIGURES, HISTORY, TZ, _reads, compare_reads, source_schema

NEW = 11
LATER = (12, 13, 14)  # held back with it (they expect 0011's shape)
_COPIED = (
    Tables.TELEMETRY_AGGREGATES,
    Tables.TELEMETRY_5M,
    Tables.TELEMETRY_1H_FOLDED,
    Tables.TELEMETRY_1D_FOLDED,
)


def _all(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"select * from {table} order by 1".encode())
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _keys(url: str, table: str) -> set[tuple[str, datetime]]:
    return {(r["meter_id"], r["bucket"]) for r in _all(url, table)}


def _fillfactor(url: str, table: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select array_to_string(reloptions, ',') from pg_class where oid = to_regclass(%s)", (table,)
        ).fetchone()
    return row[0] if row else None


async def test_rollup_written_once_migration_keeps_what_the_api_serves(
    environ: dict[str, str], redis_client: aioredis.Redis, uid: str
) -> None:
    url = environ["ENERLINK_DATABASE_URL"]
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(minutes=73)  # the last 5-minute bucket has three minutes
    homes = [Household("P", TZ, 1, range(3, 6)), Household("Q", TZ, 3, range(0))]
    ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    with source_schema(url, uid) as source:
        await aggregate_homes(
            {**environ, "ENERLINK_DATABASE_URL": source}, homes, start_ms=ms[0], end_ms=ms[1], timezone=TZ
        )
        copied = {table: _all(source, table) for table in (*_COPIED, Tables.ROLLUP_FOLD)}
        figures = await _reads(
            {**environ, "ENERLINK_DATABASE_URL": source}, start=start, end=end, kinds=FIGURES
        )
    assert len(copied[Tables.TELEMETRY_AGGREGATES]) == 2 * 73

    # the previous head, with the rows as the previous aggregator kept them
    assert NEW not in await migrate(url, skip={NEW, *LATER})
    for table in _COPIED:
        insert_rows(url, table, [as_before_compact(r) for r in copied[table]])
    insert_rows(url, Tables.ROLLUP_FOLD, copied[Tables.ROLLUP_FOLD])
    watermark = end - timedelta(minutes=1)
    with psycopg.connect(url) as conn:
        conn.execute(f"update {Tables.ROLLUP_STATE} set timezone = %s", (TZ,))
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)", (watermark,)
        )
        # read by this release's API with 0011 held back (the API migrates at start)
        for version in (NEW, *LATER):
            conn.execute(
                f"insert into {Tables.MIGRATIONS} (version, name) values (%s, 'held back')", (version,)
            )
    five_before = _keys(url, Tables.TELEMETRY_5M)
    before = {**await _reads(environ, start=start, end=end, kinds=HISTORY), **figures}
    with psycopg.connect(url) as conn:
        conn.execute(f"delete from {Tables.MIGRATIONS} where version = any(%s)", ([NEW, *LATER],))

    assert await migrate(url) == [NEW, *LATER]
    after = await _reads(environ, start=start, end=end)
    compare_reads(before, after)  # 0011 changes no value; 0012 their types (tests/test_migration_compact.py)
    assert before["settlement P"][0] > 0 and len(before["history P 5m"]) >= 15
    assert before["/meters/P/energy"]["total"]["grid_import_kwh"] > 0

    # the complete buckets are closed, the watermark's is open; each bucket in one table
    open_from = start + timedelta(minutes=70)
    closed, opened = _keys(url, Tables.TELEMETRY_5M_CLOSED), _keys(url, Tables.TELEMETRY_5M_OPEN)
    assert closed | opened == five_before and not closed & opened
    assert {b for _, b in opened} == {open_from} and all(b < open_from for _, b in closed)
    # partitioned by month since 0013: each month's heap fills its pages (no fillfactor set: 100)
    assert _fillfactor(url, Tables.TELEMETRY_5M_CLOSED) is None
    months = month_partitions(url, Tables.TELEMETRY_5M_CLOSED)
    assert months and all(options is None for options in months.values())
    assert _fillfactor(url, Tables.TELEMETRY_5M_OPEN) == "fillfactor=50"

    # the aggregator goes on (late data: the open bucket's last minutes and the next ones, merged
    # into the table that holds each bucket); the minute passes' moves: tests/test_aggregator_fold.py
    later = int((end + timedelta(minutes=9)).timestamp() * 1000)
    await aggregate_homes(environ, homes, start_ms=ms[1], end_ms=later, timezone=TZ)
    closed, opened = _keys(url, Tables.TELEMETRY_5M_CLOSED), _keys(url, Tables.TELEMETRY_5M_OPEN)
    assert not closed & opened and closed | opened == _keys(url, Tables.TELEMETRY_5M)
    assert ("P", start + timedelta(minutes=80)) in closed | opened
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=TZ))
