"""Faults on real services: kill -9 of the worker, Redis restarted, two shared-subscription workers.

Every message is counted exactly once: the sorted sets hold each payload at most once by construction,
so "nothing twice" is checked as "the exact number of members", "nothing lost" as "every payload is
a member", and redeliveries show up as absorbed duplicates in the gaps hash, never as extra data.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

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
from tests.support.services import Broker, ServiceProcess, free_port, wait_port


def fleet(count: int, *, meters: int) -> list[tuple[str, bytes]]:
    """``count`` data messages round-robin over ``meters`` meters, with seq and distinct datetimes."""
    start = ago(minutes=30)
    out = []
    for i in range(count):
        meter, seq = f"F{i % meters:04d}", i // meters
        out.append((meter, data_message(meter, at=start + timedelta(milliseconds=10 * i), seq=seq)))
    return out


async def stored(client: aioredis.Redis, keys: Keys, meters: int) -> int:
    pipe = client.pipeline(transaction=False)
    for m in range(meters):
        pipe.zcard(keys.timeseries(f"F{m:04d}"))
    return sum(int(n) for n in await pipe.execute())


async def check_exactly_once(
    client: aioredis.Redis, keys: Keys, messages: list[tuple[str, bytes]], meters: int
) -> dict[str, int]:
    """Every message stored, none twice, latest = newest; returns summed gap counters."""
    assert await stored(client, keys, meters) == len(messages)
    by_meter: dict[str, list[bytes]] = {}
    for meter, payload in messages:
        by_meter.setdefault(meter, []).append(payload)
    totals = {"missed": 0, "duplicates": 0}
    for meter, payloads in by_meter.items():
        members = await client.zrange(keys.timeseries(meter), 0, -1)
        assert members == [encode_snapshot(p) for p in payloads], meter  # all there, in order, each once
        assert await client.hget(keys.latest_data, meter) == payloads[-1]
        gaps = json.loads(await client.hget(keys.gaps, meter))
        assert gaps["last_seq"] == len(payloads) - 1
        totals["missed"] += gaps["missed"]
        totals["duplicates"] += gaps["duplicates"]
    assert totals["missed"] == 0
    assert await client.xlen(keys.rejected) == 0
    return totals


async def publish_all(url: str, topic: str, messages: list[tuple[str, bytes]]) -> None:
    async with publisher(url) as pub:
        await pub.many((topic, payload) for _, payload in messages)


@pytest.fixture
def fault_broker(own_broker: Broker) -> Broker:
    return own_broker.start()


def _worker(
    environ: dict[str, str], broker: Broker, client_id: str, extra: dict[str, str] | None = None
) -> ServiceProcess:
    env = {
        **environ,
        "ENERLINK_MQTT_URL": broker.url,
        "ENERLINK_INGEST_CLIENT_ID": client_id,
        **(extra or {}),
    }
    return ServiceProcess(args=["ingest"], env=env)


async def _kill_restart_scenario(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    client: aioredis.Redis,
    keys: Keys,
    topics: Topics,
    count: int,
    meters: int,
    kills: int,
    extra: dict[str, str] | None = None,
) -> None:
    messages = fleet(count, meters=meters)
    worker = _worker(environ, broker, f"ingest-{uid}", extra).start()
    try:
        # the session must exist before the stream starts (a probe proves the subscription is live)
        async with publisher(broker.url) as pub:
            probe = data_message("PROBE", at=ago(seconds=1))
            try:
                await wait_until(lambda: _published_and_stored(pub, topics, client, keys, probe), limit_s=60)
            except AssertionError:
                print(worker.output()[-3000:])
                raise
        sender = asyncio.create_task(publish_all(broker.url, topics.data, messages))
        for k in range(1, kills + 1):
            threshold = count * k // (kills + 1)
            await wait_until(lambda t=threshold: _at_least(client, keys, meters, t), limit_s=120)
            worker.kill()  # kill -9 mid-stream
            worker = _worker(environ, broker, f"ingest-{uid}", extra).start()  # same client id
        await sender
        try:
            await wait_until(lambda: _at_least(client, keys, meters, count), limit_s=60, what="all stored")
        except AssertionError:
            missing = [
                m for m, p in messages if await client.zscore(keys.timeseries(m), encode_snapshot(p)) is None
            ]
            print("stored", await stored(client, keys, meters), "missing", len(missing), missing[:5])
            print(worker.output()[-3000:])
            raise
        await asyncio.sleep(1.0)  # anything extra would arrive now
        totals = await check_exactly_once(client, keys, messages, meters)
        print(f"kill -9 x{kills}: {count} stored once each, {totals['duplicates']} redeliveries absorbed")
    finally:
        worker.kill()


async def _published_and_stored(
    pub, topics: Topics, client: aioredis.Redis, keys: Keys, probe: bytes
) -> bool:  # type: ignore[no-untyped-def]
    if await client.hget(keys.latest_data, "PROBE") == probe:
        return True
    await pub.one(topics.data, probe)
    await asyncio.sleep(0.3)
    return bool(await client.hget(keys.latest_data, "PROBE") == probe)


async def _at_least(client: aioredis.Redis, keys: Keys, meters: int, n: int) -> bool:
    try:
        return await stored(client, keys, meters) >= n
    except (RedisConnectionError, OSError):  # the test's own view while Redis restarts
        return False


@pytest.mark.parametrize(
    ("count", "meters", "kills", "extra"),
    [
        pytest.param(3000, 50, 2, None, id="short"),
        pytest.param(15000, 500, 5, None, id="long", marks=pytest.mark.slow),
        # the reader stopping at a small cap while each restart resumes a backlog
        pytest.param(15000, 500, 5, {"ENERLINK_INGEST_MAX_HELD": "300"}, id="capped", marks=pytest.mark.slow),
    ],
)
async def test_kill_9_mid_stream_every_message_exactly_once(
    *,
    fault_broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
    count: int,
    meters: int,
    kills: int,
    extra: dict[str, str] | None,
) -> None:
    await _kill_restart_scenario(
        broker=fault_broker,
        environ=environ,
        uid=uid,
        client=redis_client,
        keys=Keys(key_prefix),
        topics=Topics(topic_prefix),
        count=count,
        meters=meters,
        kills=kills,
        extra=extra,
    )


class _Redis:
    """A redis-server of this test's own (temp dir, AOF fsync always, so a restart keeps its data)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="enerlink-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[_Redis]:
    server = _Redis()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
