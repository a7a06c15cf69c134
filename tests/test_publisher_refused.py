"""A message the broker refuses in its PUBREC is not "acknowledged": it stays queued and goes out later.

MQTT 5 lets a broker refuse a QoS 2 message with a failure reason code in PUBREC (Mosquitto: 0x87
not authorized, 0x97 quota exceeded). paho and aiomqtt ignore that code, so before
:mod:`enerlink.edge.acks` the edge logged such a message as delivered and deleted it. Here the production
broker configuration (ACL) refuses the meter's topic, then SIGHUP re-reads an ACL that allows it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from enerlink.config import MqttEndpoint
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publisher import Publisher
from enerlink.mqtt import client as mqtt_client
from tests.support.secured_broker import SERVICE_PASSWORDS, SecuredBroker

METER, PASSWORD = "METER001", "pw-meter-001"
DENIED = "enerlink/meters/not-yet-allowed"


@pytest.fixture
def secured() -> Iterator[SecuredBroker]:
    broker = SecuredBroker(root=Path(tempfile.mkdtemp(prefix="enerlink-refused-")), tls=False)
    broker.script("add-meter.sh", METER, PASSWORD)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)


def _allow(broker: SecuredBroker, topic: str) -> None:
    """Append a write grant for the meter to the broker's effective ACL and reload it."""
    acl = broker.auth_dir / "acl"
    acl.write_text(
        acl.read_text(encoding="utf-8") + f"\nuser {METER}\ntopic write {topic}\n", encoding="utf-8"
    )
    broker.reload()


async def _until(done: Callable[[], bool], *, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout_s} s")


async def test_refused_message_is_queued_not_acknowledged_then_delivered_once(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    acked: list[bytes] = []
    config = PublisherConfig(
        endpoint=MqttEndpoint.parse(f"mqtt://{METER}:{PASSWORD}@127.0.0.1:{secured.port}"),
        client_id=f"{METER}-{uuid.uuid4().hex[:6]}",
        queue_path=tmp_path / "queue.db",
        backoff_initial_s=0.2,
        backoff_cap_s=0.5,
        replay_rate=100.0,
    )
    operator = MqttEndpoint.parse(
        f"mqtt://enerlink-operator:{SERVICE_PASSWORDS['MQTT_OPERATOR_PASSWORD']}@127.0.0.1:{secured.port}"
    )
    async with mqtt_client(operator, identifier=f"op-{uuid.uuid4().hex[:6]}") as reader:
        await reader.subscribe("enerlink/#", qos=2)
        async with Publisher(config=config, on_acked=lambda _t, payload: acked.append(payload)) as pub:
            async with asyncio.timeout(10):
                await pub.wait_connected()
            for n in range(3):
                await pub.publish(DENIED, f"reading-{n}".encode())
            await _until(lambda: pub.stats.refused >= 3 and not pub.stats.inflight, timeout_s=10)
            stats = pub.stats
            assert acked == []  # refused is not delivered: nothing reported to the publish log
            assert stats.published == 0
            assert stats.queued == 3  # kept in the store-and-forward queue, not lost

            _allow(secured, DENIED)
            await _until(lambda: not pub.stats.queued and not pub.stats.inflight, timeout_s=20)
            assert sorted(acked) == [b"reading-0", b"reading-1", b"reading-2"]
            assert pub.stats.published == 3
            assert pub.stats.refused >= 3

        got: list[bytes] = []
        try:
            async with asyncio.timeout(2):
                async for message in reader.messages:
                    if message.topic.matches(DENIED):
                        got.append(bytes(message.payload))  # type: ignore[arg-type]
        except TimeoutError:
            pass
    assert sorted(got) == [b"reading-0", b"reading-1", b"reading-2"]  # each exactly once


async def test_aiomqtt_alone_reports_the_refused_message_as_published(secured: SecuredBroker) -> None:
    """Why :mod:`enerlink.edge.acks` exists: through aiomqtt the same refusal is a silent success."""
    endpoint = MqttEndpoint.parse(f"mqtt://{METER}:{PASSWORD}@127.0.0.1:{secured.port}")
    operator = MqttEndpoint.parse(
        f"mqtt://enerlink-operator:{SERVICE_PASSWORDS['MQTT_OPERATOR_PASSWORD']}@127.0.0.1:{secured.port}"
    )
    allowed = "enerlink/meters/data"
    async with mqtt_client(operator, identifier=f"op-{uuid.uuid4().hex[:6]}") as reader:
        await reader.subscribe("enerlink/meters/#", qos=2)
        async with mqtt_client(endpoint, identifier=f"plain-{uuid.uuid4().hex[:6]}") as client:
            async with asyncio.timeout(10):
                await client.publish(DENIED, b"refused", qos=2)  # no error: looks delivered
                await client.publish(allowed, b"taken", qos=2)
        got: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            async for message in reader.messages:
                got.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]
                if message.topic.matches(allowed):
                    break
    assert got == [(allowed, b"taken")]  # the subscriber works; the "published" one never arrived
