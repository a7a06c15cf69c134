"""GET /meters/{id}/health against real PostgreSQL and Redis: minute rows inserted directly (as the
aggregator writes them), bucketed in SQL with sample-count weighting, plus the meter's events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from enerlink.api.routes import history
from enerlink.db import migrate
from enerlink.schemas.wire import Keys, Tables
from tests.support.apiserver import serve_api

BASE = datetime(2026, 1, 10, tzinfo=UTC)


def _minute(meter_id: str, minute: datetime, i: int, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "meter_id": meter_id,
        "minute": minute,
        "sample_count": 1 + i % 3,  # unequal weights: a plain average would differ
        "rssi_avg": -60.0 - i,
        "rssi_min": -62.0 - i,
        "wifi_disconnected_ratio": (i % 4) / 4,
        "mqtt_disconnected_ratio": (i % 5) / 5,
        "mqtt_attempts_max": i % 7,
        "free_heap_min": 60_000 - 100 * i,
        "reboots": 1 if i % 17 == 5 else 0,
        "sensors_connected_min": 7 - (i % 2),
        "sensors_total": 7,
        "uptime_last_ms": 1000 * (i + 1),
    }
    row.update(over)
    return row


def _insert(url: str, table: str, rows: Iterable[dict[str, Any]]) -> None:
    with psycopg.connect(url) as conn:
        for row in rows:
            conn.execute(
                sql.SQL("insert into {} ({}) values ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )


def _event(meter_id: str, at: datetime, kind: str, **details: Any) -> dict[str, Any]:
    return {
        "meter_id": meter_id,
        "at": at,
        "kind": kind,
        "severity": "warning",
        "details": json.dumps(details),
    }


def _weighted(rows: list[dict[str, Any]], name: str) -> float | None:
    known = [r for r in rows if r[name] is not None]
    if not known:
        return None
    return float(sum(r[name] * r["sample_count"] for r in known) / sum(r["sample_count"] for r in known))


def _expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What one bucket must hold, computed here in Python from the minute rows."""
    last = max(rows, key=lambda r: r["minute"])
    return {
        "minutes": len(rows),
        "sample_count": sum(r["sample_count"] for r in rows),
        "rssi_avg": _weighted(rows, "rssi_avg"),
        "rssi_min": min(r["rssi_min"] for r in rows),
        "wifi_disconnected_ratio": _weighted(rows, "wifi_disconnected_ratio"),
        "mqtt_disconnected_ratio": _weighted(rows, "mqtt_disconnected_ratio"),
        "mqtt_attempts_max": max(r["mqtt_attempts_max"] for r in rows),
        "free_heap_min": min(r["free_heap_min"] for r in rows),
        "reboots": sum(r["reboots"] for r in rows),
        "sensors_connected_min": min(r["sensors_connected_min"] for r in rows),
        "sensors_total": 7,
        "uptime_last_ms": last["uptime_last_ms"],
    }


