"""The ingest says, at start, whether Redis keeps what it confirms to the meters (which then delete
it): the shared Redis of the tests runs without an append-only file; a Redis of this test's own with
``appendonly yes`` and ``appendfsync always`` does keep it. Real Redis servers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from enerlink.ingest.delivery import Delivery
from enerlink.ingest.metrics import IngestMetrics
from tests.support.ingest_support import ingest_settings
from tests.support.services import free_port, wait_port


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    process = subprocess.Popen(
        [*args, "--appendonly", "yes", "--appendfsync", "always"], stdout=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _check(environ: dict[str, str], url: str) -> tuple[bool | None, float]:
    settings = ingest_settings({**environ, "ENERLINK_REDIS_URL": url})
    metrics = IngestMetrics()
    async with aioredis.Redis.from_url(url) as client:
        delivery = Delivery(settings=settings, client=client, metrics=metrics, mqtt=lambda: None)
        durable = await delivery.check_durability()
    return durable, metrics.redis_durable._value.get()


async def test_a_redis_without_an_append_only_file_is_reported(
    environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    durable, gauge = await _check(environ, environ["ENERLINK_REDIS_URL"])
    assert durable is False and gauge == 0
    assert "without its append-only file (appendonly no)" in caplog.text


async def test_a_durable_redis_is_reported_as_such(
    environ: dict[str, str], durable_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    durable, gauge = await _check(environ, durable_redis)
    assert durable is True and gauge == 1
    assert "append-only" not in caplog.text
