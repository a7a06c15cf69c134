"""Helpers for the simulator's tests: a real MQTT subscriber that collects what meters publish."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from enerlink.config import CommonSettings
from enerlink.mqtt import client as mqtt_client


@dataclass
class Collected:
    by_topic: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    retained: dict[str, dict[str, Any]] = field(default_factory=dict)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return self.by_topic.get(topic, [])


@contextlib.asynccontextmanager
async def collect(common: CommonSettings, topics: Iterable[str]) -> AsyncIterator[Collected]:
    """Subscribe (QoS 2) before yielding; collect JSON messages per topic in the background."""
    out = Collected()
    async with mqtt_client(common.mqtt, identifier=f"test-sub-{uuid.uuid4().hex[:8]}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=2)

        async def _reader() -> None:
            async for message in client.messages:
                body = json.loads(bytes(message.payload))
                out.by_topic.setdefault(str(message.topic), []).append(body)
                if message.retain:
                    out.retained[str(message.topic)] = body

        task = asyncio.create_task(_reader(), name="test-collector")
        try:
            yield out
            await asyncio.sleep(0.3)  # let the last QoS 2 flows land
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for(predicate: Any, *, limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 (polling what a background reader collects)
            await asyncio.sleep(0.05)


async def publish(common: CommonSettings, topic: str, payload: bytes, *, qos: int = 2) -> None:
    async with aiomqtt.Client(common.mqtt.host, common.mqtt.port) as client:
        await client.publish(topic, payload, qos=qos)
