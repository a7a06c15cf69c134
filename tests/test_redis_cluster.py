"""The pipeline on a real Redis Cluster (6 local redis-server processes, 3 masters with a replica each).

1. Ingest, delivery, aggregator and API on the cluster: readings of meters spread over every master are
   stored with each meter's keys and its part of the fleet-wide hashes in one slot, confirmed to their
   meters, aggregated once and served merged by the API; ``redis-cli -c`` reads the documented key.
2. A master killed with ``kill -9`` mid-stream, its replica promoted: every reading the fleet took is
   aggregated exactly once, and no meter was ever told a reading is stored that the cluster then lost
   (:mod:`tests.support.chaos_check` compares the fleet's publish log with PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest

import enerlink.aggregator.service
import enerlink.ingest.service
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.config import DEFAULT_REDIS_PARTS, Env
from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.settings import Settings as IngestSettings
from enerlink.redis_client import async_client
from enerlink.schemas.wire import Keys, Tables, Topics
from tests.support.apiserver import serve_api
from tests.support.chaos_check import (
    assert_exactly_once,
    assert_stopped_cleanly,
    log_stats,
    read_publish_log,
    verify,
    verify_seqs,
    wait_drained,
)
from tests.support.chaos_stack import Stack, StackConfig
from tests.support.ingest_delivery_support import listening
from tests.support.ingest_support import data_message, status_message
from tests.support.redis_cluster import RedisClusterServers

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

METERS = [f"METER{i:03d}" for i in range(1, 13)]


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    servers = RedisClusterServers(tmp_path / "cluster").start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def any_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    servers = RedisClusterServers(tmp_path / "cluster", tls=request.param).start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_ingest_delivery_aggregator_and_api_on_a_redis_cluster(
    any_cluster: RedisClusterServers, environ: dict[str, str]
) -> None:
    cluster = any_cluster
    environ = {
        **environ,
        "ENERLINK_REDIS_URL": cluster.url,
        "ENERLINK_INGEST_CONFIRM_INTERVAL_S": "1",
        "ENERLINK_AGGREGATE_GRACE_S": "0",
    }
    env = Env(environ)
    topics = Topics(environ["ENERLINK_TOPIC_PREFIX"])
    keys = Keys(environ["ENERLINK_KEY_PREFIX"], parts=DEFAULT_REDIS_PARTS)
    masters = {cluster.master_of(keys.of(m).latest_data) for m in METERS}
    assert len(masters) == 3, "the meters' parts should reach every master"
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)

    ingest = replace(IngestSettings.from_env(env), client_id=f"cluster-{uuid.uuid4().hex[:8]}")
    assert ingest.common.keys == keys and ingest.replicas == 1
    ready = asyncio.Event()
    worker = asyncio.create_task(enerlink.ingest.service.run(ingest, ready=ready), name="ingest")
    redis = async_client(cluster.url)
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with listening(environ["ENERLINK_MQTT_URL"], [topics.confirm("+")]) as confirms:
            async with aiomqtt.Client("127.0.0.1", ingest.common.mqtt.port) as meter:
                for seq in (1, 2, 3):
                    for m in METERS:
                        at = minute + timedelta(seconds=15 * seq)
                        await meter.publish(topics.data, data_message(m, at=at, seq=seq), qos=2)
                await meter.publish(topics.status, status_message("METER002", at=minute), qos=2)
                await meter.publish(topics.data, b'{"meterId": "METER001"', qos=2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                through = {
                    m.body["meterId"]: m.body["through"] for m in confirms.messages if "through" in m.body
                }
                if all(through.get(m) == 3 for m in METERS):
                    break
                await asyncio.sleep(0.2)
        assert all(through.get(m) == 3 for m in METERS), through

        # each meter's readings and its part of the fleet-wide hashes share one slot
        for m in METERS:
            part = keys.of(m)
            assert await redis.zcard(part.timeseries(m)) == 3
            assert await redis.hget(part.latest_data, m) == data_message(
                m, at=minute + timedelta(seconds=45), seq=3
            )
            slots = {
                await redis.cluster_keyslot(k) for k in (part.timeseries(m), part.latest_data, part.meters)
            }
            assert len(slots) == 1
        assert await redis.hexists(keys.of("METER002").latest_status, "METER002")
        rejected = [await redis.hgetall(p.rejected_counts) for p in keys.each_part()]
        assert sum(int(v) for counts in rejected for v in counts.values()) == 1

        # the README's way to the key: `enerlink inspect keys`, then redis-cli in cluster mode
        named = subprocess.run(  # noqa: ASYNC221
            [sys.executable, "-m", "enerlink", "inspect", "keys", "METER001"],
            capture_output=True,
            check=True,
            text=True,
            env={**os.environ, **environ},
        ).stdout
        latest = json.loads(named)["keys"]["latest_data"]
        assert latest == keys.of("METER001").latest_data
        port = cluster.master_ports()[0]
        found = subprocess.run(  # noqa: ASYNC221
            [*cluster.cli(port), "HGET", latest, "METER001"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        assert found.startswith('{"meterId":"METER001"')
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    try:
        await enerlink.aggregator.service.run(AggregatorSettings.from_env(env), once=True)
        with psycopg.connect(environ["ENERLINK_DATABASE_URL"]) as conn:
            rows = conn.execute(
                f"select meter_id, sample_count from {Tables.TELEMETRY_AGGREGATES} where bucket = %s",
                (minute,),
            ).fetchall()
        assert sorted(rows) == [(m, 3) for m in METERS]

        async with serve_api(environ) as api:
            everything = (await api.client.get("/telemetry/latest/data")).json()
            assert sorted(everything) == METERS
            one = await api.client.get("/telemetry/latest/data/METER007")
            assert one.status_code == 200 and one.json()["seq"] == 3
            assert (await api.client.get("/telemetry/latest/status/METER002")).status_code == 200
            listed = (await api.client.get("/meters")).json()
            assert sorted(m["meter_id"] for m in listed) == METERS
    finally:
        await redis.aclose()


async def test_no_confirmation_before_the_replica_holds_the_reading(
    cluster: RedisClusterServers, environ: dict[str, str]
) -> None:
    """A replica frozen (SIGSTOP) cannot acknowledge its master's writes: the meters of that master
    get no confirmation, the others do; thawed, the withheld confirmations follow."""
    environ = {**environ, "ENERLINK_REDIS_URL": cluster.url, "ENERLINK_INGEST_CONFIRM_INTERVAL_S": "0.5"}
    env = Env(environ)
    topics = Topics(environ["ENERLINK_TOPIC_PREFIX"])
    keys = Keys(environ["ENERLINK_KEY_PREFIX"], parts=DEFAULT_REDIS_PARTS)
    frozen_master = cluster.master_of(keys.of("METER001").confirm_due)
    held = [m for m in METERS if cluster.master_of(keys.of(m).confirm_due) == frozen_master]
    free = [m for m in METERS if m not in held]
    assert held and free
    (replica,) = cluster.replicas_of(frozen_master)
    ingest = replace(
        IngestSettings.from_env(env),
        client_id=f"cluster-{uuid.uuid4().hex[:8]}",
        confirm_replicas_wait_ms=300,
    )
    metrics = IngestMetrics()
    ready = asyncio.Event()
    worker = asyncio.create_task(
        enerlink.ingest.service.run(ingest, ready=ready, metrics=metrics), name="ingest"
    )
    start = datetime.now(UTC) - timedelta(seconds=30)
    try:
        async with _phase("the ingest's start", 30):
            await ready.wait()
        async with listening(environ["ENERLINK_MQTT_URL"], [topics.confirm("+")]) as confirms:
            cluster.procs[replica].signal(signal.SIGSTOP)
            try:
                async with (
                    _phase("publishing", 30),
                    aiomqtt.Client("127.0.0.1", ingest.common.mqtt.port) as meter,
                ):
                    for m in METERS:
                        await meter.publish(topics.data, data_message(m, at=start, seq=1), qos=2)
                await _confirmed(confirms, free, limit_s=20)
                await asyncio.sleep(2.0)  # four more rounds
                assert not _through(confirms, held), "confirmed while the replica could not hold it"
                withheld = metrics.delivery_failures.labels(stage="replicas")._value.get()
                assert withheld >= 1
            finally:
                cluster.procs[replica].signal(signal.SIGCONT)
            # a claim lapses after 30 s; the thawed replica then acknowledges at once
            await _confirmed(confirms, held, limit_s=60)
    finally:
        worker.cancel()
        async with _phase("the ingest's stop", 30):
            await asyncio.gather(worker, return_exceptions=True)


@contextlib.asynccontextmanager
async def _phase(what: str, limit_s: float) -> AsyncIterator[None]:
    """At most ``limit_s`` for ``what``; past it, every task's stack is printed and the test fails."""
    try:
        async with asyncio.timeout(limit_s):
            yield
    except TimeoutError:
        for task in asyncio.all_tasks():
            print(f"--- task {task.get_name()}", flush=True)
            task.print_stack(file=sys.stdout)
        raise AssertionError(f"{what} took more than {limit_s} s") from None


