"""The walking skeleton, end to end on the real services: a firmware message published at
QoS 2 reaches Redis, a telemetry_aggregates row with the right statistics and the HTTP API; a row
400 days old is archived to S3 (moto, real minio client) and leaves PostgreSQL, last week's stays.
Run on one Redis server and on a Redis Cluster of this test's own (3 masters, 3 replicas)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from minio import Minio

import enerlink.aggregator.service
import enerlink.archiver.service
import enerlink.ingest.service
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.archiver.settings import Settings as ArchiverSettings
from enerlink.config import DEFAULT_REDIS_PARTS, CommonSettings, Env
from enerlink.ingest.settings import Settings as IngestSettings
from enerlink.redis_client import AsyncRedis, async_client
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Buckets, Keys, Tables, Topics
from tests.conftest import load_fixture
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.apiserver import serve_api
from tests.support.redis_cluster import RedisClusterServers


def _message(at: datetime, import_power: float) -> bytes:
    message = load_fixture("meter-data.json")
    message["datetime"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    message["data"]["import"]["power"] = import_power
    message["data"]["net_grid"]["import_power"] = import_power
    message["data"]["net_grid"]["net_power"] = -import_power
    return json.dumps(message).encode()


def _rows(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return list(cur.execute(query, args).fetchall())


@pytest.fixture(params=["one server", "cluster"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None: the shared Redis server; else the URL of a Redis Cluster of this test's own."""
    if request.param == "one server":
        yield None
        return
    cluster = RedisClusterServers(tmp_path / "cluster").start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


async def test_a_meter_message_reaches_every_store_and_comes_back_out(
    s3_environ: dict[str, str], layout: str | None, data_fixture_bytes: bytes
) -> None:
    if layout is not None:
        s3_environ = {**s3_environ, "ENERLINK_REDIS_URL": layout}
    env = Env(s3_environ)
    topics, all_keys = Topics(s3_environ["ENERLINK_TOPIC_PREFIX"]), CommonSettings.from_env(env).keys
    assert all_keys.parts == (0 if layout is None else DEFAULT_REDIS_PARTS)
    keys = all_keys.of("METER001")
    async with async_client(s3_environ["ENERLINK_REDIS_URL"]) as redis_client:
        await _pipeline(
            s3_environ,
            env,
            topics=topics,
            all_keys=all_keys,
            keys=keys,
            redis_client=redis_client,
            data_fixture_bytes=data_fixture_bytes,
        )


