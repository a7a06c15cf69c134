"""The aggregator's migrations on a real PostgreSQL: table shape, partitions, idempotence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from enerlink.aggregator.columns import (
    DERIVED_SUBSYSTEMS,
    FEWER_STATS,
    LAST_ONLY,
    MINUTE_COLUMNS,
    table_columns,
)
from enerlink.db import discover, migrate
from enerlink.schemas.fields import BOOL_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS
from enerlink.schemas.wire import Tables


async def test_migration_creates_partitioned_aggregates(database_url: str) -> None:
    applied = await migrate(database_url)
    assert 1 in applied
    assert await migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns"
                " where table_schema = current_schema() and table_name = %s order by ordinal_position",
                (Tables.TELEMETRY_AGGREGATES,),
            )
        ]
        assert cols == [name for name, _ in table_columns("minute")]
        assert set(cols) == set(MINUTE_COLUMNS)
        for f in NUMERIC_FIELDS:
            if f.subsystem not in DERIVED_SUBSYSTEMS and f.column not in LAST_ONLY:
                stats = ("last",) if f.kind == "counter" else FEWER_STATS.get(f.column, ("avg", "min", "max"))
                assert {f"{f.column}_{s}" for s in stats} <= set(cols)
        assert {f"{f.column}_count" for f in BOOL_FIELDS} <= set(cols)
        assert {f"{f.column}_last" for f in ENUM_FIELDS} <= set(cols)
        assert {"import_energy_10uwh", "solar_output_energy_10uwh", "import_total_energy_last"} <= set(cols)
        assert not {"import_current_min", "import_current_max", "import_current_avg"} & set(cols)
        assert not {"battery_soc_min", "battery_charge_rate_max", "first_at", "last_at", "seq_last"} & set(
            cols
        )
        assert {"battery_soc_avg", "battery_charge_rate_avg", "first_ms", "last_ms", "seq_span"} <= set(cols)
        kind = conn.execute(
            "select c.relkind from pg_class c where c.oid = to_regclass(%s)", (Tables.TELEMETRY_AGGREGATES,)
        ).fetchone()
        assert kind == ("p",)
        now = datetime.now(UTC)
        parts = {
            r[0]
            for r in conn.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = to_regclass(%s)",
                (Tables.TELEMETRY_AGGREGATES,),
            )
        }
        assert Tables.month_partition(Tables.TELEMETRY_AGGREGATES, now.year, now.month) in parts
        # an old month on demand, named as wire.py says, twice is harmless
        old = datetime(2024, 2, 29, 23, 59, tzinfo=UTC)
        for _ in range(2):
            (name,) = conn.execute(
                f"select {Tables.ENSURE_MONTH_PARTITION}(%s, %s)", (Tables.TELEMETRY_AGGREGATES, old)
            ).fetchone()  # type: ignore[misc]
        assert name == Tables.month_partition(Tables.TELEMETRY_AGGREGATES, 2024, 2)
        conn.execute(
            f"insert into {Tables.TELEMETRY_AGGREGATES} (meter_id, bucket, sample_count, first_ms, last_ms)"
            " values ('M1', %s, 1, 0, 0)",
            (old,),
        )
        (where,) = conn.execute(
            f"select tableoid::regclass::text from {Tables.TELEMETRY_AGGREGATES}"
        ).fetchone()  # type: ignore[misc]
        assert where == name


async def test_concurrent_migrations_on_a_fresh_schema_apply_each_version_once(database_url: str) -> None:
    """Services started together (compose) all migrate at once: none may fail, none may apply twice.

    Each migration commits before the advisory lock is released, so a process that waited on the
    lock sees every version the first one applied.
    """
    results = await asyncio.gather(*(migrate(database_url) for _ in range(8)))
    applied = sorted(v for result in results for v in result)
    expected = sorted(m.version for m in discover())
    assert applied == expected
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("select version from {} order by version").format(sql.Identifier(Tables.MIGRATIONS))
        ).fetchall()
    assert [r[0] for r in rows] == expected
