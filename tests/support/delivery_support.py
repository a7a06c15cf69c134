"""Support for the edge's delivery tests: a fast simulated fleet run in the background, raw payload
collection, confirmations and resend requests as the pipeline sends them, and an independent read of
a meter's log file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from enerlink.config import CommonSettings, Env, MqttEndpoint
from enerlink.edge.service import run
from enerlink.edge.settings import Settings
from enerlink.mqtt import client as mqtt_client
from tests.support.sim_support import wait_for


def fast(env: Env, **changes: Any) -> Settings:
    """The simulated fleet's settings from ``env``, 20 times faster, without progress output."""
    base = Settings.from_env(env)
    return dataclasses.replace(base, **{"speed": 20.0, "interval_s": 5.0, "progress": False, **changes})


async def running(settings: Settings) -> tuple[asyncio.Task[None], Any]:
    """The fleet started in the background, once it has taken a step: its task and its runner."""
    ready: list[Any] = []
    task = asyncio.create_task(run(settings, on_ready=ready.append), name="fleet-under-test")
    await wait_for(lambda: bool(ready) and ready[0].steps >= 1, limit_s=30)
    return task, ready[0]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass
class Raw:
    """Every message received, as (topic, payload bytes), in arrival order."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload in self.messages if t == topic]

    def json(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(payload) for payload in self.on(topic)]

    def by_seq(self, topic: str, meter_id: str) -> dict[int, list[bytes]]:
        """Payloads on ``topic`` of one meter, grouped by ``seq``."""
        out: dict[int, list[bytes]] = {}
        for payload in self.on(topic):
            body = orjson.loads(payload)
            if body.get("meterId") == meter_id:
                out.setdefault(int(body["seq"]), []).append(payload)
        return out


@contextlib.asynccontextmanager
async def raw_client(
    endpoint: MqttEndpoint, topics: Iterable[str], *, name: str
) -> AsyncIterator[tuple[aiomqtt.Client, Raw]]:
    """A client subscribed (QoS 2) to ``topics`` before yielding, with the exact payload bytes of every
    message it receives."""
    out = Raw()
    async with mqtt_client(endpoint, identifier=f"{name}-{uuid.uuid4().hex[:8]}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=2)

        async def _reader() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                out.messages.append((str(message.topic), bytes(payload)))

        task = asyncio.create_task(_reader(), name=f"{name}-reader")
        try:
            yield client, out
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def collect_raw(common: CommonSettings, topics: Iterable[str]) -> AsyncIterator[Raw]:
    """Subscribe (QoS 2) before yielding; keep the exact payload bytes of every message."""
    async with raw_client(common.mqtt, topics, name="test-raw") as (_, out):
        yield out
        await asyncio.sleep(0.3)


async def send(
    common: CommonSettings, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
) -> None:
    async with aiomqtt.Client(common.mqtt.host, common.mqtt.port) as client:
        await client.publish(topic, payload, qos=qos, retain=retain)


def confirmation(
    meter_id: str, *, through: int, ranges: Iterable[tuple[int, int]] = (), at: dt.datetime | None = None
) -> bytes:
    moment = at or dt.datetime.now(dt.UTC)
    return orjson.dumps(
        {
            "meterId": meter_id,
            "through": through,
            "ranges": [list(r) for r in ranges],
            "at": moment.isoformat(),
        }
    )


def resend(ranges: Iterable[tuple[int, int]], request_id: str) -> bytes:
    return orjson.dumps({"cmd": "resend", "ranges": [list(r) for r in ranges], "id": request_id})


@dataclass(frozen=True)
class Row:
    payload: bytes
    confirmed: bool
    resends: int


def log_rows(path: Path) -> dict[tuple[str, int], Row]:
    """The log file's rows, read through a connection of our own (WAL allows it while the edge runs)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("select meter_id, seq, payload, confirmed_ms is not null, resends from readings")
        return {(str(m), int(s)): Row(bytes(p), bool(c), int(r)) for m, s, p, c, r in rows}
    finally:
        db.close()
