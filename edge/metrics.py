"""Prometheus metrics of the edge's MQTT publisher: publish rate, buffer depth, connection state.

A collector reads :class:`~edge.publisher.PublisherStats` at scrape time, so the publish path pays
nothing for them. Both the simulated fleet and the hardware edge register it on their registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.publisher import PublisherStats


class PublisherCollector(Collector):
    def __init__(self, stats: Callable[[], PublisherStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        counters = {
            "published": ("messages acknowledged by the broker (QoS 2 complete)", stats.published),
            "spooled": ("messages sent to the store-and-forward queue while offline", stats.spooled),
            "replayed": ("queued messages sent after a reconnect", stats.replayed),
            "dropped": ("queued messages dropped by the size/age caps", stats.dropped),
            "refused": ("messages the broker refused (PUBREC/PUBACK reason), queued again", stats.refused),
            "connect_attempts": ("connection attempts refused or lost", stats.attempts),
        }
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(f"enerlink_edge_{name}", text, value=value)
        gauges = {
            "queue_depth": ("messages waiting in the store-and-forward queue", stats.queued),
            "inflight": ("QoS 2 messages in flight", stats.inflight),
            "window": ("QoS 2 in-flight window (broker Receive Maximum, capped)", stats.window),
            "connected": ("1 when connected to the broker", int(stats.connected)),
        }
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(f"enerlink_edge_{name}", text, value=value)


def register_publisher(registry: CollectorRegistry, stats: Callable[[], PublisherStats | None]) -> None:
    registry.register(PublisherCollector(stats))
