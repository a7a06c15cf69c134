"""Migration 0014 (minute rows of 18 a page) on a database at the previous head: what the API serves
before and after (history JSON and CSV at every resolution, energy, completeness, settlement energy)
is the same to the stored types' resolution, but the SOC's and charge rate's extremes; a channel's
current is served from its power and voltage; the minute row's times and last ``seq`` are their
offsets; the rows are narrower (18 minute rows a page); and the aggregator goes on from there: the
rollups stay the rollups of the minute rows.

The rows are realistic: the real aggregator computes two households' minutes in a schema of its
own; the test writes its minute rows, 5-minute rows (closed and open), folded rows and fold state, as
the previous release stored them, into a schema migrated up to 0013."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import as_before_minute18, insert_rows
from tests.support.energyday import Household, aggregate_homes
from tests.test_aggregator import _assert_same, _sql_rollup, rows
from tests.test_migration_compact import _COPIED, _row_size, _types
from tests.test_migration_narrow import FIGURES, HISTORY, TZ, _reads, compare_reads, source_schema
from tests.test_migration_rollup_once import _all

NEW = 14


def _rows_a_page(url: str, table: str) -> int:
    """The most rows any page of ``table`` holds (its partitions' pages)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"select max(n) from (select count(*) as n from {table}"
            " group by tableoid, (ctid::text::point)[0]) pages".encode()
        ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


async def test_minute_rows_migration_keeps_what_the_api_serves(
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
        with psycopg.connect(source) as conn:  # readings with seq, one missing now and then
            conn.execute(
                f"update {Tables.TELEMETRY_AGGREGATES} t set seq_first = n.base + 1,"
                " seq_span = t.sample_count - 1 + n.missing"
                " from (select meter_id, bucket, (extract(minute from bucket)::int % 7 = 3)::int as missing,"
                " sum(sample_count + (extract(minute from bucket)::int % 7 = 3)::int)"
                " over (partition by meter_id order by bucket) - sample_count"
                " - (extract(minute from bucket)::int % 7 = 3)::int as base"
                f" from {Tables.TELEMETRY_AGGREGATES}) n"
                " where n.meter_id = t.meter_id and n.bucket = t.bucket".encode()
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
    assert any(r["seq_span"] for r in copied[Tables.TELEMETRY_AGGREGATES])

    # the previous head, with the rows as the previous release stored them
    assert NEW not in await migrate(url, skip={NEW})
    for table in _COPIED:
        insert_rows(url, table, [as_before_minute18(r) for r in copied[table]])
    insert_rows(url, Tables.ROLLUP_FOLD, copied[Tables.ROLLUP_FOLD])
    with psycopg.connect(url) as conn:
        conn.execute(f"update {Tables.ROLLUP_STATE} set timezone = %s", (TZ,))
        conn.execute(f"delete from {Tables.AGGREGATOR_WATERMARK}")
    insert_rows(url, Tables.AGGREGATOR_WATERMARK, copied[Tables.AGGREGATOR_WATERMARK])
    with psycopg.connect(url) as conn:  # read by this release's API with 0014 held back
        conn.execute(f"insert into {Tables.MIGRATIONS} (version, name) values (%s, 'held back')", (NEW,))
    sizes = {t: _row_size(url, t) for t in (Tables.TELEMETRY_AGGREGATES, Tables.TELEMETRY_5M_OPEN)}
    old = {(r["meter_id"], r["bucket"]): r for r in _all(url, Tables.TELEMETRY_AGGREGATES)}
    assert any(r["seq_last"] is not None for r in old.values())
    before = {**await _reads(environ, start=start, end=end, kinds=HISTORY), **figures}
    with psycopg.connect(url) as conn:
        conn.execute(f"delete from {Tables.MIGRATIONS} where version = %s", (NEW,))

    assert await migrate(url) == [NEW]
    after = await _reads(environ, start=start, end=end)
    compare_reads(before, after)
    assert before["settlement P"][0] > 0 and len(before["history P 5m"]) >= 15
    assert before["/meters/P/completeness"] == after["/meters/P/completeness"]
    assert before["/meters/P/completeness"]["total"]["missing"] > 0
    for resolution in ("1m", "5m", "1h", "1d"):
        point = after[f"history P {resolution}"][0]
        assert "battery_soc_min" in before[f"history P {resolution}"][0], resolution
        assert "battery_soc_min" not in point and "battery_charge_rate_max" not in point, resolution
        assert {"import_current_avg", "first_at", "last_at", "battery_soc_avg"} <= set(point), resolution
        assert "first_ms" not in point and "seq_span" not in point, resolution
    currents = [
        (p["import_current_avg"], q["import_current_avg"])
        for p, q in zip(before["history P 1m"], after["history P 1m"], strict=True)
    ]
    assert any(was > 0 for was, _ in currents)
    assert all(now == pytest.approx(was, rel=1e-6) for was, now in currents)

    # the rows: 48 bytes narrower, 18 minute rows a page; the offsets are the times and seq as they were
    for table, was in sizes.items():
        assert _row_size(url, table) <= was - 40, table
    assert _row_size(url, Tables.TELEMETRY_AGGREGATES) <= sizes[Tables.TELEMETRY_AGGREGATES] - 48
    assert _rows_a_page(url, Tables.TELEMETRY_AGGREGATES) == 18
    types = _types(url, Tables.TELEMETRY_AGGREGATES)
    assert types["first_ms"] == types["last_ms"] == types["seq_span"] == "integer"
    assert "first_at" not in types and "import_current_avg" not in types and "battery_soc_max" not in types
    assert "battery_soc_min" not in _types(url, Tables.TELEMETRY_1H_FOLDED)
    for now in _all(url, Tables.TELEMETRY_AGGREGATES):
        was = old[(now["meter_id"], now["bucket"])]
        assert now["bucket"] + timedelta(milliseconds=now["first_ms"]) == was["first_at"]
        assert now["bucket"] + timedelta(milliseconds=now["last_ms"]) == was["last_at"]
        if was["seq_last"] is None:
            assert now["seq_first"] == was["seq_first"] and now["seq_span"] is None
        else:
            assert (now["seq_first"], now["seq_first"] + now["seq_span"]) == (
                was["seq_first"],
                was["seq_last"],
            )

    # the aggregator goes on (the open bucket's last minutes and the next ones)
    later = int((end + timedelta(minutes=9)).timestamp() * 1000)
    await aggregate_homes(environ, homes, start_ms=ms[1], end_ms=later, timezone=TZ)
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=TZ))


async def test_a_seq_span_that_does_not_fit_leaves_the_minute_without_seq(database_url: str) -> None:
    """A restart of ``seq`` from beyond two billion inside a minute: its span does not fit 32 bits;
    the upgrade keeps its first ``seq`` and no span (completeness counts it as a minute without
    ``seq``), the others as they were."""
    await migrate(database_url, skip={NEW})
    at = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    rows_before = [
        {
            "meter_id": "M1",
            "bucket": at,
            "sample_count": 12,
            "first_at": at,
            "last_at": at,
            "seq_first": 5_000_000_000,
            "seq_last": 3,
        },
        {
            "meter_id": "M1",
            "bucket": at + timedelta(minutes=1),
            "sample_count": 12,
            "first_at": at + timedelta(minutes=1, seconds=2),
            "last_at": at + timedelta(minutes=1, seconds=57),
            "seq_first": 4,
            "seq_last": 15,
        },
    ]
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, rows_before)
    assert await migrate(database_url) == [NEW]
    got = {r["bucket"]: r for r in _all(database_url, Tables.TELEMETRY_AGGREGATES)}
    assert (got[at]["seq_first"], got[at]["seq_span"]) == (5_000_000_000, None)
    second = got[at + timedelta(minutes=1)]
    assert (second["seq_first"], second["seq_span"], second["first_ms"], second["last_ms"]) == (
        4,
        11,
        2000,
        57000,
    )
