"""Shared fixtures: every test talks to real Mosquitto, Redis and PostgreSQL, each with data of
its own (topic prefix, key prefix, schema), and to moto's S3 server through the real minio client."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from enerlink.config import Env
from tests.support.services import FIXTURES, Broker, free_port

TEST_DATABASE_URL = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("ENERLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One Mosquitto for the session, from the project's configuration; tests isolate by topic prefix."""
    instance = Broker().start()
    yield instance
    instance.stop()


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A Mosquitto for this test alone (for tests that restart or reconfigure it)."""
    instance = Broker()
    yield instance
    instance.stop()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_prefix(uid: str) -> str:
    return f"t{uid}/enerlink"


@pytest.fixture
def key_prefix(uid: str) -> Iterator[str]:
    prefix = f"t{uid}:telemetry"
    yield prefix
    client = redis.Redis.from_url(TEST_REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def redis_client(key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def pg_schema(uid: str) -> Iterator[str]:
    """A PostgreSQL schema of this test's own; yields a database URL whose search_path is it."""
    schema = f"t_{uid}"
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    sep = "&" if "?" in TEST_DATABASE_URL else "?"
    yield f"{TEST_DATABASE_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'drop schema "{schema}" cascade')


@pytest.fixture
def database_url(pg_schema: str) -> str:
    return pg_schema


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on loopback; yields its ``host:port`` endpoint for the minio client."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_environ(environ: dict[str, str], s3_server: str) -> dict[str, str]:
    """``environ`` plus a bucket of this test's own on moto's S3 server (MinIO's API)."""
    return {
        **environ,
        "ENERLINK_MINIO_ENDPOINT": s3_server,
        "ENERLINK_MINIO_ACCESS_KEY": "testing",
        "ENERLINK_MINIO_SECRET_KEY": "testing",
        "ENERLINK_MINIO_BUCKET": f"archive-{uuid.uuid4().hex[:10]}",
        "ENERLINK_ARCHIVE_PART_SIZE_MB": "5",
    }


@pytest.fixture
def environ(
    broker: Broker, topic_prefix: str, key_prefix: str, database_url: str, tmp_path: Path
) -> dict[str, str]:
    """ENERLINK_* variables pointing this test at its own slice of every service."""
    return {
        "ENERLINK_MQTT_URL": broker.url,
        "ENERLINK_REDIS_URL": TEST_REDIS_URL,
        "ENERLINK_DATABASE_URL": database_url,
        "ENERLINK_TOPIC_PREFIX": topic_prefix,
        "ENERLINK_KEY_PREFIX": key_prefix,
        "ENERLINK_ARCHIVE_DIR": str(tmp_path / "archive"),
        "ENERLINK_STATE_DIR": str(tmp_path / "state"),
        "ENERLINK_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def env(environ: dict[str, str]) -> Env:
    return Env(environ)


def load_fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / name).read_bytes())
    return result


@pytest.fixture
def data_fixture_bytes() -> bytes:
    return (FIXTURES / "meter-data.json").read_bytes()


@pytest.fixture
def status_fixture_bytes() -> bytes:
    return (FIXTURES / "meter-status.json").read_bytes()
