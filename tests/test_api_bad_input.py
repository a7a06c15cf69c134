"""Bad input at the API: history over ten years, and a query that runs too long.

Rows are inserted sparsely in every rollup table over 2016-2025 (real PostgreSQL); the answer is
bounded by design (automatic choice of the daily rollup, a point limit checked before querying, a
row cap, a statement timeout), which the tests check by row counts, status codes and counters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis.asyncio as aioredis
from minio import Minio
from psycopg import sql

from enerlink.api.routes import history
from enerlink.db import migrate
from enerlink.schemas.wire import Buckets, Keys, Tables
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.apiserver import serve_api

DECADE = {"start": "2016-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}


def _months() -> list[datetime]:
    return [datetime(2016 + i // 12, i % 12 + 1, 15, tzinfo=UTC) for i in range(120)]


def _seed(url: str) -> None:
    """One row a month in the daily table, a few in the finer ones (a wrong table shows)."""
    daily = [aggregate_row("METER001", at, battery_soc_avg=float(i)) for i, at in enumerate(_months())]
    insert_rows(url, Tables.TELEMETRY_1D_FOLDED, daily)
    for table, step in (
        (Tables.TELEMETRY_1H_FOLDED, timedelta(hours=1)),
        (Tables.TELEMETRY_5M_CLOSED, timedelta(minutes=5)),
        (Tables.TELEMETRY_AGGREGATES, timedelta(minutes=1)),
    ):
        start = datetime(2020, 6, 1, tzinfo=UTC)
        insert_rows(
            url, table, [aggregate_row("METER001", start + step * i, battery_soc_avg=-1.0) for i in range(3)]
        )


def _direct(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            sql.SQL(
                "select bucket, battery_soc_avg from {} where meter_id = 'METER001' order by bucket"
            ).format(sql.Identifier(Tables.TELEMETRY_1D))
        ).fetchall()


async def test_ten_years_of_history(environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    _seed(database_url)
    async with serve_api(environ) as api:
        auto = await api.client.get(
            "/meters/METER001/history", params={**DECADE, "fields": "battery_soc_avg"}
        )
        assert auto.status_code == 200, auto.text
        body = auto.json()
        assert (body["resolution"], body["table"]) == ("1d", Tables.TELEMETRY_1D)  # 3653 days fit
        expected = _direct(database_url)
        assert len(body["points"]) == len(expected) == 120
        assert [
            (datetime.fromisoformat(p["bucket"]), p["battery_soc_avg"]) for p in body["points"]
        ] == expected

        refused = history.QUERY_STATS.too_many_points
        minutes = await api.client.get("/telemetry/history/METER001", params=DECADE)  # default 1m
        assert minutes.status_code == 422
        detail = minutes.json()["detail"]
        assert "5260320 points at 1m" in detail and "maximum is 10000" in detail and "coarser" in detail
        hours = await api.client.get("/meters/METER001/history", params={**DECADE, "resolution": "1h"})
        assert hours.status_code == 422 and "87672 points at 1h" in hours.json()["detail"]
        assert history.QUERY_STATS.too_many_points == refused + 2
        metrics = (await api.client.get("/metrics")).text
        assert f"enerlink_api_query_too_many_points_total {float(refused + 2)}" in metrics

        # a year at auto: 8760 hours fit under 10,000, so the hourly table answers
        year = {"start": "2020-01-01T00:00:00Z", "end": "2020-12-31T00:00:00Z", "resolution": "auto"}
        hourly = (await api.client.get("/telemetry/history/METER001", params=year)).json()
        assert hourly["table"] == Tables.TELEMETRY_1H and len(hourly["points"]) == 3

    async with serve_api(environ, ENERLINK_API_MAX_POINTS="1000") as api:
        capped = await api.client.get("/meters/METER001/history", params=DECADE)
        assert capped.status_code == 422
        assert "3653 points at 1d" in capped.json()["detail"] and "maximum is 1000" in capped.json()["detail"]
        # exactly at the limit is answered (1000 days: 2016-01-01 + 1000 d)
        thousand = {"start": "2016-01-01T00:00:00Z", "end": "2018-09-27T00:00:00Z", "resolution": "1d"}
        rows = (await api.client.get("/meters/METER001/history", params=thousand)).json()["points"]
        assert len(rows) == 33


async def test_a_slow_query_is_cancelled_and_counted(
    environ: dict[str, str], database_url: str, redis_client: aioredis.Redis
) -> None:
    """A history read blocked behind a lock is cancelled by the statement timeout: 503 with advice,
    the counter moves, the pool connection is fine afterwards."""
    await migrate(database_url)
    _seed(database_url)
    await redis_client.hset(Keys(environ["ENERLINK_KEY_PREFIX"]).meters, "METER001", 1)
    async with serve_api(environ, ENERLINK_API_QUERY_TIMEOUT_S="0.3") as api:
        path = "/meters/METER001/history"
        assert (await api.client.get(path, params=DECADE)).status_code == 200  # columns cached
        timeouts = history.QUERY_STATS.timeouts
        with psycopg.connect(database_url) as blocker:
            blocker.execute(
                sql.SQL("lock table {} in access exclusive mode").format(sql.Identifier(Tables.TELEMETRY_1D))
            )
            slow = await api.client.get(path, params=DECADE)
            health = await api.client.get("/meters/METER001/health", params=DECADE)  # not blocked
            blocker.rollback()
        assert slow.status_code == 503
        assert "longer than 0.3 s" in slow.json()["detail"] and "coarser" in slow.json()["detail"]
        assert history.QUERY_STATS.timeouts == timeouts + 1
        metrics = (await api.client.get("/metrics")).text
        assert f"enerlink_api_query_timeouts_total {float(timeouts + 1)}" in metrics
        assert health.status_code == 200
        again = await api.client.get(path, params=DECADE)
        assert again.status_code == 200 and len(again.json()["points"]) == 120


async def test_odd_inputs_get_a_4xx_and_nothing_is_sent(
    environ: dict[str, str], database_url: str, key_prefix: str
) -> None:
    await migrate(database_url)
    redis = aioredis.Redis.from_url(environ["ENERLINK_REDIS_URL"])
    await redis.hset(Keys(key_prefix).meters, "METER001", 1)
    await redis.aclose()
    cases = [
        "/events?since=0001-01-01T00:00:00%2B01:00",  # no UTC value
        "/events?until=0001-01-01T00:00:00%2B01:00",
        "/events?since=9999-12-31T23:59:59-05:00",
        "/events?kind=%00",
        "/events?kind=a%20b",
        "/events?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z",
    ]
    async with serve_api(environ) as api:
        for url in cases:
            response = await api.client.get(url)
            assert response.status_code == 422, (url, response.text)
        for sensor in ("a\u0000b", "\ud800", "tab\there"):
            body = {"cmd": "scenario", "name": "sensor_failure", "sensor": sensor, "timeout_s": 0.3}
            response = await api.client.post(
                "/meters/METER001/commands",
                content=json.dumps(body),  # a lone surrogate as its JSON escape
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 422, (sensor, response.text)
        assert (await api.client.get("/events", params={"kind": "command"})).json() == []  # none sent


async def test_a_raw_object_missing_from_the_bucket_is_a_404(
    s3_environ: dict[str, str], database_url: str
) -> None:
    await migrate(database_url)
    day = datetime(2026, 1, 5).date()
    group = Buckets.raw_group("METER001")
    key = Buckets.raw_object(day.isoformat(), group, 3, 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "insert into {} (day, grp, hour, part, object_key, backend, location, row_count, size_bytes,"
                " sha256, meters, schema_version) values (%s, %s, 3, 0, %s, 'minio', 'x', 1, 1, 'x', %s, 1)"
            ).format(sql.Identifier(Tables.RAW_MANIFEST)),
            (day, group, key, ["METER001"]),
        )
    minio = Minio(
        s3_environ["ENERLINK_MINIO_ENDPOINT"],
        access_key=s3_environ["ENERLINK_MINIO_ACCESS_KEY"],
        secret_key=s3_environ["ENERLINK_MINIO_SECRET_KEY"],
        secure=False,
    )
    minio.make_bucket(s3_environ["ENERLINK_MINIO_BUCKET"])
    async with serve_api(s3_environ) as api:
        response = await api.client.get("/meters/METER001/raw", params={"day": day.isoformat()})
    assert response.status_code == 404 and "NoSuchKey" in response.text
