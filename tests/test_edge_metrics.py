"""The edge publisher's Prometheus metrics: publish count and buffer depth, read at scrape time."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from enerlink.config import MqttEndpoint
from enerlink.edge.metrics import register_publisher
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publisher import Publisher
from tests.support.services import Broker, free_port


def _config(url: str, queue: Path) -> PublisherConfig:
    return PublisherConfig(
        endpoint=MqttEndpoint.parse(url),
        client_id=f"edge-{uuid.uuid4().hex[:8]}",
        queue_path=queue,
        backoff_initial_s=0.1,
        backoff_cap_s=0.5,
        replay_rate=500.0,
    )


async def test_published_messages_are_counted(broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with Publisher(config=_config(broker.url, tmp_path / "q.sqlite3")) as pub:
        register_publisher(registry, lambda: pub.stats)
        async with asyncio.timeout(10):
            await pub.wait_connected()
        for i in range(5):
            await pub.publish(f"{topic_prefix}/meters/data", f"m{i}".encode())
        async with asyncio.timeout(10):
            await pub.drain()
        assert registry.get_sample_value("enerlink_edge_published_total") == 5
        assert registry.get_sample_value("enerlink_edge_connected") == 1
        assert registry.get_sample_value("enerlink_edge_queue_depth") == 0


async def test_buffer_depth_while_the_broker_is_away(topic_prefix: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    nobody = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    async with Publisher(config=_config(nobody, tmp_path / "q.sqlite3")) as pub:
        register_publisher(registry, lambda: pub.stats)
        for i in range(3):
            await pub.publish(f"{topic_prefix}/meters/data", f"m{i}".encode())
        for _ in range(100):
            if registry.get_sample_value("enerlink_edge_queue_depth") == 3:
                break
            await asyncio.sleep(0.05)
        assert registry.get_sample_value("enerlink_edge_queue_depth") == 3
        assert registry.get_sample_value("enerlink_edge_connected") == 0
        assert registry.get_sample_value("enerlink_edge_published_total") == 0
        for _ in range(100):  # each refused attempt is counted as the publisher retries
            if (registry.get_sample_value("enerlink_edge_connect_attempts_total") or 0) >= 1:
                break
            await asyncio.sleep(0.05)
        assert (registry.get_sample_value("enerlink_edge_connect_attempts_total") or 0) >= 1