def _through(confirms: Any, meters: list[str]) -> dict[str, int]:
    wanted = set(meters)
    return {
        m.body["meterId"]: m.body["through"]
        for m in confirms.messages
        if m.body.get("meterId") in wanted and "through" in m.body
    }


async def _confirmed(confirms: Any, meters: list[str], *, limit_s: float) -> None:
    async with _phase(f"the confirmations of {meters}", limit_s + 5):
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(_through(confirms, meters).get(m) == 1 for m in meters):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"not confirmed within {limit_s} s: {_through(confirms, meters)} of {meters}")


@pytest.mark.timeout(900)
def test_a_master_killed_mid_stream_loses_nothing_confirmed() -> None:
    config = StackConfig(meters=24, interval_s=1.0, steps=70, workers=2, grace_s=5.0, redis_cluster=True)
    stack = Stack(config)
    passed = False
    try:
        stack.start_services()
        stack.start_pipeline()
        stack.start_fleet()
        time.sleep(25)
        cluster = stack.redis
        assert isinstance(cluster, RedisClusterServers)
        victim = cluster.master_of(stack.keys.of("METER001").timeseries("METER001"))
        assert stack.fleet.alive(), "the fleet stopped before the kill"
        cluster.kill(victim)
        promoted = cluster.wait_failover(victim, timeout_s=60)
        assert promoted != victim
        assert stack.fleet.alive(), "the fleet stopped before the failover was over: not mid-stream"
        fleet_rc = stack.wait_fleet(timeout_s=400)
        assert fleet_rc == 0, stack.fleet.output()[-3000:]
        published = read_publish_log(stack.publish_log)
        drain = wait_drained(stack, published, timeout_s=180)
        verdict = verify(stack, published)
        seqs = verify_seqs(stack, published)
        stats = log_stats(stack)
        print(f"\nmaster {victim} killed, replica {promoted} promoted; {stats}", flush=True)
        assert verdict.published >= config.meters * config.steps * 0.5
        detail = f"{verdict}\n{seqs}\n{drain}"
        assert_exactly_once(verdict, seqs, drain, meters=config.meters, detail=detail)
        assert_stopped_cleanly(stack)
        passed = True
    finally:
        if not passed:
            print(stack.tail(), flush=True)
        stack.cleanup(keep=not passed)
