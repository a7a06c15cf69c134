"""A huge retained message on the data topic, layer by layer.

* The project's broker (``max_packet_size 1048576`` in mosquitto/mosquitto.conf) refuses it: the
  publisher is disconnected ("oversize packet"), nothing is retained, the worker never sees it.
* A broker without that limit (Mosquitto's own default is 256 MB) delivers it: the worker rejects it
  (``payload_too_large``, dead letter with the first 1 KB, counter) and keeps storing; a fresh worker
  (new session) gets it on subscribe and rejects it once more, without crashing or looping; a worker
  resuming its session does not get it again (subscription option retain handling = 1).
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.schemas.snapshot import encode_snapshot
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

HUGE = b'{"meterId":"HUGE","pad":"' + b"x" * 5_000_000 + b'"}'


async def _stored(client: aioredis.Redis, keys: Keys, meter: str, payload: bytes) -> bool:
    return await client.zscore(keys.timeseries(meter), encode_snapshot(payload)) is not None


async def _too_large(client: aioredis.Redis, keys: Keys) -> int:
    return int(await client.hget(keys.rejected_counts, "payload_too_large") or 0)


async def test_project_broker_refuses_a_5_mb_retained_message(
    *,
    own_broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    broker = own_broker.start()
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    settings = ingest_settings({**environ, "ENERLINK_MQTT_URL": broker.url}, client_id=f"ret-{uid}")
    before, after = data_message("GOOD", at=ago(seconds=20)), data_message("GOOD", at=ago(seconds=10))
    async with running(settings):
        async with publisher(broker.url) as pub:
            await pub.one(topics.data, before)
        # the broker resets the publisher's connection; the publish is never confirmed
        with pytest.raises((aiomqtt.MqttError, TimeoutError)):
            async with publisher(broker.url) as pub:
                await asyncio.wait_for(pub.one(topics.data, HUGE, qos=1, retain=True), 10)
        async with publisher(broker.url) as pub:
            await pub.one(topics.data, after)
        await wait_until(lambda: _stored(redis_client, keys, "GOOD", after), what="good message after")
    assert await _stored(redis_client, keys, "GOOD", before)
    assert "oversize packet" in broker.log()
    assert await redis_client.xlen(keys.rejected) == 0  # it never reached the worker


async def test_unlimited_broker_huge_retained_rejected_by_live_and_fresh_workers(
    *,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    broker = Broker(extra_conf="max_packet_size 16777216").start()  # later lines win in Mosquitto
    try:
        keys, topics = Keys(key_prefix), Topics(topic_prefix)
        env = {**environ, "ENERLINK_MQTT_URL": broker.url}
        first = ingest_settings(env, client_id=f"ret-a-{uid}")
        # its own group: in the first one Mosquitto would keep routing a share to the (stopped) first
        # worker's session, which is the documented shared-subscription behaviour, not this test's
        fresh = ingest_settings(env, client_id=f"ret-b-{uid}", share_group=f"fresh{uid}")
        one = IngestMetrics()
        async with running(first, one):
            async with publisher(broker.url) as pub:
                await pub.one(topics.data, HUGE, qos=1, retain=True)
                await pub.one(topics.data, data_message("GOOD", at=ago(seconds=30)))
            await wait_until(lambda: redis_client.hexists(keys.latest_data, "GOOD"), what="good")
            assert await _too_large(redis_client, keys) == 1
            assert one.rejected.labels(reason="payload_too_large")._value.get() == 1
        entry = (await redis_client.xrange(keys.rejected))[0][1]
        assert entry[b"reason"] == b"payload_too_large"
        assert entry[b"payload"] == HUGE[:1024]
        assert b"5000" in entry[b"detail"]  # the size is in the reason's detail

        # the same worker resumes its session: the retained message is not sent again
        again = data_message("GOOD", at=ago(seconds=20))
        async with running(first), publisher(broker.url) as pub:
            await pub.one(topics.data, again)
            await wait_until(lambda: _stored(redis_client, keys, "GOOD", again), what="after resume")
        assert await _too_large(redis_client, keys) == 1

        # a fresh worker (new session) gets it on subscribe: rejected once, and it keeps storing
        two = IngestMetrics()
        last = data_message("GOOD", at=ago(seconds=10))
        async with running(fresh, two):
            await wait_until(lambda: _too_large_is(redis_client, keys, 2), what="fresh worker rejects")
            async with publisher(broker.url) as pub:
                await pub.one(topics.data, last)
            await wait_until(lambda: _stored(redis_client, keys, "GOOD", last), what="after the fresh one")
            await asyncio.sleep(1.0)  # a loop on the retained message would show now
        assert two.rejected.labels(reason="payload_too_large")._value.get() == 1
        assert await _too_large(redis_client, keys) == 2
        assert await redis_client.zcard(keys.timeseries("GOOD")) == 3
    finally:
        broker.stop()


async def _too_large_is(client: aioredis.Redis, keys: Keys, n: int) -> bool:
    return await _too_large(client, keys) >= n
