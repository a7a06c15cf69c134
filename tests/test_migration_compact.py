"""Migration 0012 (compact rows) on a database at the previous head: what the API serves before and
after (history JSON and CSV at every resolution, energy, completeness, settlement energy) is the
same to the stored types' resolution, but the currents' extremes; the rows are narrower; the counts
and energies are the shares and Wh converted; and the aggregator goes on from there: the rollups stay
the rollups of the minute rows.

The rows are realistic: the real aggregator computes two households' minutes in a schema of its
own; the test writes its minute rows, 5-minute rows (closed and open), folded rows and fold state, as
the previous release stored them (shares, Wh, a current's average standing in for its extremes),
into a schema migrated up to 0011."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import redis.asyncio as aioredis

from enerlink.db import migrate
from enerlink.schemas.fields import BOOL_FIELDS
from enerlink.schemas.wire import Tables
from tests.support.aggdata import as_before_compact, insert_rows
from tests.support.energyday import Household, aggregate_homes
from tests.test_aggregator import _assert_same, _sql_rollup, rows
from tests.test_migration_narrow import FIGURES, HISTORY, TZ, _reads, compare_reads, source_schema
from tests.test_migration_rollup_once import _all

NEW = 12
LATER = (13, 14)  # held back with it (they expect 0012's shape)
_COPIED = (
    Tables.TELEMETRY_AGGREGATES,
    Tables.TELEMETRY_5M_CLOSED,
    Tables.TELEMETRY_5M_OPEN,
    Tables.TELEMETRY_1H_FOLDED,
    Tables.TELEMETRY_1D_FOLDED,
)


def _row_size(url: str, table: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"select avg(pg_column_size(t.*))::float8 from {table} t".encode()).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def _types(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
            " where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped",
            (table,),
        ).fetchall()
    return {str(n): str(t) for n, t in found}


async def test_compact_rows_migration_keeps_what_the_api_serves(
    environ: dict[str, str], redis_client: aioredis.Redis, uid: str
) -> None:
    url = environ["ENERLINK_DATABASE_URL"]
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(minutes=73)  # the last 5-minute bucket has three minutes: open
    homes = [Household("P", TZ, 1, range(3, 6)), Household("Q", TZ, 3, range(0))]
    ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    with source_schema(url, uid) as source:
        await aggregate_homes(
            {**environ, "ENERLINK_DATABASE_URL": source}, homes, start_ms=ms[0], end_ms=ms[1], timezone=TZ
        )
        copied = {
            table: _all(source, table)
            for table in (*_COPIED, Tables.ROLLUP_FOLD, Tables.AGGREGATOR_WATERMARK)
        }
        figures = await _reads(
            {**environ, "ENERLINK_DATABASE_URL": source}, start=start, end=end, kinds=FIGURES
        )
    assert len(copied[Tables.TELEMETRY_AGGREGATES]) == 2 * 73
    assert copied[Tables.TELEMETRY_5M_OPEN]  # a backfill: the buckets stay open until a minute pass

    # the previous head, with the rows as the previous release stored them
    assert NEW not in await migrate(url, skip={NEW, *LATER})
    for table in _COPIED:
        insert_rows(url, table, [as_before_compact(r) for r in copied[table]])
    insert_rows(url, Tables.ROLLUP_FOLD, copied[Tables.ROLLUP_FOLD])
    with psycopg.connect(url) as conn:
        conn.execute(f"update {Tables.ROLLUP_STATE} set timezone = %s", (TZ,))
        conn.execute(f"delete from {Tables.AGGREGATOR_WATERMARK}")
    insert_rows(url, Tables.AGGREGATOR_WATERMARK, copied[Tables.AGGREGATOR_WATERMARK])
    with psycopg.connect(url) as conn:  # read by this release's API with 0012 held back
        for version in (NEW, *LATER):
            conn.execute(
                f"insert into {Tables.MIGRATIONS} (version, name) values (%s, 'held back')", (version,)
            )
    sizes = {t: _row_size(url, t) for t in (Tables.TELEMETRY_AGGREGATES, Tables.TELEMETRY_5M_OPEN)}
    shares = {(r["meter_id"], r["bucket"]): r for r in _all(url, Tables.TELEMETRY_AGGREGATES)}
    before = {**await _reads(environ, start=start, end=end, kinds=HISTORY), **figures}
    with psycopg.connect(url) as conn:
        conn.execute(f"delete from {Tables.MIGRATIONS} where version = any(%s)", ([NEW, *LATER],))

    assert await migrate(url) == [NEW, *LATER]
    after = await _reads(environ, start=start, end=end)
    compare_reads(before, after)
    assert before["settlement P"][0] > 0 and len(before["history P 5m"]) >= 15
    assert before["/meters/P/energy"]["total"]["grid_import_kwh"] > 0
    assert "import_current_min" in before["history P 1m"][0]
    assert "import_current_min" not in after["history P 1m"][0]

    # the rows: narrower, of the catalogue's types, the shares and Wh converted
    for table, was in sizes.items():
        assert _row_size(url, table) < was - 60, table
    types = _types(url, Tables.TELEMETRY_AGGREGATES)
    assert types["import_active_count"] == "smallint" and types["import_energy_10uwh"] == "bigint"
    assert types["net_grid_status_last"] == "net_grid_status" and types["sample_count"] == "smallint"
    assert _types(url, Tables.TELEMETRY_1D_FOLDED)["import_energy_10uwh"] == "bigint"
    for now in _all(url, Tables.TELEMETRY_AGGREGATES):
        was = shares[(now["meter_id"], now["bucket"])]
        for f in BOOL_FIELDS:
            assert now[f"{f.column}_count"] == round(was[f"{f.column}_ratio"] * was["sample_count"])
        assert now["import_energy_10uwh"] == round(was["import_energy_wh"] * 100_000)
        assert now["net_grid_status_last"] == was["net_grid_status_last"]

    # the aggregator goes on (the open bucket's last minutes and the next ones)
    later = int((end + timedelta(minutes=9)).timestamp() * 1000)
    await aggregate_homes(environ, homes, start_ms=ms[1], end_ms=later, timezone=TZ)
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=TZ))
