"""Helpers for the delivery tests: a meter's view of its confirm and command topics, its seq record."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
import orjson
import redis.asyncio as aioredis

from enerlink import mqtt
from enerlink.config import MqttEndpoint
from enerlink.ingest.seq_record import SeqRecord
from enerlink.schemas.wire import Keys
from tests.support.ingest_support import data_message


@dataclass
class Received:
    topic: str
    body: dict[str, Any]
    retain: bool
    at: float  # monotonic
    expiry: int | None


@dataclass
class Listener:
    """Every message on the subscribed filters, in arrival order."""

    client: aiomqtt.Client
    messages: list[Received] = field(default_factory=list)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(self, topic: str, count: int = 1, *, limit_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + limit_s
        while len(self.on(topic)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.on(topic))} of {count} messages on {topic}: {self.messages}")
            await asyncio.sleep(0.05)
        return self.on(topic)


@contextlib.asynccontextmanager
async def listening(url: str, filters: list[str]) -> AsyncIterator[Listener]:
    client = mqtt.client(MqttEndpoint.parse(url), identifier="")
    async with client:
        listener = Listener(client)
        for topic in filters:
            await client.subscribe(topic, qos=1)

        async def read() -> None:
            async for message in client.messages:
                props = message.properties
                expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
                payload = message.payload if isinstance(message.payload, bytes) else b""
                listener.messages.append(
                    Received(
                        topic=message.topic.value,
                        body=orjson.loads(payload),
                        retain=message.retain,
                        at=time.monotonic(),
                        expiry=expiry,
                    )
                )

        reader = asyncio.create_task(read(), name="listener")
        try:
            yield listener
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def retained(url: str, topic: str, *, limit_s: float = 2.0) -> dict[str, Any] | None:
    """The retained message on ``topic`` (a fresh subscription), or None."""
    async with listening(url, [topic]) as listener:
        deadline = time.monotonic() + limit_s
        while not listener.messages and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        found = [m for m in listener.messages if m.retain]
        return found[-1].body if found else None


async def holds(client: aioredis.Redis, keys: Keys, meter: str, count: int) -> bool:
    """Whether Redis holds at least ``count`` readings of ``meter``."""
    return int(await client.zcard(keys.timeseries(meter))) >= count


async def record(client: aioredis.Redis, keys: Keys, meter: str) -> SeqRecord | None:
    raw = await client.get(keys.seq_record(meter))
    return SeqRecord.parse(raw) if raw is not None else None


def readings(meter: str, seqs: list[int], *, start: datetime, step_s: float = 5.0) -> list[bytes]:
    """Data messages of ``meter`` with these seqs, each seq at ``start + seq * step_s``."""
    return [data_message(meter, at=start + timedelta(seconds=seq * step_s), seq=seq) for seq in seqs]
