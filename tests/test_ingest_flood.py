"""A flooding device does not starve the fleet: per-meter rate limit, counted, dead-lettered.

One meter publishes as fast as the test can (each message stamped with the current time, like a
device stuck in a loop) while 50 normal meters publish their readings; on the real broker and Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import timedelta

import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.schemas.snapshot import decode_snapshot, encode_snapshot
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import (
    ago,
    data_message,
    ingest_settings,
    publisher,
    running,
    wait_until,
)
from tests.support.services import Broker

FLOOD = 5_000
NORMAL_METERS = 50
PER_METER = 10


async def test_flooding_meter_is_limited_and_counted_and_the_others_all_stored(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    settings = ingest_settings(environ, client_id=f"flood-{uid}")
    rate = settings.meter_rate
    assert rate > 0
    start = ago(minutes=10)
    normal = {
        f"N{m:02d}": [
            data_message(f"N{m:02d}", at=start + timedelta(seconds=5 * i)) for i in range(PER_METER)
        ]
        for m in range(NORMAL_METERS)
    }
    flood: list[bytes] = []

    async def flooder() -> None:
        async with publisher(broker.url, window=100) as pub:
            # generated while publishing: each stamped with the current time, as a looping device does
            def stream():  # type: ignore[no-untyped-def]
                for seq in range(FLOOD):
                    flood.append(data_message("FLOOD", seq=seq))
                    yield topics.data, flood[-1]

            await pub.many(stream(), qos=1)

    async def fleet() -> None:
        async with publisher(broker.url) as pub:
            for i in range(PER_METER):
                await pub.many(((topics.data, msgs[i]) for msgs in normal.values()), qos=2)
                await asyncio.sleep(0.05)

    metrics = IngestMetrics()
    async with running(settings, metrics):
        await asyncio.gather(flooder(), fleet())

        async def accounted() -> bool:
            stored = int(await redis_client.zcard(keys.timeseries("FLOOD")))
            limited = int(await redis_client.hget(keys.rate_limited, "FLOOD") or 0)
            normal_stored = sum([int(await redis_client.zcard(keys.timeseries(m))) for m in normal])
            return stored + limited >= FLOOD and normal_stored >= NORMAL_METERS * PER_METER

        await wait_until(accounted, limit_s=180, what="every message stored or counted")
        await asyncio.sleep(0.5)

    # every normal meter's readings are all there, once each
    for meter, payloads in normal.items():
        assert await redis_client.zrange(keys.timeseries(meter), 0, -1) == list(
            map(encode_snapshot, payloads)
        ), meter
    # the flood: stored + rate_limited = published, nothing silently lost, at most `rate` per second
    stored = set(await redis_client.zrange(keys.timeseries("FLOOD"), 0, -1))
    limited = int(await redis_client.hget(keys.rate_limited, "FLOOD"))
    assert len(stored) + limited == FLOOD
    assert limited > 0
    assert stored <= set(map(encode_snapshot, flood))
    per_second = Counter(json.loads(decode_snapshot(p))["datetime"][:19] for p in stored)
    assert max(per_second.values()) <= rate, per_second.most_common(3)
    # counted in Redis and in Prometheus, once per message
    assert int(await redis_client.hget(keys.rejected_counts, "rate_limited")) == limited
    assert metrics.rejected.labels(reason="rate_limited")._value.get() == limited
    assert set(await redis_client.hkeys(keys.rate_limited)) == {b"FLOOD"}
    # dead-lettered: one entry per meter and batch, carrying how many it stands for
    entries = [fields for _, fields in await redis_client.xrange(keys.rejected)]
    assert entries and all(e[b"reason"] == b"rate_limited" for e in entries)
    assert all(e[b"meter_id"] == b"FLOOD" for e in entries)
    assert sum(int(e[b"count"]) for e in entries) == limited
    assert len(entries) < limited
    print(f"flood of {FLOOD}: {len(stored)} stored, {limited} rate-limited in {len(entries)} dead letters")


async def test_a_meters_backlog_delivered_at_full_speed_is_not_limited(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    """100 minutes of one meter's 5 s readings (an edge replaying its queue, or a session resumed
    after an outage) arrive in a second or two: far above `rate` per second of arrival, but each
    reading in a second of its own clock, so all are stored."""
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    settings = ingest_settings(environ, client_id=f"backlog-{uid}")
    start = ago(minutes=100)
    backlog = [data_message("BACKLOG", at=start + timedelta(seconds=5 * i), seq=i) for i in range(1200)]
    async with running(settings), publisher(broker.url, window=100) as pub:
        await pub.many(((topics.data, p) for p in backlog), qos=1)
        await wait_until(
            lambda: _zcard_is(redis_client, keys.timeseries("BACKLOG"), len(backlog)), what="backlog stored"
        )
    assert await redis_client.zrange(keys.timeseries("BACKLOG"), 0, -1) == list(map(encode_snapshot, backlog))
    assert not await redis_client.hexists(keys.rejected_counts, "rate_limited")
    assert await redis_client.xlen(keys.rejected) == 0


async def _zcard_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.zcard(key)) >= n
