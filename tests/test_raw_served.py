"""Raw readings served from the archive (a meter's day as Parquet), and the minute rows recomputed
from them equal to those the aggregator wrote from Redis."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pyarrow.parquet as pq
import pytest
import redis
from psycopg import sql

from enerlink.aggregator.service import run as aggregate_run
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.archiver.raw_format import to_messages
from enerlink.archiver.raw_service import raw_now
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.conftest import TEST_REDIS_URL
from tests.support.apiserver import serve_api
from tests.support.rawdata import HOUR_MS, previous_hour, simulate, store
from tests.support.services import ServiceProcess


@pytest.fixture
def sync_redis() -> Any:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        yield client


def _export(environ: dict[str, str]) -> None:
    settings = Settings.from_env(Env({**environ, "ENERLINK_RAW_EXPORT_GRACE_S": "0"}))
    raw_now(settings, open_store(settings.storage), threading.Event())


async def test_a_meters_day_is_served_as_parquet(environ: dict[str, str], sync_redis: redis.Redis) -> None:
    await migrate(environ["ENERLINK_DATABASE_URL"])
    keys = Settings.from_env(Env(environ)).common.keys
    hour = previous_hour(sync_redis)
    readings = simulate(4, start_ms=hour, seconds=900)
    store(sync_redis, keys, readings)
    _export(environ)
    day = datetime.fromtimestamp(hour / 1000, UTC).date().isoformat()
    async with serve_api(environ) as api:
        response = await api.client.get("/meters/METER002/raw", params={"day": day})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/vnd.apache.parquet"
        table = pq.read_table(io.BytesIO(response.content))
        own = sorted((r.at_ms, orjson.loads(r.message)) for r in readings if r.meter_id == "METER002")
        assert int(response.headers["x-row-count"]) == table.num_rows == len(own) > 0
        assert sorted((ms, orjson.loads(m)) for _, ms, m in to_messages(table)) == own
        assert set(table.column("meter_id").to_pylist()) == {"METER002"}

        listed = (await api.client.get("/telemetry/archive/raw", params={"day": day})).json()
        assert sum(e["row_count"] for e in listed) == len(readings)
        assert {m for e in listed for m in e["meters"]} == {r.meter_id for r in readings}

        assert (await api.client.get("/meters/NOPE/raw", params={"day": day})).status_code == 404
        other = (await api.client.get("/meters/METER002/raw", params={"day": "2001-01-01"})).status_code
        assert other == 404
        assert (await api.client.get("/meters/METER002/raw", params={"day": "yesterday"})).status_code == 422
        assert (await api.client.get("/meters/bad$id/raw", params={"day": day})).status_code == 422


def _minute_rows(url: str, lo: datetime, hi: datetime) -> dict[tuple[str, datetime], dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        found = cur.execute(
            sql.SQL("select * from {} where bucket >= %s and bucket < %s").format(
                sql.Identifier(Tables.TELEMETRY_AGGREGATES)
            ),
            (lo, hi),
        ).fetchall()
    return {(r["meter_id"], r["bucket"]): r for r in found}


async def test_minute_rows_recomputed_from_raw_equal_the_aggregators(
    environ: dict[str, str], sync_redis: redis.Redis
) -> None:
    url = environ["ENERLINK_DATABASE_URL"]
    await migrate(url)
    keys = Settings.from_env(Env(environ)).common.keys
    hour = previous_hour(sync_redis)
    store(sync_redis, keys, simulate(3, start_ms=hour, seconds=3600, interval_s=5))
    aggregator = AggregatorSettings.from_env(
        Env({**environ, "ENERLINK_AGGREGATOR_METRICS_PORT": "0", "ENERLINK_AGGREGATE_WORKERS": "1"})
    )
    await aggregate_run(aggregator, once=True)  # the real aggregator, from Redis
    lo, hi = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (hour, hour + HOUR_MS))
    written = _minute_rows(url, lo, hi)
    assert len(written) == 3 * 60

    _export(environ)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("delete from {} where bucket >= %s and bucket < %s").format(
                sql.Identifier(Tables.TELEMETRY_AGGREGATES)
            ),
            (lo, hi),
        )
    assert _minute_rows(url, lo, hi) == {}

    command = ServiceProcess(["aggregate", "--from-raw", lo.date().isoformat()], environ).start()
    assert command.process is not None
    assert await asyncio.to_thread(command.process.wait, 120) == 0, command.log_path.read_text()
    assert f"-> {len(written)} minute rows" in command.log_path.read_text()
    again = _minute_rows(url, lo, hi)
    assert again.keys() == written.keys()
    for key, row in written.items():
        assert again[key] == row, key  # every column, exactly
