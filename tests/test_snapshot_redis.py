"""Compact snapshots in real Redis: the footprint of an hour of a simulated meter, one member per
reading whatever path it came by (redelivery, resend), and the operator's ``enerlink inspect``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import orjson
import pytest
import redis.asyncio as aioredis

from enerlink.ingest.redis_store import RedisStore
from enerlink.ingest.validate import Measurement
from enerlink.schemas.snapshot import decode_snapshot, encode_snapshot
from enerlink.schemas.telemetry import DataMessage, epoch_ms
from enerlink.schemas.wire import Keys
from tests.support.ingest_support import ago, data_message, ingest_settings, publisher, running, wait_until
from tests.support.services import Broker
from tests.test_snapshot import simulated

MAX_BYTES_PER_SNAPSHOT = 400


async def test_an_hour_of_a_simulated_meter_takes_under_400_bytes_a_snapshot(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    store = RedisStore(client=redis_client, keys=keys, retention_ms=10**13)  # nothing trimmed: 2025 data
    payloads = simulated(meters=1, steps=720)  # 1 h at 5 s
    items = []
    for payload in payloads:
        msg = DataMessage.model_validate_json(payload)
        items.append(
            Measurement(
                kind="data", meter_id=msg.meterId, at_ms=epoch_ms(msg.datetime), seq=msg.seq, payload=payload
            )
        )
    for i in range(0, len(items), 100):
        await store.write(items[i : i + 100])
    key = keys.timeseries(items[0].meter_id)
    assert await redis_client.zcard(key) == 720
    used = int(await redis_client.memory_usage(key, samples=0))
    per_snapshot = used / 720
    print(f"MEMORY USAGE {key} SAMPLES 0 / ZCARD = {per_snapshot:.0f} bytes per snapshot")
    assert per_snapshot < MAX_BYTES_PER_SNAPSHOT
    members = await redis_client.zrange(key, 0, -1)
    assert [orjson.loads(decode_snapshot(m)) for m in members] == [orjson.loads(p) for p in payloads]
    # the latest hash keeps the message as received: readable with redis-cli HGET
    assert await redis_client.hget(keys.latest_data, items[0].meter_id) == payloads[-1]


async def test_the_same_reading_is_one_member_whether_redelivered_or_resent(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = ingest_settings(environ, client_id=f"same-{environ['ENERLINK_KEY_PREFIX']}")
    keys, topics = settings.common.keys, settings.common.topics
    payloads = [data_message("SAME", at=ago(seconds=30 - 5 * k), seq=k + 1) for k in range(3)]
    key = keys.timeseries("SAME")
    async with running(settings), publisher(broker.url) as pub:
        for payload in payloads:
            await pub.one(topics.data, payload)
        await pub.one(topics.data, payloads[1])  # sent twice
        await pub.one(topics.resent, payloads[2])  # and re-sent from the meter's log
        await pub.one(topics.resent, payloads[0])

        async def three_and_all_handled() -> bool:
            return await redis_client.zcard(key) == 3 and await _duplicates(redis_client, keys, "SAME") >= 3

        await wait_until(three_and_all_handled, what="3 members and 3 duplicates seen")
        await asyncio.sleep(0.3)
    members = await redis_client.zrange(key, 0, -1)
    assert members == [encode_snapshot(p) for p in payloads]


async def _duplicates(client: aioredis.Redis, keys: Keys, meter: str) -> int:
    raw = await client.hget(keys.gaps, meter)
    return 0 if raw is None else int(json.loads(raw)["duplicates"])


@pytest.mark.parametrize("late", [False, True])
async def test_inspect_prints_the_stored_snapshots_as_json_lines(
    redis_client: aioredis.Redis, environ: dict[str, str], key_prefix: str, late: bool
) -> None:
    keys = Keys(key_prefix)
    payloads = simulated(meters=1, steps=8)
    key = keys.late_data("METER001") if late else keys.timeseries("METER001")
    scores = [epoch_ms(DataMessage.model_validate_json(p).datetime) for p in payloads]
    await redis_client.zadd(key, {encode_snapshot(p): s for p, s in zip(payloads, scores, strict=True)})
    await redis_client.zadd(key, {b"\x01garbage": scores[-1] + 1})
    args = [sys.executable, "-m", "enerlink", "inspect", "snapshot", "METER001", "--last", "5"]
    done = await asyncio.to_thread(
        subprocess.run,
        args + (["--late"] if late else []),
        check=False,
        capture_output=True,
        timeout=60,
        env={**os.environ, **environ},
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 1  # the garbage member is reported, the others printed
    assert [line["score"] for line in lines] == [*scores[-4:], scores[-1] + 1]
    assert [line["message"] for line in lines[:4]] == [orjson.loads(p) for p in payloads[-4:]]
    assert lines[0]["at"] == orjson.loads(payloads[-4])["datetime"].replace("Z", ".000Z")
    assert {line["set"] for line in lines} == {"late" if late else "live"}
    assert "error" in lines[-1] and lines[0]["bytes"] < 300
