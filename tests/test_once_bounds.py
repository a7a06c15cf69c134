"""``--once`` is a bounded run: under steady traffic it stops at its time limit instead of waiting for a
quiet second that never comes, and without a broker it gives up by then with an error (exit 1).
Real Mosquitto and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from enerlink.hass import service as hass_service
from enerlink.ingest import service as ingest_service
from enerlink.runtime import OnceLimitError
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import ago, data_message, ingest_settings, publisher
from tests.support.services import Broker, ServiceProcess, free_port
from tests.test_ha_discovery import hass_settings


@contextlib.asynccontextmanager
async def _steady_traffic(broker: Broker, topic: str) -> AsyncIterator[None]:
    """A data message every 0.2 s for the duration of the block."""

    async def _send() -> None:
        async with publisher(broker.url) as pub:
            for i in range(10_000):
                await pub.one(topic, data_message(f"STEADY{i % 5}", at=ago(seconds=1)))
                await asyncio.sleep(0.2)

    task = asyncio.create_task(_send(), name="steady-traffic")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ingest_once_ends_under_steady_traffic(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    settings = ingest_settings(environ, client_id=f"once-{uid}")
    async with _steady_traffic(broker, Topics(topic_prefix).data):
        started = time.monotonic()
        await ingest_service.run(settings, once=True, idle_s=1.0, once_limit_s=2.0)
        took = time.monotonic() - started
    assert took < 10
    assert await redis_client.hlen(Keys(key_prefix).latest_data) >= 1  # it did store what came


async def test_ingest_once_without_a_broker_gives_up(environ: dict[str, str], uid: str) -> None:
    nowhere = {**environ, "ENERLINK_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}
    settings = ingest_settings(nowhere, client_id=f"once-{uid}")
    started = time.monotonic()
    with pytest.raises(ExceptionGroup) as raised:  # from the worker's task group
        await ingest_service.run(settings, once=True, once_limit_s=2.0)
    assert raised.group_contains(OnceLimitError, match="no broker")
    assert time.monotonic() - started < 15


async def test_hass_once_ends_under_steady_traffic_and_gives_up_without_a_broker(
    broker: Broker, environ: dict[str, str], topic_prefix: str, uid: str
) -> None:
    settings = hass_settings(environ, uid)
    async with _steady_traffic(broker, Topics(topic_prefix).data):
        started = time.monotonic()
        await hass_service.run(settings, once=True, idle_s=1.0, once_limit_s=2.0)
        assert time.monotonic() - started < 10
    nowhere = hass_settings({**environ, "ENERLINK_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}, uid)
    with pytest.raises(OnceLimitError, match="no broker"):
        await hass_service.run(nowhere, once=True, once_limit_s=2.0)


def test_api_once_starts_everything_then_stops(environ: dict[str, str]) -> None:
    api = ServiceProcess(
        ["api", "--once", "--host", "127.0.0.1", "--port", str(free_port())], env=environ
    ).start()
    assert api.process is not None
    code = api.process.wait(timeout=60)
    output = api.output()
    assert code == 0, output
    assert "api: ready" in output and "Traceback" not in output, output


async def test_up_once_is_one_pass_through_the_pipeline(
    environ: dict[str, str], key_prefix: str, redis_client: aioredis.Redis
) -> None:
    up = ServiceProcess(["up", "--once", "--meters", "2", "--no-console"], env=environ).start()
    assert up.process is not None
    code = await asyncio.to_thread(up.process.wait, 120)
    output = up.output()
    assert code == 0, output
    assert "up: one pass done" in output and "Traceback" not in output, output
    assert await redis_client.hlen(Keys(key_prefix).latest_data) == 2  # each meter's step stored
