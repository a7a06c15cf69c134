"""The HTTP API served by uvicorn against real Redis and PostgreSQL (and the archiver's store)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql

from enerlink.aggregator.columns import DERIVED
from enerlink.aggregator.fold import LEVELS
from enerlink.api.routes.history import RESOLUTIONS
from enerlink.archiver.months import Month
from enerlink.archiver.service import run as archive_run
from enerlink.archiver.settings import Settings as ArchiveSettings
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.wire import Buckets, Keys, Tables
from tests.support.aggdata import columns, ensure_partition
from tests.support.apiserver import serve_api

BASE = datetime(2026, 3, 1, tzinfo=UTC)


async def _store_latest(redis: aioredis.Redis, environ: dict[str, str], data: bytes, status: bytes) -> Keys:
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    await redis.hset(keys.latest_data, "METER001", data)
    await redis.hset(keys.latest_status, "METER001", status)
    second = json.loads(data)
    second["meterId"] = "METER.2"
    await redis.hset(keys.latest_data, "METER.2", json.dumps(second))
    now_ms = int(time.time() * 1000)
    await redis.hset(keys.meters, mapping={"METER001": now_ms, "METER.2": now_ms - 3_600_000})
    await redis.hset(keys.presence, "METER001", json.dumps({"online": True, "since": "2026-03-01T00:00:00Z"}))
    return keys


async def test_health_and_latest_from_redis(
    environ: dict[str, str],
    redis_client: aioredis.Redis,
    data_fixture_bytes: bytes,
    status_fixture_bytes: bytes,
) -> None:
    await _store_latest(redis_client, environ, data_fixture_bytes, status_fixture_bytes)
    async with serve_api(environ) as api:
        health = await api.client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        one = await api.client.get("/telemetry/latest/data/METER001")
        assert one.status_code == 200 and one.json() == json.loads(data_fixture_bytes)
        every = (await api.client.get("/telemetry/latest/data")).json()
        assert sorted(every) == ["METER.2", "METER001"] and every["METER001"] == json.loads(
            data_fixture_bytes
        )
        status = await api.client.get("/telemetry/latest/status/METER001")
        assert status.json() == json.loads(status_fixture_bytes)

        assert (await api.client.get("/telemetry/latest/data/METER999")).status_code == 404
        assert (await api.client.get("/telemetry/latest/status/METER.2")).status_code == 404
        assert (await api.client.get("/telemetry/latest/data/bad$id")).status_code == 422
        assert (await api.client.get("/telemetry/latest/data/" + "M" * 65)).status_code == 422

        meters = {m["meter_id"]: m for m in (await api.client.get("/meters")).json()}
        assert meters["METER001"]["online"] is True and meters["METER001"]["has_status"] is True
        assert meters["METER001"]["online_since"] == "2026-03-01T00:00:00Z"
        assert meters["METER.2"]["online"] is False  # no presence marker and last seen an hour ago
        assert meters["METER.2"]["last_seen"].endswith("Z")


async def test_health_503_when_redis_is_down(environ: dict[str, str]) -> None:
    from tests.support.services import free_port

    async with serve_api({**environ, "ENERLINK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}) as api:
        response = await api.client.get("/health")
        assert response.status_code == 503
        assert response.json()["postgres"] == "ok" and response.json()["redis"].startswith("error")


def _fill(url: str, table: str, meter_id: str, buckets: list[datetime]) -> None:
    """Rows with distinct values in every column of ``table`` (whatever columns it has)."""
    with psycopg.connect(url) as conn:
        partitioned = conn.execute(
            "select exists(select 1 from pg_partitioned_table where partrelid = to_regclass(%s))", (table,)
        ).fetchone()
        cols = columns(conn, table)
        for i, bucket in enumerate(buckets):
            if partitioned and partitioned[0]:
                ensure_partition(conn, table, bucket)
            row: dict[str, Any] = {}
            for j, (name, kind) in enumerate(cols):
                if name == "meter_id":
                    row[name] = meter_id
                elif name == "bucket":
                    row[name] = bucket
                elif kind == "timestamp with time zone":
                    row[name] = bucket + timedelta(seconds=1)
                elif kind in ("integer", "bigint", "smallint"):
                    row[name] = 10 + i
                elif kind == "text":
                    row[name] = "importing"
                elif kind in ("double precision", "real", "numeric"):
                    row[name] = i * 1.5 + j / 7
            conn.execute(
                sql.SQL("insert into {} ({}) values ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )


def _direct(
    url: str, table: str, meter_id: str, cols: list[str], *, start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            sql.SQL(
                "select bucket, {} from {} where meter_id = %s and bucket >= %s and bucket < %s"
                " order by bucket"
            ).format(sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table)),
            (meter_id, start, end),
        ).fetchall()


@pytest.mark.parametrize("resolution", ["1m", "5m", "1h", "1d"])
async def test_history_equals_sql_at_every_resolution(
    environ: dict[str, str], database_url: str, resolution: str
) -> None:
    await migrate(database_url)
    table, step, _ = RESOLUTIONS[resolution]
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("select to_regclass(%s) is not null", (table,)).fetchone()
    async with serve_api(environ) as api:
        assert exists and exists[0], f"{table} is created by the migrations"
        buckets = [BASE + step * i for i in range(12)]
        # a view's rows live in its folded table (the 5-minute view's, complete buckets, in the closed one)
        stored = {
            **{v: f for v, (f, _) in LEVELS.items()},
            Tables.TELEMETRY_5M: Tables.TELEMETRY_5M_CLOSED,
        }.get(table, table)
        _fill(database_url, stored, "METER001", buckets)
        _fill(database_url, stored, "OTHER", buckets[:3])
        start, end = BASE + step, BASE + step * 10
        params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": resolution}
        response = await api.client.get(
            "/telemetry/history/METER001",
            params={**params, "fields": "battery_soc,import_power,sample_count"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["table"] == table and body["start"] == start.isoformat().replace("+00:00", "Z")
        fields = body["fields"]
        assert {"battery_soc_avg", "import_power_max", "import_power_min"} <= set(fields)
        assert "battery_soc_min" not in fields  # the SOC keeps its average only
        expected = _direct(database_url, table, "METER001", fields, start=start, end=end)
        assert len(body["points"]) == len(expected) == 9
        for point, row in zip(body["points"], expected, strict=True):
            assert datetime.fromisoformat(point["bucket"]) == row[0]
            assert [point[f] for f in fields] == list(row[1:])

        as_csv = await api.client.get(
            "/telemetry/history/METER001",
            params={**params, "fields": "battery_voltage"},
            headers={"Accept": "text/csv"},
        )
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(as_csv.text)))
        assert rows[0] == ["bucket", "battery_voltage_avg", "battery_voltage_min", "battery_voltage_max"]
        soc = _direct(database_url, table, "METER001", rows[0][1:], start=start, end=end)
        assert [[datetime.fromisoformat(r[0]), *map(float, r[1:])] for r in rows[1:]] == [
            list(r) for r in soc
        ]

        # every stored statistic, and every value computed from them (copies and sums of channels)
        everything = await api.client.get("/telemetry/history/METER001", params=params)
        served = everything.json()["fields"]
        cols = columns_of(database_url, table)
        stored = [c for c in cols if c not in ("meter_id", "bucket", "first_ms", "last_ms", "seq_span")]
        computed = [d.name for d in DERIVED if d.name not in cols and set(d.sources) <= set(cols)]
        assert served == stored + computed
        assert {"first_at", "last_at", "import_current_avg", "net_grid_net_power_avg"} <= set(served)
        assert ("seq_last" in served) == (resolution == "1m")  # the minute row's offsets, served as values


def columns_of(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [c for c, _ in columns(conn, table)]


async def test_history_rejections(
    environ: dict[str, str], database_url: str, redis_client: aioredis.Redis
) -> None:
    await migrate(database_url)
    _fill(database_url, Tables.TELEMETRY_AGGREGATES, "METER001", [BASE])
    async with serve_api(environ, ENERLINK_API_MAX_POINTS="100") as api:
        get = api.client.get
        ok = await get(
            "/telemetry/history/METER001",
            params={"start": "2026-03-01T00:00:00Z", "end": "2026-03-01T01:00:00Z"},
        )
        assert ok.status_code == 200 and len(ok.json()["points"]) == 1
        too_many = await get(
            "/telemetry/history/METER001",
            params={"start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"},
        )
        assert too_many.status_code == 422 and "1440 points" in too_many.json()["detail"]
        coarser = await get(
            "/telemetry/history/METER001",
            params={"start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z", "resolution": "1h"},
        )
        assert coarser.status_code in (200, 503)
        backwards = await get(
            "/telemetry/history/METER001",
            params={"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
        )
        assert backwards.status_code == 422
        assert (await get("/telemetry/history/METER001", params={"fields": "nonsense"})).status_code == 422
        assert (
            await get("/telemetry/history/METER001", params={"fields": "x;drop table"})
        ).status_code == 422
        assert (await get("/telemetry/history/METER001", params={"resolution": "2m"})).status_code == 422
        assert (await get("/telemetry/history/bad%20id")).status_code == 422
        hour = {"start": "2026-03-01T00:00:00Z", "end": "2026-03-01T01:00:00Z"}
        assert (await get("/telemetry/history/NOBODY", params=hour)).status_code == 404


async def test_token_auth(
    environ: dict[str, str], redis_client: aioredis.Redis, data_fixture_bytes: bytes
) -> None:
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    await redis_client.hset(keys.latest_data, "METER001", data_fixture_bytes)
    async with serve_api(environ, ENERLINK_API_TOKEN="s3cret") as api:
        assert (await api.client.get("/health")).status_code == 200
        for path in (
            "/telemetry/latest/data",
            "/telemetry/latest/data/METER001",
            "/meters",
            "/events",
            "/telemetry/archive",
        ):
            denied = await api.client.get(path)
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer", path
            assert (await api.client.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
            assert (
                await api.client.get(path, headers={"Authorization": "Bearer s3cret"})
            ).status_code == 200, path
        assert (await api.client.get("/openapi.json")).status_code == 200
        page = await api.client.get("/")  # the dashboard page loads without the token (its JS sends it)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("backend", ["local", "minio"])
async def test_archive_list_and_download(
    environ: dict[str, str], database_url: str, request: pytest.FixtureRequest, backend: str
) -> None:
    if backend == "minio":
        environ = {
            **environ,
            "ENERLINK_MINIO_ENDPOINT": request.getfixturevalue("s3_server"),
            "ENERLINK_MINIO_ACCESS_KEY": "testing",
            "ENERLINK_MINIO_SECRET_KEY": "testing",
            "ENERLINK_MINIO_BUCKET": f"api-{uuid.uuid4().hex[:10]}",
        }
    await migrate(database_url)
    old = Month.of(datetime.now(UTC) - timedelta(days=420))
    _fill(
        database_url,
        Tables.TELEMETRY_AGGREGATES,
        "METER001",
        [old.start + timedelta(minutes=i) for i in range(50)],
    )
    summary = await archive_run(ArchiveSettings.from_env(Env(environ)), once=True)
    assert summary is not None and [r.rows for r in summary.archived] == [50]
    async with serve_api(environ) as api:
        (entry,) = (await api.client.get("/telemetry/archive")).json()
        assert (entry["table"], entry["year"], entry["month"], entry["row_count"]) == (
            Tables.TELEMETRY_AGGREGATES,
            old.year,
            old.month,
            50,
        )
        assert entry["backend"] == backend
        assert (await api.client.get("/telemetry/archive", params={"table": Tables.EVENTS})).json() == []
        download = await api.client.get(entry["download"])
        assert download.status_code == 200 and download.headers["content-type"] == "application/gzip"
        assert int(download.headers["content-length"]) == len(download.content) == entry["size_bytes"]
        assert hashlib.sha256(download.content).hexdigest() == entry["sha256"] == download.headers["x-sha256"]
        if backend == "local":
            path = Path(environ["ENERLINK_ARCHIVE_DIR"]) / Buckets.month_object(
                Tables.TELEMETRY_AGGREGATES, old.year, old.month
            )
            assert download.content == path.read_bytes()
        assert download.headers["x-row-count"] == "50"
        rows = list(csv.DictReader(io.StringIO(gzip.decompress(download.content).decode())))
        assert len(rows) == 50 and rows[0]["meter_id"] == "METER001"
        assert (await api.client.get(f"/telemetry/archive/{old.year - 1}/{old.month}")).status_code == 404
        assert (await api.client.get(f"/telemetry/archive/{old.year}/13")).status_code == 422


async def test_events_endpoint(environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    async with serve_api(environ) as api:
        if columns_of(database_url, Tables.EVENTS) == []:
            assert (await api.client.get("/events")).json() == []
            pytest.skip("the events table is not created by the migrations yet")
        now = datetime.now(UTC).replace(microsecond=0)
        with psycopg.connect(database_url) as conn:
            for meter, at, kind in (
                ("METER001", now - timedelta(hours=2), "offline"),
                ("METER001", now - timedelta(hours=1), "online"),
                ("METER.2", now - timedelta(days=3), "offline"),
            ):
                conn.execute(
                    sql.SQL(
                        "insert into {} (meter_id, at, kind, severity, details)"
                        " values (%s, %s, %s, 'info', '{{}}')"
                    ).format(sql.Identifier(Tables.EVENTS)),
                    (meter, at, kind),
                )
        recent = (await api.client.get("/events")).json()
        assert [e["kind"] for e in recent] == ["offline", "online"]
        old = (
            await api.client.get(
                "/events", params={"meter_id": "METER.2", "since": (now - timedelta(days=7)).isoformat()}
            )
        ).json()
        assert [(e["meter_id"], e["kind"]) for e in old] == [("METER.2", "offline")]
        assert (await api.client.get("/events", params={"meter_id": "bad id"})).status_code == 422
