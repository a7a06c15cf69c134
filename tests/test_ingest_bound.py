"""Memory held by the worker is bounded: a session resumed with a large backlog never holds more
than the cap (messages, or payload bytes), and nothing is lost or doubled.

Mosquitto 2.0 sends a resumed session far more than its Receive Maximum (measured: 4,287 held for a
window of 1,000); the cap is enforced by the worker's reader stopping (TCP flow control), so these
tests set caps well below the window and check the peak the worker reports.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import ingest_settings, running, wait_until
from tests.support.services import Broker
from tests.test_ingest_faults import (  # noqa: F401 - own_redis* are fixtures used below
    _at_least,
    _Redis,
    check_exactly_once,
    fleet,
    own_redis,
    own_redis_client,
    publish_all,
)


@pytest.mark.parametrize(
    ("count", "meters", "overrides", "cap_bytes"),
    [
        pytest.param(20_000, 200, {"max_held": 300}, None, id="messages"),
        pytest.param(
            5_000,
            100,
            {"max_held": 60_000, "max_payload": 4096, "max_held_bytes": 40_000},
            40_000,
            id="bytes",
        ),
    ],
)
async def test_resumed_backlog_never_held_beyond_the_cap(
    *,
    own_broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    count: int,
    meters: int,
    overrides: dict[str, int],
    cap_bytes: int | None,
) -> None:
    broker = own_broker.start()
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    settings = ingest_settings(
        {**environ, "ENERLINK_MQTT_URL": broker.url}, client_id=f"bound-{uid}", **overrides
    )
    assert settings.receive_maximum == 1000  # the window the broker is told (and overshoots)
    async with running(settings):
        pass  # the persistent session and its subscription now exist; the worker goes away
    messages = fleet(count, meters=meters)
    await publish_all(broker.url, topics.data, messages)  # all queued in the session meanwhile

    metrics = IngestMetrics()
    async with running(settings, metrics):
        await wait_until(
            lambda: _at_least(redis_client, keys, meters, count), limit_s=300, what="backlog stored"
        )
        await asyncio.sleep(0.5)
    await check_exactly_once(redis_client, keys, messages, meters)
    peak = int(metrics.held_peak._value.get())
    peak_bytes = int(metrics.held_bytes_peak._value.get())
    pauses = int(metrics.reader_pauses._value.get())
    print(f"{count} backlog: peak held {peak} messages / {peak_bytes} bytes, {pauses} pauses")
    assert pauses >= 1  # the backlog did press against the cap
    if cap_bytes is None:
        assert 0 < peak <= settings.max_held
    else:
        # checked before each message is decoded: at most one message beyond the byte cap
        assert 0 < peak_bytes <= cap_bytes + settings.max_payload
    assert metrics.stored.labels(kind="data")._value.get() == count


async def test_redis_outage_while_draining_at_the_cap_loses_nothing(
    *,
    own_broker: Broker,
    own_redis: _Redis,  # noqa: F811 - the fixture imported above
    own_redis_client: aioredis.Redis,  # noqa: F811
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
) -> None:
    """The reader stopped at its cap while Redis goes away and comes back: the stop ends with the
    first write after the outage, nothing is lost, nothing doubled, the peak stays under the cap."""
    broker = own_broker.start()
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    env = {**environ, "ENERLINK_MQTT_URL": broker.url, "ENERLINK_REDIS_URL": own_redis.url}
    settings = ingest_settings(env, client_id=f"bound-redis-{uid}", max_held=200)
    async with running(settings):
        pass
    messages = fleet(6000, meters=60)
    await publish_all(broker.url, topics.data, messages)

    metrics = IngestMetrics()
    async with running(settings, metrics):
        await wait_until(lambda: _at_least(own_redis_client, keys, 60, 1000), limit_s=120)
        own_redis.stop()
        await asyncio.sleep(2.0)
        own_redis.start()
        await wait_until(lambda: _at_least(own_redis_client, keys, 60, 6000), limit_s=300, what="all")
        await asyncio.sleep(0.5)
    await check_exactly_once(own_redis_client, keys, messages, 60)
    assert metrics.write_failures._value.get() >= 1  # it did hit the outage
    assert metrics.reader_pauses._value.get() >= 1
    assert 0 < metrics.held_peak._value.get() <= 200
