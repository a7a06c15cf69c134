"""The 5-minute rows of complete buckets (migration 0011): each minute pass moves the buckets complete
before its minute into the closed table; late data for a closed bucket merges into, or recomputes,
that row, never a second one in the open table."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import redis.asyncio as aioredis

from enerlink.aggregator.service import Aggregator
from enerlink.db import migrate
from enerlink.schemas.wire import Keys, Tables
from tests.test_aggregator import MIN, _assert_same, _sql_rollup, now_ms, put, rows, settings_for, snapshot
from tests.test_aggregator_fold import FIVE, _job


def _buckets(url: str, table: str) -> set[tuple[str, datetime]]:
    with psycopg.connect(url) as conn:
        found = conn.execute(f"select meter_id, bucket from {table}".encode()).fetchall()
    return {(str(m), b) for m, b in found}


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_late_minutes_of_a_closed_bucket_go_into_its_row(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ, ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url)
    start = (await now_ms(redis_client)) // FIVE * FIVE - 3 * FIVE
    aggregator = Aggregator(settings, redis_client)
    for k in range(7):  # A is silent from minute 3 on
        minute = start + k * MIN
        for meter in ("A", "B"):
            if meter == "B" or k < 3:
                at = minute + 1_000
                await put(redis_client, keys, meter, [(at, snapshot(meter, at, import__power=float(k)))])
        await _job(aggregator, redis_client, minute)
    first, second = _at(start), _at(start + FIVE)
    assert _buckets(url, Tables.TELEMETRY_5M_CLOSED) == {("A", first), ("B", first)}
    assert _buckets(url, Tables.TELEMETRY_5M_OPEN) == {("B", second)}
    assert rows(url, Tables.TELEMETRY_5M)[("A", first)]["sample_count"] == 3

    # late data: A's minute 3 (no row yet, nor a later one: merged into the closed row), B's minute 3
    # (a second snapshot: the minute is replaced and its bucket recomputed)
    late = {"A": start + 3 * MIN + 1_000, "B": start + 3 * MIN + 2_000}
    for meter, at in late.items():
        await put(redis_client, keys, meter, [(at, snapshot(meter, at, import__power=50.0))], late=True)
    t = await now_ms(redis_client)
    await redis_client.zadd(
        keys.late_minutes, {Keys.late_member(m, at // MIN * MIN): t for m, at in late.items()}
    )
    await _job(aggregator, redis_client, start + 7 * MIN)

    closed, opened = _buckets(url, Tables.TELEMETRY_5M_CLOSED), _buckets(url, Tables.TELEMETRY_5M_OPEN)
    assert closed == {("A", first), ("B", first)} and not closed & opened
    five = rows(url, Tables.TELEMETRY_5M)
    assert five[("A", first)]["sample_count"] == 4 and five[("A", first)]["import_power_max"] == 50.0
    assert five[("B", first)]["sample_count"] == 6 and five[("B", first)]["import_power_max"] == 50.0
    _assert_same(five, _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
