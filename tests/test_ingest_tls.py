"""The worker over TLS, on the production broker configuration (accounts, ACLs, the TLS listener):
the socket reader handles an SSL socket (decrypted bytes buffered in the SSL object raise no readable
event) while resuming a backlog at a small cap."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import ingest_settings, running, wait_until
from tests.support.secured_broker import SERVICE_PASSWORDS, SecuredBroker
from tests.test_ingest_faults import _at_least, check_exactly_once, fleet, publish_all


@pytest.fixture
def tls_broker() -> Iterator[SecuredBroker]:
    broker = SecuredBroker(root=Path(tempfile.mkdtemp(prefix="enerlink-tls-")))
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)


async def test_worker_over_tls_resumes_a_backlog_within_the_cap(
    *,
    tls_broker: SecuredBroker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    keys, topics = Keys(key_prefix), Topics()  # the production prefix: the ACLs are written for it
    password = SERVICE_PASSWORDS["MQTT_INGEST_PASSWORD"]
    env = {
        **environ,
        "ENERLINK_MQTT_URL": f"mqtts://enerlink-ingest:{password}@127.0.0.1:{tls_broker.tls_port}",
        "ENERLINK_MQTT_CA_FILE": str(tls_broker.ca_file),
        "ENERLINK_TOPIC_PREFIX": topics.prefix,
    }
    settings = ingest_settings(env, client_id=f"tls-{uid}", max_held=200)
    async with running(settings):
        pass  # the session exists; the worker goes away
    messages = fleet(3000, meters=30)
    sim = f"mqtt://enerlink-sim:{SERVICE_PASSWORDS['MQTT_SIM_PASSWORD']}@127.0.0.1:{tls_broker.port}"
    await publish_all(sim, topics.data, messages)

    metrics = IngestMetrics()
    async with running(settings, metrics):
        await wait_until(lambda: _at_least(redis_client, keys, 30, 3000), limit_s=180, what="backlog")
        await asyncio.sleep(0.5)
    await check_exactly_once(redis_client, keys, messages, 30)
    assert metrics.reader_pauses._value.get() >= 1
    assert 0 < metrics.held_peak._value.get() <= 200
