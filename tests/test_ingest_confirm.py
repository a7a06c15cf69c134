"""Confirmations on real Mosquitto + Redis: what the meter is told is exactly what Redis holds, at most once
per meter per interval (also with two workers), the seq record's restart on re-flash and its size bound,
and a worker killed -9 between storing and confirming."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import datetime, timedelta

import pytest
import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.seq_record import MAX_RANGES
from enerlink.schemas.delivery import Confirmation
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_delivery_support import listening, readings, record, retained
from tests.support.ingest_support import (
    ago,
    data_message,
    ingest_settings,
    publisher,
    running,
    wait_until,
)
from tests.support.services import Broker, ServiceProcess


async def _stored(client: aioredis.Redis, keys: Keys, meter: str, count: int) -> bool:
    """At least ``count`` readings of ``meter`` stored, live or as late data (near the window's start)."""
    held = [int(await client.zcard(key)) for key in (keys.timeseries(meter), keys.late_data(meter))]
    return sum(held) >= count


async def test_confirmation_says_what_is_stored(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    settings = ingest_settings(environ, confirm_interval_s=0.3, gap_grace_s=60.0)
    start = ago(minutes=5)
    async with running(settings), publisher(broker.url) as pub:
        for payload in readings("CONT01", [1, 2, 3, 4, 5], start=start):
            await pub.one(topics.data, payload)
        for payload in readings("GAPPY1", [1, 2, 3, 6, 7], start=start):
            await pub.one(topics.data, payload)
        await pub.one(topics.data, data_message("NOSEQ1", at=start))
        await wait_until(lambda: _stored(redis_client, keys, "GAPPY1", 5))
        async with listening(broker.url, [topics.confirm("CONT01"), topics.confirm("GAPPY1")]) as heard:
            await wait_until(lambda: _through(heard.on(topics.confirm("CONT01")), 5), what="CONT01 through 5")
            await wait_until(lambda: _through(heard.on(topics.confirm("GAPPY1")), 3), what="GAPPY1 through 3")
        await asyncio.sleep(0.5)  # nothing for NOSEQ1 would come later

    body = await retained(broker.url, topics.confirm("CONT01"))
    assert body is not None, "the confirmation is retained"
    confirmation = Confirmation.model_validate(body)
    assert (confirmation.meterId, confirmation.through, confirmation.ranges) == ("CONT01", 5, [])

    gappy = Confirmation.model_validate(await retained(broker.url, topics.confirm("GAPPY1")))
    assert gappy.through == 3 and gappy.ranges == [(6, 7)]
    stored = await record(redis_client, keys, "GAPPY1")
    assert stored is not None and stored.through == 3 and stored.ranges == [(6, 7)]
    assert stored.holes() == [(4, 5)]

    assert await retained(broker.url, topics.confirm("NOSEQ1"), limit_s=0.5) is None
    assert await redis_client.get(keys.seq_record("NOSEQ1")) is None
    raw = await redis_client.get(keys.seq_record("CONT01"))
    assert raw is not None and len(raw) < 48, raw  # a meter with nothing missing costs a few tens of bytes
    for meter in ("CONT01", "GAPPY1"):  # set when created, kept by each update, renewed at each claim
        assert 0 < await redis_client.pttl(keys.seq_record(meter)) <= settings.seq_record_ttl_s * 1000


async def _through(messages: list, through: int) -> bool:  # type: ignore[type-arg]
    return any(m.body.get("through") == through for m in messages)


async def test_at_most_one_confirmation_per_meter_per_interval_with_two_workers(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    interval = 1.0
    common = {"confirm_interval_s": interval, "gap_grace_s": 60.0, "share_group": f"g{key_prefix[1:11]}"}
    first = ingest_settings(environ, client_id=f"w1-{key_prefix}", **common)
    second = ingest_settings(environ, client_id=f"w2-{key_prefix}", **common)
    count = 90
    payloads = readings("BURST1", list(range(1, count + 1)), start=ago(hours=1), step_s=5.0)
    async with running(first), running(second), listening(broker.url, [topics.confirm("BURST1")]) as heard:
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with publisher(broker.url) as pub:
            for i in range(0, count, 10):  # a burst lasting about 3 s, spread over both workers
                await pub.many((topics.data, p) for p in payloads[i : i + 10])
                await asyncio.sleep(0.3)
        await wait_until(lambda: _stored(redis_client, keys, "BURST1", count))
        await wait_until(
            lambda: _through(heard.on(topics.confirm("BURST1")), count), what="final confirmation"
        )
        elapsed = loop.time() - began
        await asyncio.sleep(2 * interval)  # anything extra would come now
    confirmations = heard.on(topics.confirm("BURST1"))
    stamps = [datetime.fromisoformat(m.body["at"]) for m in confirmations]
    spacing = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    print(f"{len(confirmations)} confirmations in {elapsed:.1f} s, spacing {spacing}")
    assert len(confirmations) <= math.ceil((elapsed + 2 * interval) / interval) + 1
    assert all(s >= interval for s in spacing), spacing  # ``at`` is the claim's time, on Redis' clock
    throughs = [m.body["through"] for m in confirmations]
    assert throughs == sorted(throughs) and throughs[-1] == count


async def test_reflash_restarts_the_record(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    settings = ingest_settings(environ, confirm_interval_s=0.3, gap_grace_s=60.0)
    start = ago(minutes=10)
    async with running(settings, metrics), publisher(broker.url) as pub:
        for payload in readings("FLASH1", [1, 2, 3, 4, 5, 6, 7, 8], start=start):
            await pub.one(topics.data, payload)
        await wait_until(lambda: _stored(redis_client, keys, "FLASH1", 8))
        before = await record(redis_client, keys, "FLASH1")
        assert before is not None and before.through == 8
        # re-flashed: seq starts at 1 again, on newer datetimes
        later = start + timedelta(minutes=5)
        for payload in readings("FLASH1", [1, 2, 3], start=later):
            await pub.one(topics.data, payload)
        await wait_until(lambda: _stored(redis_client, keys, "FLASH1", 11))
        # an old reading of the first life arriving late does not confuse the new record
        await pub.one(topics.resent, readings("FLASH1", [8], start=start)[0])
        await asyncio.sleep(0.5)
        after = await record(redis_client, keys, "FLASH1")
        assert after is not None and after.through == 3 and after.ranges == [], after
        assert metrics.record_resets._value.get() == 1
        async with listening(broker.url, [topics.confirm("FLASH1")]) as heard:
            await wait_until(lambda: _through(heard.on(topics.confirm("FLASH1")), 3), what="through 3")


async def test_size_bound_gives_up_the_oldest_holes(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    settings = ingest_settings(environ, confirm_interval_s=0.3, gap_grace_s=60.0)
    seqs = list(range(1, 2 * (MAX_RANGES + 10), 2))  # every other seq: MAX_RANGES + 9 holes
    async with running(settings, metrics), publisher(broker.url) as pub:
        await pub.many((topics.data, p) for p in readings("HOLEY1", seqs, start=ago(hours=2), step_s=1.0))
        await wait_until(lambda: _stored(redis_client, keys, "HOLEY1", len(seqs)))
        await asyncio.sleep(0.3)
    rec = await record(redis_client, keys, "HOLEY1")
    assert rec is not None
    assert len(rec.ranges) <= MAX_RANGES
    given_up = metrics.given_up._value.get()
    assert given_up == len(seqs) - 1 - MAX_RANGES  # one range per seq beyond the first
    assert rec.through == 2 * given_up + 1  # the oldest holes went, in order
    assert rec.holes()[0] == (rec.through + 1, rec.through + 1)


@pytest.fixture
def kill_broker(own_broker: Broker) -> Broker:
    return own_broker.start()


async def test_kill_between_store_and_confirmation(
    kill_broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, uid: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(environ["ENERLINK_KEY_PREFIX"])
    env = {**environ, "ENERLINK_MQTT_URL": kill_broker.url, "ENERLINK_INGEST_CLIENT_ID": f"kill-{uid}"}
    # no confirmation round before the kill: the first worker would confirm only after an hour
    slow = {**env, "ENERLINK_INGEST_CONFIRM_INTERVAL_S": "3600"}
    worker = ServiceProcess(args=["ingest"], env=slow).start()
    try:
        async with publisher(kill_broker.url) as pub:
            probe = data_message("PROBE", at=ago(seconds=1))

            async def probed() -> bool:
                await pub.one(topics.data, probe)
                await asyncio.sleep(0.3)
                return bool(await redis_client.hget(keys.latest_data, "PROBE") == probe)

            await wait_until(probed, limit_s=60, what="worker subscribed")
            for payload in readings("KILL01", [1, 2, 3, 4, 5], start=ago(minutes=3)):
                await pub.one(topics.data, payload)
        await wait_until(lambda: _stored(redis_client, keys, "KILL01", 5))
        assert await redis_client.zscore(keys.confirm_due, "KILL01") is not None
        worker.kill()  # kill -9: stored (and acknowledged), not confirmed
        assert await retained(kill_broker.url, topics.confirm("KILL01"), limit_s=0.5) is None
        worker = ServiceProcess(args=["ingest"], env={**env, "ENERLINK_INGEST_CONFIRM_INTERVAL_S": "0.5"})
        worker.start()
        async with listening(kill_broker.url, [topics.confirm("KILL01")]) as heard:
            try:
                await wait_until(lambda: _through(heard.on(topics.confirm("KILL01")), 5), limit_s=60)
            except AssertionError:
                print(worker.output()[-3000:])
                raise

        async def released() -> bool:  # once the broker's PUBACK for the confirmation reached the worker
            return await redis_client.zscore(keys.confirm_due, "KILL01") is None

        await wait_until(released, limit_s=10, what="done, nothing pending")
    finally:
        worker.kill()