async def own_redis_client(own_redis: _Redis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


async def test_redis_restarted_mid_stream_nothing_lost(
    *,
    fault_broker: Broker,
    own_redis: _Redis,
    own_redis_client: aioredis.Redis,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    env = {**environ, "ENERLINK_MQTT_URL": fault_broker.url, "ENERLINK_REDIS_URL": own_redis.url}
    settings = ingest_settings(env, client_id=f"ingest-{uid}")
    messages = fleet(3000, meters=30)
    metrics = IngestMetrics()
    async with running(settings, metrics):
        sender = asyncio.create_task(publish_all(fault_broker.url, topics.data, messages))
        await wait_until(lambda: _at_least(own_redis_client, keys, 30, 600), limit_s=60)
        own_redis.stop()  # Redis goes away mid-stream ...
        await asyncio.sleep(1.5)
        own_redis.start()  # ... and comes back on the same port with its data
        await sender
        await wait_until(lambda: _at_least(own_redis_client, keys, 30, 3000), limit_s=120, what="all")
        await asyncio.sleep(0.5)
    await check_exactly_once(own_redis_client, keys, messages, 30)
    assert metrics.write_failures._value.get() >= 1  # it did hit the outage


async def test_two_shared_workers_no_dupes_no_losses_both_worked(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    messages = fleet(3000, meters=100)
    one, two = IngestMetrics(), IngestMetrics()
    first = ingest_settings(environ, client_id=f"ingest-a-{uid}", share_group=f"g{uid}")
    second = ingest_settings(environ, client_id=f"ingest-b-{uid}", share_group=f"g{uid}")
    async with running(first, one), running(second, two):
        await publish_all(broker.url, topics.data, messages)
        await wait_until(lambda: _at_least(redis_client, keys, 100, 3000), limit_s=120, what="all")
        await asyncio.sleep(0.5)
    totals = await check_exactly_once(redis_client, keys, messages, 100)
    assert totals["duplicates"] == 0
    did = [m.stored.labels(kind="data")._value.get() for m in (one, two)]
    assert sum(did) == 3000
    assert min(did) > 0, did
