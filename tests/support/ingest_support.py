"""Helpers for the ingest tests: settings, an in-process worker, publishing, waiting on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import redis.asyncio as aioredis

from enerlink import mqtt
from enerlink.config import Env, MqttEndpoint
from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.service import run
from enerlink.ingest.settings import Settings
from tests.conftest import load_fixture


def ingest_settings(environ: dict[str, str], **overrides: Any) -> Settings:
    """The worker's settings for ``environ``, with a client id of this call's own unless one is given:
    the default id (``enerlink-ingest-<host>-1`` in every test's own state dir) would share one broker
    session, and its subscriptions, among tests running at once."""
    settings = Settings.from_env(Env(environ))
    if not settings.client_id and "client_id" not in overrides:
        overrides["client_id"] = f"test-ingest-{uuid.uuid4().hex[:12]}"
    return replace(settings, **overrides)


@contextlib.asynccontextmanager
async def running(settings: Settings, metrics: IngestMetrics | None = None) -> AsyncIterator[None]:
    """The worker running in this event loop for the duration of the block (cancelled after)."""
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        worker = run(settings, ready=ready, metrics=metrics)
        task = group.create_task(worker, name=f"ingest-{settings.client_id}")
        try:
            await asyncio.wait_for(ready.wait(), 30)
            yield
        finally:
            task.cancel()


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, limit_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds (the timeout only guards against a hung test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settle(
    redis_client: aioredis.Redis, keys: Iterable[str], *, quiet_s: float = 0.6, limit_s: float = 30.0
) -> None:
    """Wait until the given hashes/sets/streams stop changing for ``quiet_s`` (nothing more will come)."""

    async def snapshot() -> list[int]:
        pipe = redis_client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        types = await pipe.execute()
        pipe = redis_client.pipeline(transaction=False)
        for key, raw in zip(keys, types, strict=True):
            kind = raw.decode() if isinstance(raw, bytes) else raw
            {"hash": pipe.hlen, "zset": pipe.zcard, "stream": pipe.xlen}.get(kind, pipe.exists)(key)
        return [int(x) for x in await pipe.execute()]

    keys = list(keys)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    last = await snapshot()
    stable_since = loop.time()
    while loop.time() - stable_since < quiet_s:
        if loop.time() > deadline:
            raise AssertionError("Redis never settled")
        await asyncio.sleep(0.1)
        now = await snapshot()
        if now != last:
            last, stable_since = now, loop.time()


@contextlib.asynccontextmanager
async def publisher(url: str, *, client_id: str = "", window: int = 50) -> AsyncIterator[Publisher]:
    client = mqtt.client(MqttEndpoint.parse(url), identifier=client_id)
    async with client:
        yield Publisher(client, window=window)


class Publisher:
    """QoS 2 publishing with a bounded in-flight window (below the broker's max_inflight_messages)."""

    def __init__(self, client: aiomqtt.Client, *, window: int) -> None:
        self.client = client
        self._window = asyncio.Semaphore(window)

    async def one(self, topic: str, payload: bytes | str, *, qos: int = 2, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=qos, retain=retain)

    async def many(self, items: Iterable[tuple[str, bytes]], *, qos: int = 2) -> int:
        count = 0

        async def _send(topic: str, payload: bytes) -> None:
            try:
                await self.client.publish(topic, payload, qos=qos)
            finally:
                self._window.release()

        async with asyncio.TaskGroup() as group:
            for topic, payload in items:
                await self._window.acquire()
                group.create_task(_send(topic, payload))
                count += 1
        return count


def data_message(
    meter_id: str = "METER001",
    *,
    at: datetime | None = None,
    seq: int | None = None,
    **changes: Any,
) -> bytes:
    """The data fixture with another meter id, datetime (default now) and optional seq."""
    body = load_fixture("meter-data.json")
    body["meterId"] = meter_id
    body["datetime"] = iso(at or datetime.now(UTC))
    if seq is not None:
        body["seq"] = seq
    body.update(changes)
    return json.dumps(body, separators=(",", ":")).encode()


def status_message(meter_id: str = "METER001", *, at: datetime | None = None) -> bytes:
    body = load_fixture("meter-status.json")
    body["meterId"] = meter_id
    body["datetime"] = iso(at or datetime.now(UTC))
    return json.dumps(body, separators=(",", ":")).encode()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ago(**kwargs: float) -> datetime:
    return datetime.now(UTC) - timedelta(**kwargs)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
