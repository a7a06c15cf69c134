"""A snapshot damaged in Redis (by hand, or by a bug) is counted bad and skipped: the other meters'
minutes are written and the job goes on, instead of failing for the whole fleet every minute. Real Redis
and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql

from enerlink.aggregator.job import AggregateError, Aggregator
from enerlink.aggregator.service import run
from enerlink.db import migrate
from enerlink.schemas import snapshot_bulk
from enerlink.schemas import snapshot_layout as SL
from enerlink.schemas.wire import Keys, Tables
from tests.test_aggregator import MIN, minute_dt, now_ms, put, rows, settings_for, snapshot, stored


def _out_of_range_enum(good: bytes) -> bytes:
    """``good`` with one byte changed so that an enum's index lies past its values (the compact form's
    layout otherwise intact)."""
    for pos in range(len(good)):
        for value in (0x10, 0x40, 0x70):
            damaged = bytearray(good)
            damaged[pos] = value
            cols = snapshot_bulk.read([bytes(damaged)])
            if cols is None or cols.meters != [b"X"] or cols.has_rest.any() or (cols.enums == 0).any():
                continue
            if any((cols.enums[:, k] > len(v)).any() for k, v in enumerate(SL.ENUM_VALUES)):
                return bytes(damaged)
    raise AssertionError("no byte gives an out-of-range enum")


async def test_damaged_snapshots_are_counted_bad_and_the_others_written(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    await put(redis_client, keys, "OK", [(m + i * 10_000, snapshot("OK", m + i * 10_000)) for i in range(6)])
    # a seq past 64 bits (the ingest refuses it; here it is in Redis anyway) and an impossible enum index
    huge = snapshot("HUGE", m + 1000).replace(b"{", b'{"seq": 9223372036854775808, ', 1)
    await put(redis_client, keys, "HUGE", [(m + 1000, huge), (m + 2000, snapshot("HUGE", m + 2000))])
    await redis_client.zadd(
        keys.timeseries("X"), {_out_of_range_enum(stored(snapshot("X", m + 1000))): m + 1000}
    )
    await redis_client.hset(keys.meters, "X", str(m + 1000))
    report = await run(settings, once=True)
    assert report is not None and report.bad == 2
    found = rows(settings.common.database_url)
    assert found[("OK", minute_dt(m))]["sample_count"] == 6
    assert found[("HUGE", minute_dt(m))]["sample_count"] == 1
    assert ("X", minute_dt(m)) not in found

    # the same damage as late data: the late pass goes on too, and its flags are cleared
    t = await now_ms(redis_client)
    await put(
        redis_client, keys, "OK", [(m + 5_000, snapshot("OK", m + 5_000, import__power=999.0))], late=True
    )
    await put(
        redis_client,
        keys,
        "HUGE",
        [(m + 5_000, snapshot("HUGE", m + 5_000).replace(b"{", b'{"seq": 9223372036854775808, ', 1))],
        late=True,
    )
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("OK", m): t, Keys.late_member("HUGE", m): t})
    report = await run(settings, once=True)
    assert report is not None and report.late_pairs >= 2
    assert rows(settings.common.database_url)[("OK", minute_dt(m))]["sample_count"] == 7
    assert await redis_client.zcard(keys.late_minutes) == 0


async def test_a_flood_saturates_the_counts_instead_of_stopping_the_rollups(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """37,500 readings of one meter in a 5-minute bucket (125 a second: a flood the rate limit let
    through): the smallint counts of the minute and 5-minute rows saturate at 32,767; the other meters'
    rows and rollups are written, and the jobs go on."""
    settings = settings_for(environ)
    keys = settings.common.keys
    now = await now_ms(redis_client)
    b5 = (now - 12 * MIN) // (5 * MIN) * (5 * MIN)  # a closed 5-minute bucket
    await put(redis_client, keys, "OK", [(at, snapshot("OK", at)) for at in range(b5, now - 2 * MIN, 10_000)])
    template = json.loads(snapshot("HOT", b5))
    flood = {}
    for at in range(b5, b5 + 5 * MIN, 8):
        template["datetime"] = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds")
        flood[stored(json.dumps(template).encode())] = at
    await redis_client.zadd(keys.timeseries("HOT"), flood)
    await redis_client.hset(keys.meters, "HOT", str(b5 + 5 * MIN))
    report = await run(settings, once=True)
    assert report is not None and report.watermark is not None and report.watermark >= minute_dt(b5 + 4 * MIN)
    url = settings.common.database_url
    assert rows(url)[("HOT", minute_dt(b5))]["sample_count"] == 7500
    five = rows(url, Tables.TELEMETRY_5M)
    assert five[("HOT", minute_dt(b5))]["sample_count"] == 32767
    assert five[("HOT", minute_dt(b5))]["battery_connected_count"] == 32767
    assert five[("OK", minute_dt(b5))]["sample_count"] == 30
    assert await run(settings, once=True) is not None
    # a late reading in the flooded bucket: its rows are recomputed, saturated the same way
    at = b5 + 3
    await put(redis_client, keys, "HOT", [(at, snapshot("HOT", at))], late=True)
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("HOT", b5): await now_ms(redis_client)})
    report = await run(settings, once=True)
    assert report is not None and report.late_pairs >= 1
    assert rows(url, Tables.TELEMETRY_5M)[("HOT", minute_dt(b5))]["sample_count"] == 32767
    assert await redis_client.zcard(keys.late_minutes) == 0


async def test_a_failed_write_into_a_new_month_is_written_by_the_next_job(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Late readings of a month without a partition: the job that creates it fails (here a constraint
    refuses one row) and rolls the partition back with it; the next job of the same aggregator creates
    it again instead of trusting what it remembered."""
    settings = settings_for(environ, ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    keys = settings.common.keys
    url = settings.common.database_url
    await migrate(url)
    old = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)
    m = int(old.timestamp() * 1000)
    t = await now_ms(redis_client)
    for meter in ("LATE", "FAIL"):
        await put(redis_client, keys, meter, [(m + 5_000, snapshot(meter, m + 5_000))], late=True)
        await redis_client.zadd(keys.late_minutes, {Keys.late_member(meter, m): t})
    refuse = sql.SQL("alter table {} add constraint refuse_fail check (meter_id <> 'FAIL') not valid")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(refuse.format(sql.Identifier(Tables.TELEMETRY_AGGREGATES)))
    aggregator = Aggregator(settings, redis_client)
    with pytest.raises(ExceptionGroup) as raised:  # from the job's task group
        await aggregator.run_job()
    assert raised.group_contains(AggregateError, match="refuse_fail")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter table {} drop constraint refuse_fail").format(
                sql.Identifier(Tables.TELEMETRY_AGGREGATES)
            )
        )
    report = await aggregator.run_job()
    assert report is not None and report.late_pairs == 2
    found = rows(url)
    assert found[("LATE", old)]["sample_count"] == 1 and found[("FAIL", old)]["sample_count"] == 1
