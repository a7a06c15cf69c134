"""Commands to a fleet and fleet-wide settlement against the broker's own round trip, same run.

A responder (one MQTT client subscribed to every meter's command topic, acking each command like the
simulator, QoS 1) stands in for N meters. Then, under a fresh topic/key prefix and PostgreSQL schema:

* ceiling: one raw aiomqtt client subscribes to the ack wildcard, publishes the command to N meters
  (QoS 2) and waits for N acks: the broker + responder round trip, nothing else;
* send: :func:`enerlink.commands.send` to the same N meters (what ``POST /commands`` does for
  ``scenario``/``clear``/``status_now``);
* settle: :func:`enerlink.settlement.settling.settle_many` for the N meters (what ``POST /commands`` with
  ``settle`` does): claim N rows, one command round, record N acks and N command events.

Prints each time, meters per second and the ratio to the ceiling.

    .venv/bin/python bench/commands.py                 # 200 meters
    .venv/bin/python bench/commands.py --meters 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink import commands  # noqa: E402
from enerlink.config import CommonSettings, Env  # noqa: E402
from enerlink.db import migrate  # noqa: E402
from enerlink.edge.sim import commands as sim_commands  # noqa: E402
from enerlink.mqtt import client as mqtt_client  # noqa: E402
from enerlink.schemas.commands import parse_command  # noqa: E402
from enerlink.settlement import settling  # noqa: E402
from enerlink.settlement.settings import SettlementSettings  # noqa: E402

BASE_URL = os.environ.get("ENERLINK_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.asynccontextmanager
async def responder(common: CommonSettings) -> AsyncIterator[None]:
    async with mqtt_client(common.mqtt, identifier=f"bench-meters-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(common.topics.command("+"), qos=2)

        async def _serve() -> None:
            async for message in client.messages:
                meter = str(message.topic).split("/")[-2]
                command = parse_command(bytes(message.payload))
                result = (
                    {"settled_import_wh": 1.0, "settled_export_wh": 0.5} if command.cmd == "settle" else {}
                )
                reply = sim_commands.ack(meter, epoch_s=time.time(), command=command, result=result)
                await client.publish(common.topics.command_ack(meter), reply, qos=1)

        task = asyncio.create_task(_serve(), name="bench-responder")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def ceiling(common: CommonSettings, meters: list[str]) -> float:
    started = time.perf_counter()
    async with mqtt_client(common.mqtt, identifier=f"bench-raw-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(common.topics.command_ack("+"), qos=1)
        payload = json.dumps({"cmd": "status_now", "id": "raw"}).encode()
        for meter in meters:
            await client.publish(common.topics.command(meter), payload, qos=2)
        seen: set[str] = set()
        async for message in client.messages:
            seen.add(str(message.topic))
            if len(seen) == len(meters):
                break
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=200)
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    schema = f"bench_cmd_{uid}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    url = f"{BASE_URL}?options=-csearch_path%3D{schema}"
    env = Env({**os.environ, "ENERLINK_TOPIC_PREFIX": f"bench{uid}", "ENERLINK_KEY_PREFIX": f"bench{uid}"})
    common = CommonSettings.from_env(env)
    common = CommonSettings(**{**{f: getattr(common, f) for f in common.__slots__}, "database_url": url})
    settings = SettlementSettings.from_env(env)
    meters = [f"B{i:05d}" for i in range(args.meters)]
    await migrate(url)

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            yield conn

    try:
        async with aioredis.Redis.from_url(common.redis_url) as redis, responder(common):
            await redis.hset(common.keys.meters, mapping={m: "0" for m in meters})
            raw_s = await ceiling(common, meters)
            started = time.perf_counter()
            answers = await commands.send(
                common.mqtt, common.topics, meters, {"cmd": "status_now"}, timeout_s=120
            )
            send_s = time.perf_counter() - started
            assert all(a.outcome == "ok" for a in answers.values())
            started = time.perf_counter()
            results = await settling.settle_many(
                connect=connect, redis=redis, common=common, settings=settings, meters=meters, timeout_s=60
            )
            settle_s = time.perf_counter() - started
            assert all(r.settlement is not None and r.settlement.status == "pending" for r in results)
            await redis.delete(common.keys.meters)
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')
    n = len(meters)
    print(f"meters: {n}")
    print(f"ceiling (raw MQTT round trip): {raw_s:8.3f} s  {n / raw_s:8.0f} meters/s")
    for name, took in (("commands.send", send_s), ("settle, one round", settle_s)):
        print(f"{name + ':':31s}{took:8.3f} s  {n / took:8.0f} meters/s  ratio {took / raw_s:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
