"""Hourly and daily rollups as views over folded tables (aggregator/fold.py, migration 0008), on real
Redis and PostgreSQL: each minute folds one phase of the fleet, the views always equal the rollups
computed in SQL from the minute rows, and the migration keeps the rows written before it."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from enerlink.aggregator import fold
from enerlink.aggregator.columns import LAST_ONLY
from enerlink.aggregator.job import Aggregator
from enerlink.db import discover, migrate
from enerlink.schemas.fields import ENUM_FIELDS
from enerlink.schemas.wire import Tables
from tests.support.aggdata import NOT_STATISTICS, aggregate_row, insert_rows
from tests.support.aggdata import columns as table_columns
from tests.test_aggregator import (
    MIN,
    _assert_same,
    _sql_rollup,
    now_ms,
    put,
    rows,
    settings_for,
    snapshot,
)

FIVE = 5 * MIN
LEVELS_FOLDED = {view: folded for view, (folded, _) in fold.LEVELS.items()}
METERS = [f"F{i:02d}" for i in range(15)]


def _fold_state(url: str) -> dict[str, tuple[int, datetime]]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            sql.SQL("select meter_id, phase, folded_until from {}").format(sql.Identifier(Tables.ROLLUP_FOLD))
        ).fetchall()
    return {m: (p, u) for m, p, u in found}


def _folded_reference(url: str, *, width: str) -> dict[tuple[str, datetime], dict[str, Any]]:
    """What a folded table must hold: the rollup, computed in SQL, of each meter's minute rows
    before its ``folded_until``."""
    source = (
        f"(select t.* from {Tables.TELEMETRY_AGGREGATES} t join {Tables.ROLLUP_FOLD} r"
        " on r.meter_id = t.meter_id and t.bucket < r.folded_until)"
    )
    return _sql_rollup(url, width=width, tz="UTC" if width == "1 day" else None, source=source)


async def _job(aggregator: Aggregator, r: aioredis.Redis, minute: int) -> None:
    """One service job that ends with ``minute`` (its grace is the time since the minute closed)."""
    since = await now_ms(r) - (minute + MIN)
    aggregator.settings = dataclasses.replace(aggregator.settings, grace_s=(since - 20_000) / 1000)
    report = await aggregator.run_job()
    assert report.watermark == datetime.fromtimestamp(minute / 1000, UTC)


async def test_each_minute_folds_one_phase_and_the_views_stay_exact(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url)
    start = (await now_ms(redis_client)) // FIVE * FIVE - 4 * FIVE  # 4 whole 5-minute buckets ago
    aggregator = Aggregator(settings, redis_client)
    phases: dict[str, int] = {}
    for k in range(17):  # three 5-minute boundaries and a bit
        minute = start + k * MIN
        for i, meter in enumerate(METERS):
            points = [minute + s * 20_000 + i for s in range(3)]
            await put(
                redis_client,
                keys,
                meter,
                [(at, snapshot(meter, at, battery__soc=float(k + i))) for at in points],
            )
        before = _fold_state(url)
        await _job(aggregator, redis_client, minute)
        after = _fold_state(url)
        phases = {m: p for m, (p, _) in after.items()}
        moved = {m for m in after if m in before and after[m][1] != before[m][1]}
        boundary = datetime.fromtimestamp(fold.boundary_ms(minute) / 1000, UTC)
        due = {m for m, (p, u) in before.items() if p == fold.phase_of(minute) and u < boundary}
        assert moved == due, k  # only this minute's phase folded, and all of it that was behind
        assert all(after[m][1] == boundary for m in moved)
        # readers see every minute so far, whatever is folded
        _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
        _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
        _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz="UTC"))
    assert len(set(phases.values())) > 1  # the fleet is spread over phases
    # the folded tables hold exactly the folded range; past a first round every meter lags at most
    # one complete bucket plus the open one
    _assert_same(rows(url, Tables.TELEMETRY_1H_FOLDED), _folded_reference(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D_FOLDED), _folded_reference(url, width="1 day"))
    last_boundary = datetime.fromtimestamp((start + 16 * MIN) // FIVE * FIVE / 1000, UTC)
    for meter, (_, until) in _fold_state(url).items():
        assert last_boundary - timedelta(minutes=5) <= until <= last_boundary, meter


def _but_settings(found: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {k: {**row, **{f"{name}_last": None for name in LAST_ONLY}} for k, row in found.items()}


def columns(url: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return table_columns(conn, table)


def _every_column(url: str, k: int) -> dict[str, Any]:
    """Every statistic of a minute row of the schema in ``url`` filled (k: a distinct minute): a
    state of the contract's, a share of the row's 12 samples, any number."""
    stats = [c for c in columns(url, Tables.TELEMETRY_AGGREGATES) if c[0] not in _KEYS]
    states = {f"{f.column}_last": f.values for f in ENUM_FIELDS}

    def value(i: int, name: str) -> Any:
        if name in states:
            return states[name][k % len(states[name])]
        if name.endswith("_ratio"):
            return (k * 5 + i) % 13 / 12
        return float(k * 7 % 11) + i / 100

    return {name: value(i, name) for i, (name, _) in enumerate(stats)}


_KEYS = NOT_STATISTICS


def _rollup_of(url: str, *, width: str, tz: str | None = None) -> list[dict[str, Any]]:
    """The rollup of the minute rows of the schema in ``url`` (whatever its columns: the rule of
    each statistic is its suffix), computed in SQL."""
    if tz is None:
        key = f"date_bin(interval '{width}', bucket, timestamptz '1970-01-01 00:00:00+00')"
    else:
        key = f"(date_trunc('day', bucket at time zone '{tz}') at time zone '{tz}')"
    offsets = "first_ms" in dict(columns(url, Tables.TELEMETRY_AGGREGATES))  # since migration 0014
    first, last = (Tables.minute_time_sql(n) if offsets else n for n in ("first_at", "last_at"))
    exprs = ["sum(sample_count)::int as sample_count", f"min({first}) as first_at", f"max({last}) as last_at"]
    for name, _ in columns(url, Tables.TELEMETRY_AGGREGATES):
        n = f'"{name}"'
        if name in _KEYS:
            continue
        if name.endswith(("_avg", "_ratio")):
            exprs.append(f"sum({n} * sample_count) / sum(sample_count) as {n}")
        elif name.endswith(("_min", "_max")):
            exprs.append(f"{name[-3:]}({n}) as {n}")
        elif name.endswith(("_energy_wh", "_energy_10uwh", "_count")):
            exprs.append(f"sum({n}) as {n}")
        else:
            exprs.append(f"(array_agg({n} order by bucket desc))[1] as {n}")
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            f"select meter_id, {key} as bucket, {', '.join(exprs)} from {Tables.TELEMETRY_AGGREGATES}"
            f" group by meter_id, {key} order by 1, 2".encode()
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _old_rollups(url: str) -> None:
    """The old rollup tables as the aggregator kept them: every minute so far, open buckets too."""
    for table, width in (
        (Tables.TELEMETRY_5M, "5 minutes"),
        (Tables.TELEMETRY_1H, "1 hour"),
        (Tables.TELEMETRY_1D, "1 day"),
    ):
        insert_rows(url, table, _rollup_of(url, width=width, tz="UTC" if width == "1 day" else None))


async def test_migration_keeps_rollups_and_later_minutes_of_an_open_bucket_are_folded_in(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url, until=7)  # the schema as migrations before 0008 left it
    start = (await now_ms(redis_client)) // FIVE * FIVE - 3 * FIVE
    # seven minutes written before the upgrade: one whole 5-minute bucket and two minutes of the next
    minutes = [start + k * MIN for k in range(7)]
    insert_rows(
        url,
        Tables.TELEMETRY_AGGREGATES,
        [
            aggregate_row(m, datetime.fromtimestamp(at / 1000, UTC), **_every_column(url, k))
            for k, at in enumerate(minutes)
            for m in ("A", "B")
        ],
    )
    _old_rollups(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
            (datetime.fromtimestamp(minutes[-1] / 1000, UTC),),
        )
        conn.commit()
    before = {t: rows(url, t) for t in (Tables.TELEMETRY_1H, Tables.TELEMETRY_1D)}

    # up to the release before the narrow rows (0010): the views show the rows the tables held
    assert await migrate(url, skip={10, 11, 12, 13, 14}) == [
        v.version for v in discover() if v.version >= 8 and v.version not in (10, 11, 12, 13, 14)
    ]
    for table, old in before.items():
        assert rows(url, table) == old
    # then narrowed (0010): every rollup is still the rollup of the minute rows (but the last value
    # of a setting, which rows before 0010 did not keep: their average stands in, in each table)
    assert await migrate(url) == [10, 11, 12, 13, 14]  # 0011 and later expect 0010's shape
    for table, width, tz in (
        (Tables.TELEMETRY_5M, "5 minutes", None),
        (Tables.TELEMETRY_1H, "1 hour", None),
        (Tables.TELEMETRY_1D, "1 day", "UTC"),
    ):
        _assert_same(_but_settings(rows(url, table)), _but_settings(_sql_rollup(url, width=width, tz=tz)))
    open_bucket = datetime.fromtimestamp((start + FIVE) / 1000, UTC)
    assert {m: u for m, (_, u) in _fold_state(url).items()} == {
        "A": open_bucket + timedelta(minutes=5),
        "B": open_bucket + timedelta(minutes=5),
    }

    # the open bucket's remaining minutes, then the next bucket's first, through the aggregator
    aggregator = Aggregator(settings, redis_client)
    for k in range(7, 11):
        minute = start + k * MIN
        for meter in ("A", "B"):
            await put(redis_client, keys, meter, [(minute + 1_000, snapshot(meter, minute + 1_000))])
        await _job(aggregator, redis_client, minute)
        _assert_same(
            _but_settings(rows(url, Tables.TELEMETRY_5M)), _but_settings(_sql_rollup(url, width="5 minutes"))
        )
        _assert_same(
            _but_settings(rows(url, Tables.TELEMETRY_1H)), _but_settings(_sql_rollup(url, width="1 hour"))
        )
        _assert_same(
            _but_settings(rows(url, Tables.TELEMETRY_1D)),
            _but_settings(_sql_rollup(url, width="1 day", tz="UTC")),
        )
        # minutes 7-9 lie inside the folded range the migration set: merged into the folded rows
        _assert_same(
            _but_settings(rows(url, Tables.TELEMETRY_1H_FOLDED)),
            _but_settings(_folded_reference(url, width="1 hour")),
        )
        _assert_same(
            _but_settings(rows(url, Tables.TELEMETRY_1D_FOLDED)),
            _but_settings(_folded_reference(url, width="1 day")),
        )
    # each minute pass moved the buckets complete by then: the two before the last one are closed
    with psycopg.connect(url) as conn:
        closed = conn.execute(f"select distinct bucket from {Tables.TELEMETRY_5M_CLOSED}").fetchall()
        opened = conn.execute(f"select distinct bucket from {Tables.TELEMETRY_5M_OPEN}").fetchall()
    assert sorted(b for (b,) in closed) == [
        datetime.fromtimestamp((start + k * FIVE) / 1000, UTC) for k in (0, 1)
    ]
    assert [b for (b,) in opened] == [datetime.fromtimestamp((start + 2 * FIVE) / 1000, UTC)]
    folded = rows(url, Tables.TELEMETRY_1D_FOLDED)
    assert sum(r["sample_count"] for (m, _), r in folded.items() if m == "A") >= 7 * 12 + 3


async def test_a_view_query_for_one_meter_reaches_the_primary_keys(environ: dict[str, str]) -> None:
    """The API's query shape: the meter and the range are pushed into the view down to the primary
    keys of the folded table, ``rollup_fold`` and both 5-minute tables (with sequential scans
    disabled, a condition not pushed down would still show as one)."""
    settings = settings_for(environ)
    url = settings.common.database_url
    await migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute("set enable_seqscan = off")
        for view in fold.LEVELS:
            plan = "\n".join(
                str(r[0])
                for r in conn.execute(
                    sql.SQL(
                        "explain select * from {} where meter_id = %s and bucket >= %s and bucket < %s"
                    ).format(sql.Identifier(view)),
                    ("X", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
                ).fetchall()
            )
            five = (Tables.TELEMETRY_5M_CLOSED, Tables.TELEMETRY_5M_OPEN)
            for table in (*five, LEVELS_FOLDED[view], Tables.ROLLUP_FOLD):
                # a table partitioned by month: each month's key (migration 0013)
                assert not re.search(rf"Seq Scan on {table}(_p\d{{6}})? ", plan), plan
                assert re.search(rf"Index Scan using {table}(_p\d{{6}})?_pkey", plan), plan


async def test_minute_rows_already_stored_after_the_watermark_are_replaced(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """A minute after the watermark is inserted without probing for stored rows first; when one is
    there after all (a watermark moved back by hand, a restore), the insert fails under a savepoint
    and the minute is written as a re-aggregation instead: rows replaced, rollups recomputed."""
    settings = settings_for(environ)
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url)
    minute = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    aggregator = Aggregator(settings, redis_client)
    for meter in ("A", "B"):
        await put(
            redis_client, keys, meter, [(minute + 1_000, snapshot(meter, minute + 1_000, import__power=1.0))]
        )
    await _job(aggregator, redis_client, minute)
    assert rows(url)[("A", datetime.fromtimestamp(minute / 1000, UTC))]["import_power_max"] == 1.0
    with psycopg.connect(url) as conn:  # the watermark moved back by hand, a snapshot added to A
        conn.execute(f"update {Tables.AGGREGATOR_WATERMARK} set minute = minute - interval '1 minute'")
        conn.commit()
    await put(redis_client, keys, "A", [(minute + 2_000, snapshot("A", minute + 2_000, import__power=9.0))])
    await _job(aggregator, redis_client, minute)
    stored = rows(url)
    assert len(stored) == 2
    assert stored[("A", datetime.fromtimestamp(minute / 1000, UTC))]["import_power_max"] == 9.0
    assert stored[("A", datetime.fromtimestamp(minute / 1000, UTC))]["sample_count"] == 2
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz="UTC"))
