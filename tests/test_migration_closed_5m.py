"""Migration 0013 on real PostgreSQL: the complete 5-minute buckets move into a table partitioned by
month with every row and value kept; the aggregator's writes and the views go on over it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from enerlink.aggregator.rollups import fold_minute
from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import aggregate_row, insert_rows, month_partitions

NEW = 13
LATER = (14,)  # held back with it (it expects 0013's shape)
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
OLD = (NOW - timedelta(days=400)).replace(minute=0)


def _rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(
            sql.SQL("select * from {} order by meter_id, bucket").format(
                sql.Identifier(Tables.TELEMETRY_5M_CLOSED)
            )
        ).fetchall()


def _months(url: str) -> set[str]:
    return set(month_partitions(url, Tables.TELEMETRY_5M_CLOSED))


async def test_closed_buckets_move_into_month_partitions_with_every_value(database_url: str) -> None:
    await migrate(database_url, skip={NEW, *LATER})
    buckets = [OLD + timedelta(minutes=5 * i) for i in range(6)] + [NOW.replace(minute=0)]
    rows = [
        aggregate_row(
            meter,
            bucket,
            sample_count=60,
            import_energy_10uwh=123_456_789 + i,
            battery_soc_avg=50.5 + i,
            export_voltage_max=230.25,
            net_grid_status_last="importing",
        )
        for meter in ("METER001", "METER.2")
        for i, bucket in enumerate(buckets)
    ]
    insert_rows(database_url, Tables.TELEMETRY_5M_CLOSED, rows)
    before = _rows(database_url)
    assert len(before) == 14

    assert await migrate(database_url, until=NEW) == [NEW]

    assert _rows(database_url) == before
    names = {Tables.month_partition(Tables.TELEMETRY_5M_CLOSED, b.year, b.month) for b in (OLD, NOW)}
    assert names <= _months(database_url)
    with psycopg.connect(database_url) as conn:
        kind = conn.execute(
            "select relkind from pg_class where oid = to_regclass(%s)", (Tables.TELEMETRY_5M_CLOSED,)
        ).fetchone()
        assert kind == ("p",)
        # the views read it as before: the 5-minute view holds both tables' buckets
        count = conn.execute(
            sql.SQL("select count(*) from {} where meter_id = 'METER001'").format(
                sql.Identifier(Tables.TELEMETRY_5M)
            )
        ).fetchone()
        assert count == (7,)
        with pytest.raises(psycopg.errors.UniqueViolation):  # one row a meter and bucket, as before
            conn.execute(
                sql.SQL(
                    "insert into {} (meter_id, bucket, sample_count, first_at, last_at)"
                    " values ('METER001', %s, 1, %s, %s)"
                ).format(sql.Identifier(Tables.TELEMETRY_5M_CLOSED)),
                (OLD, OLD, OLD),
            )


async def test_an_old_open_bucket_gets_its_month_on_the_upgrade(database_url: str) -> None:
    """An aggregator stopped for months, or a backfill not yet moved: the open table holds a bucket
    of a month the closed table has no rows of; the upgrade makes that month's partition."""
    await migrate(database_url, skip={NEW, *LATER})
    old = (NOW - timedelta(days=150)).replace(minute=0)
    insert_rows(database_url, Tables.TELEMETRY_5M_OPEN, [aggregate_row("METER001", old)])
    assert await migrate(database_url, until=NEW) == [NEW]
    assert Tables.month_partition(Tables.TELEMETRY_5M_CLOSED, old.year, old.month) in _months(database_url)


async def test_the_move_makes_the_month_of_every_bucket_it_closes(database_url: str) -> None:
    """Buckets moved from the open table into a month no minute pass of this process wrote (a
    partition dropped by hand stands for one that was never made): the move makes it first."""
    await migrate(database_url)
    old = (NOW - timedelta(days=150)).replace(minute=0)
    partition = Tables.month_partition(Tables.TELEMETRY_5M_CLOSED, old.year, old.month)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(partition)))
    rows = [aggregate_row(m, old, import_energy_10uwh=7) for m in ("METER001", "METER.2")]
    insert_rows(database_url, Tables.TELEMETRY_5M_OPEN, rows)
    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
        await fold_minute(conn, minute_ms=int(NOW.timestamp() * 1000), timezone="UTC")
    moved = _rows(database_url)
    assert [(r["meter_id"], r["bucket"], r["import_energy_10uwh"]) for r in moved] == [
        ("METER.2", old, 7),
        ("METER001", old, 7),
    ]
    assert partition in _months(database_url)