def _close(point: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert abs(point[name] - value) < 1e-9, (name, point[name], value)
        else:
            assert point[name] == value, (name, point[name], value)


async def test_minute_rows_hourly_buckets_and_events(environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    rows = [_minute("METER001", BASE + timedelta(minutes=i), i) for i in range(180)]  # 3 hours
    rows[70]["rssi_avg"] = None  # a minute without RSSI does not pull the average
    _insert(database_url, Tables.DEVICE_HEALTH, rows)
    _insert(database_url, Tables.DEVICE_HEALTH, [_minute("OTHER", BASE + timedelta(minutes=3), 3)])
    _insert(
        database_url,
        Tables.EVENTS,
        [
            _event("METER001", BASE + timedelta(minutes=30), "weak_signal", rssi=-80),
            _event("METER001", BASE + timedelta(minutes=95), "low_memory", free_heap=40_000),
            _event("METER001", BASE - timedelta(minutes=1), "repeated_reboots"),  # before the range
            _event("OTHER", BASE + timedelta(minutes=40), "weak_signal"),  # another meter
        ],
    )
    async with serve_api(environ) as api:
        start, end = BASE, BASE + timedelta(hours=3)
        params = {"start": start.isoformat(), "end": end.isoformat()}

        minutes = await api.client.get("/meters/METER001/health", params={**params, "bucket": "1m"})
        assert minutes.status_code == 200, minutes.text
        body = minutes.json()
        assert body["bucket"] == "1m" and len(body["points"]) == 180
        for point, row in zip(body["points"], rows, strict=True):
            assert datetime.fromisoformat(point["bucket"]) == row["minute"]
            _close(point, {**_expected([row]), "rssi_avg": row["rssi_avg"]})

        hourly = (await api.client.get("/meters/METER001/health", params={**params, "bucket": "1h"})).json()
        assert [p["bucket"] for p in hourly["points"]] == [
            "2026-01-10T00:00:00Z",
            "2026-01-10T01:00:00Z",
            "2026-01-10T02:00:00Z",
        ]
        for hour, point in enumerate(hourly["points"]):
            _close(point, _expected(rows[hour * 60 : (hour + 1) * 60]))
        assert sum(p["reboots"] for p in hourly["points"]) == sum(r["reboots"] for r in rows) > 0

        assert [(e["kind"], e["at"]) for e in hourly["events"]] == [
            ("weak_signal", "2026-01-10T00:30:00Z"),
            ("low_memory", "2026-01-10T01:35:00Z"),
        ]
        assert hourly["events"][0]["details"] == {"rssi": -80} and hourly["events_truncated"] is False

        # auto: 3 hours fit at 1 minute; a week is 672 buckets of 15 minutes
        assert (await api.client.get("/meters/METER001/health", params=params)).json()["bucket"] == "1m"
        week = {"start": start.isoformat(), "end": (start + timedelta(days=7)).isoformat()}
        weekly = (await api.client.get("/meters/METER001/health", params=week)).json()
        assert weekly["bucket"] == "15m" and len(weekly["points"]) == 12
        assert sum(p["sample_count"] for p in weekly["points"]) == sum(r["sample_count"] for r in rows)


async def test_day_buckets_follow_the_time_zone(environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    # 22:30Z and 23:30Z on 9 Jan are 23:30 on the 9th and 00:30 on the 10th in Berlin (UTC+1)
    rows = [
        _minute("METER001", datetime(2026, 1, 9, 22, 30, tzinfo=UTC), 1),
        _minute("METER001", datetime(2026, 1, 9, 23, 30, tzinfo=UTC), 2),
        _minute("METER001", datetime(2026, 1, 10, 12, 0, tzinfo=UTC), 4),
    ]
    _insert(database_url, Tables.DEVICE_HEALTH, rows)
    async with serve_api(environ, ENERLINK_TIMEZONE="Europe/Berlin") as api:
        params = {"start": "2026-01-09T00:00:00Z", "end": "2026-01-11T00:00:00Z", "bucket": "1d"}
        body = (await api.client.get("/meters/METER001/health", params=params)).json()
        assert body["timezone"] == "Europe/Berlin"
        assert [(p["bucket"], p["minutes"]) for p in body["points"]] == [
            ("2026-01-08T23:00:00Z", 1),
            ("2026-01-09T23:00:00Z", 2),
        ]
        _close(body["points"][1], _expected(rows[1:]))


async def test_rejections_unknown_and_empty(
    environ: dict[str, str], database_url: str, redis_client: aioredis.Redis
) -> None:
    await migrate(database_url)
    _insert(database_url, Tables.DEVICE_HEALTH, [_minute("METER001", BASE, 0)])
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    await redis_client.hset(keys.meters, "QUIET", int(time.time() * 1000))  # known, but no health rows
    async with serve_api(environ, ENERLINK_API_MAX_POINTS="1000", ENERLINK_API_TOKEN="tok") as api:
        auth = {"Authorization": "Bearer tok"}

        async def get(path: str, **params: str) -> Any:
            return await api.client.get(path, params=params, headers=auth)

        assert (await api.client.get("/meters/METER001/health")).status_code == 401
        day = {"start": "2026-01-10T00:00:00Z", "end": "2026-01-11T00:00:00Z"}
        assert (await get("/meters/METER001/health", **day)).json()["points"][0]["minutes"] == 1
        unknown = await get("/meters/NOBODY/health", **day)
        assert unknown.status_code == 404 and "NOBODY" in unknown.json()["detail"]
        empty = await get("/meters/QUIET/health", **day)
        assert empty.status_code == 200 and empty.json()["points"] == [] and empty.json()["events"] == []

        backwards = await get("/meters/METER001/health", start=day["end"], end=day["start"])
        assert backwards.status_code == 422 and "before" in backwards.json()["detail"]
        before = history.QUERY_STATS.too_many_points
        month = await get(
            "/meters/METER001/health", start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z", bucket="1m"
        )
        assert month.status_code == 422
        assert "maximum is 1000" in month.json()["detail"] and "coarser" in month.json()["detail"]
        assert history.QUERY_STATS.too_many_points == before + 1
        assert (await get("/meters/METER001/health", bucket="2m")).status_code == 422
        assert (await get("/meters/METER001/health", start="yesterday")).status_code == 422
        assert (await get("/meters/bad%20id/health")).status_code == 422
        # ten years: auto falls back to days, still over this server's 1000-bucket limit: a clear 422
        decade = await get(
            "/meters/METER001/health", start="2016-01-01T00:00:00Z", end="2026-01-01T00:00:00Z"
        )
        assert decade.status_code == 422 and "at 1d" in decade.json()["detail"]


async def test_hour_buckets_on_the_night_the_clocks_go_back(
    environ: dict[str, str], database_url: str
) -> None:
    """Europe/London, 26 Oct 2025: 01:00-02:00 is lived twice (BST, then GMT); two hourly buckets."""
    await migrate(database_url)
    start = datetime(2025, 10, 25, 22, 0, tzinfo=UTC)
    _insert(
        database_url,
        Tables.DEVICE_HEALTH,
        [_minute("METER001", start + timedelta(minutes=i), 1) for i in range(360)],
    )
    async with serve_api(environ, ENERLINK_TIMEZONE="Europe/London") as api:
        params = {"start": start.isoformat(), "end": (start + timedelta(hours=6)).isoformat(), "bucket": "1h"}
        body = (await api.client.get("/meters/METER001/health", params=params)).json()
    assert [(p["bucket"], p["minutes"]) for p in body["points"]] == [
        (f"2025-10-{day}T{hour:02d}:00:00Z", 60)
        for day, hour in ((25, 22), (25, 23), (26, 0), (26, 1), (26, 2), (26, 3))
    ]
