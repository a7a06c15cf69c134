"""A backfill (an hour of readings stored late, after an outage) is aggregated with each minute row
written once: the catch-up pass writes it and the late pass does not write it again (real ingest
store script on real Redis, real aggregator on real PostgreSQL)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime

import numpy as np
import orjson
import psycopg
import redis.asyncio as aioredis

from enerlink.aggregator.service import run
from enerlink.ingest.redis_store import LATE_MINUTE, RedisStore
from enerlink.ingest.validate import Measurement
from enerlink.schemas.wire import Keys, Tables
from tests.conftest import load_fixture
from tests.support.ingest_support import wait_until
from tests.test_aggregator import MIN, minute_dt, now_ms, rows, settings_for

FIXTURE = load_fixture("meter-data.json")
EVERY_MS = 5_000


def _message(meter: str, at_ms: int, k: int) -> bytes:
    msg = copy.deepcopy(FIXTURE)
    msg["meterId"] = meter
    msg["datetime"] = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    msg["seq"] = k + 1
    msg["data"]["import"]["power"] = float(k % 97)
    msg["data"]["import"]["total_energy"] = 25.0 + k / 1000
    return orjson.dumps(msg)


def _writes(url: str, schema: str) -> tuple[int, int, int]:
    """(inserted, updated, dead) row versions of the minute table's partitions in ``schema``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select coalesce(sum(s.n_tup_ins), 0), coalesce(sum(s.n_tup_upd), 0),"
            " coalesce(sum(s.n_dead_tup), 0)"
            " from pg_stat_user_tables s join pg_inherits i on i.inhrelid = s.relid"
            " join pg_class p on p.oid = i.inhparent where s.schemaname = %s and p.relname = %s",
            (schema, Tables.TELEMETRY_AGGREGATES),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def test_an_hour_backfilled_is_written_once_per_minute(
    environ: dict[str, str], redis_client: aioredis.Redis, pg_schema: str, uid: str
) -> None:
    settings = settings_for(environ)
    keys: Keys = settings.common.keys
    store = RedisStore(client=redis_client, keys=keys, retention_ms=settings.retention_s * 1000)
    now = await now_ms(redis_client)
    start = now // MIN * MIN - 70 * MIN  # an hour that ended ten minutes ago: inside the live window
    meter = "BACKFILL"
    points = [(start + k * EVERY_MS, _message(meter, start + k * EVERY_MS, k)) for k in range(60 * 12)]
    for i in range(0, len(points), 100):  # as the edge's backlog arrives: batches, oldest first
        batch = [
            Measurement(kind="data", meter_id=meter, at_ms=at, seq=None, payload=payload)
            for at, payload in points[i : i + 100]
        ]
        result = await store.write(batch)
        assert result.count(1) == len(batch) and result.count(LATE_MINUTE) == len(batch)  # stored late
    await run(settings, once=True)
    url = settings.common.database_url
    stored = {bucket: row for (m, bucket), row in rows(url).items() if m == meter}
    assert sorted(stored) == [minute_dt(start + k * MIN) for k in range(60)]
    for k in range(60):
        row = stored[minute_dt(start + k * MIN)]
        powers = [float((12 * k + j) % 97) for j in range(12)]
        assert row["sample_count"] == 12
        assert np.float32(row["import_power_avg"]) == np.float32(sum(powers) / 12)  # stored as real
        assert row["import_power_max"] == max(powers)
    assert not await redis_client.zrange(keys.late_minutes, 0, -1)  # every flag handled
    # each minute row written once: as many insertions as rows, no update, no dead version
    schema = pg_schema.rsplit("%3D", 1)[1]

    async def counted() -> bool:  # the statistics arrive when the aggregator's backends end
        return _writes(url, schema)[0] >= len(stored)

    await wait_until(counted, limit_s=10, what="insertions counted")
    await asyncio.sleep(1.0)
    assert _writes(url, schema) == (len(stored), 0, 0)
    # and a second run writes nothing again
    await run(settings, once=True)
    await asyncio.sleep(1.5)
    assert _writes(url, schema) == (len(stored), 0, 0)