async def _pipeline(
    s3_environ: dict[str, str],
    env: Env,
    *,
    topics: Topics,
    all_keys: Keys,
    keys: Keys,
    redis_client: AsyncRedis,
    data_fixture_bytes: bytes,
) -> None:
    url = s3_environ["ENERLINK_DATABASE_URL"]
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    powers = [480.2, 500.0, 460.0]
    live = [_message(minute + timedelta(seconds=10 * (i + 1)), p) for i, p in enumerate(powers)]

    # 1. meter -> broker (QoS 2) -> ingest -> Redis; the fixture itself, unchanged, and a bad message
    ready = asyncio.Event()
    # a client id of its own: the host's default one may hold another test's session and its queue
    ingest_settings = replace(IngestSettings.from_env(env), client_id=f"e2e-{uuid.uuid4().hex[:8]}")
    worker = asyncio.create_task(enerlink.ingest.service.run(ingest_settings, ready=ready), name="ingest")
    try:
        await asyncio.wait_for(ready.wait(), 15)
        async with aiomqtt.Client("127.0.0.1", ingest_settings.common.mqtt.port) as meter:
            await meter.publish(topics.data, data_fixture_bytes, qos=2)
            await meter.publish(topics.data, b'{"meterId": "METER001"', qos=2)
            for payload in live:
                await meter.publish(topics.data, payload, qos=2)
        for _ in range(200):
            if await redis_client.zcard(keys.timeseries("METER001")) == len(live):
                break
            await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    assert await redis_client.hget(keys.latest_data, "METER001") == live[-1]
    series = await redis_client.zrange(keys.timeseries("METER001"), 0, -1, withscores=True)
    assert [member for member, _ in series] == list(map(encode_snapshot, live))
    assert series[0][1] == (minute + timedelta(seconds=10)).timestamp() * 1000
    assert 0 < await redis_client.ttl(keys.timeseries("METER001")) <= 7200
    counts = [await redis_client.hgetall(part.rejected_counts) for part in all_keys.each_part()]
    assert sum(int(v) for part in counts for v in part.values()) == 1
    # the two-year-old fixture is outside the live window: kept as late data for the aggregator
    assert await redis_client.zcard(keys.late_data("METER001")) == 1

    # 2. Redis -> aggregator -> PostgreSQL
    await enerlink.aggregator.service.run(AggregatorSettings.from_env(env), once=True)
    row = _rows(
        url,
        f"select * from {Tables.TELEMETRY_AGGREGATES} where meter_id = %s and bucket = %s",
        "METER001",
        minute,
    )
    assert len(row) == 1
    assert row[0]["sample_count"] == 3
    assert row[0]["import_power_avg"] == pytest.approx(sum(powers) / 3)
    assert row[0]["import_power_min"] == pytest.approx(460.0)
    assert row[0]["import_power_max"] == pytest.approx(500.0)
    assert row[0]["battery_soc_avg"] == pytest.approx(86.63281)
    # the firmware fixture itself, unchanged (2025-10-26T04:27:10Z), was aggregated as late data
    fixture_row = _rows(
        url,
        f"select * from {Tables.TELEMETRY_AGGREGATES} where bucket = %s",
        datetime(2025, 10, 26, 4, 27, tzinfo=UTC),
    )
    assert len(fixture_row) == 1 and fixture_row[0]["sample_count"] == 1
    assert fixture_row[0]["import_power_max"] == pytest.approx(480.2)
    assert fixture_row[0]["import_active_count"] == 1  # served as import_active_ratio 1.0
    await enerlink.aggregator.service.run(AggregatorSettings.from_env(env), once=True)  # idempotent
    assert len(_rows(url, f"select 1 from {Tables.TELEMETRY_AGGREGATES}")) == len(
        _rows(url, f"select distinct meter_id, bucket from {Tables.TELEMETRY_AGGREGATES}")
    )

    # 3. HTTP: latest from Redis, history from PostgreSQL
    async with serve_api(s3_environ) as api:
        latest = await api.client.get("/telemetry/latest/data/METER001")
        assert latest.status_code == 200 and latest.json() == json.loads(live[-1])
        history = await api.client.get(
            "/telemetry/history/METER001",
            params={
                "start": (minute - timedelta(minutes=1)).isoformat(),
                "end": (minute + timedelta(minutes=1)).isoformat(),
                "fields": "import_power",
            },
        )
        assert history.status_code == 200, history.text
        points = history.json()["points"]
        assert len(points) == 1
        assert points[0]["import_power_avg"] == pytest.approx(sum(powers) / 3)
        assert (points[0]["import_power_min"], points[0]["import_power_max"]) == (460.0, 500.0)
        assert (await api.client.get("/telemetry/latest/data/NOSUCHMETER")).status_code == 404
        assert (await api.client.get("/telemetry/latest/data/bad:id")).status_code == 422

    # 4. PostgreSQL -> archiver -> S3: a row 400 days old leaves, last week's stays
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old, recent = now - timedelta(days=400), now - timedelta(days=7)
    insert_rows(
        url,
        Tables.TELEMETRY_AGGREGATES,
        [
            aggregate_row("METER001", old, sample_count=12, battery_soc_avg=55.5, import_power_max=999.0),
            aggregate_row("METER001", recent, sample_count=11, battery_soc_avg=66.6),
        ],
    )
    await enerlink.archiver.service.run(ArchiverSettings.from_env(env), once=True)
    left = {r["bucket"] for r in _rows(url, f"select bucket from {Tables.TELEMETRY_AGGREGATES}")}
    assert old not in left and recent in left and minute in left
    client = Minio(
        s3_environ["ENERLINK_MINIO_ENDPOINT"], access_key="testing", secret_key="testing", secure=False
    )
    name = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, old.year, old.month)
    response = client.get_object(s3_environ["ENERLINK_MINIO_BUCKET"], name)
    try:
        archived = list(csv.DictReader(io.StringIO(gzip.decompress(response.read()).decode())))
    finally:
        response.close()
        response.release_conn()
    mine = [r for r in archived if r["meter_id"] == "METER001" and r["sample_count"] == "12"]
    assert len(mine) == 1
    assert float(mine[0]["battery_soc_avg"]) == 55.5 and float(mine[0]["import_power_max"]) == 999.0
    assert datetime.fromisoformat(mine[0]["bucket"].replace("Z", "+00:00")) == old
