"""Prometheus metrics of the edge's MQTT publisher: publish rate, buffer depth, connection state.

A collector reads :class:`~enerlink.edge.publish_config.PublisherStats` at scrape time, so the publish path
pays
nothing for them. Both the simulated fleet and the hardware edge register it on their registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enerlink.edge.publish_config import PublisherStats
from enerlink.edge.readings_log import LogStats

Figures = dict[str, tuple[str, float]]


def _families(prefix: str, *, counters: Figures, gauges: Figures) -> Iterator[Metric]:
    """One counter or gauge family per ``name -> (help text, value)``, named ``{prefix}_{name}``."""
    for name, (text, value) in counters.items():
        yield CounterMetricFamily(f"{prefix}_{name}", text, value=value)
    for name, (text, value) in gauges.items():
        yield GaugeMetricFamily(f"{prefix}_{name}", text, value=value)


class PublisherCollector(Collector):
    def __init__(self, stats: Callable[[], PublisherStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        counters: Figures = {
            "published": ("messages acknowledged by the broker (QoS 2 complete)", stats.published),
            "spooled": ("messages sent to the store-and-forward queue while offline", stats.spooled),
            "replayed": ("queued messages sent after a reconnect", stats.replayed),
            "dropped": ("queued messages dropped by the size/age caps", stats.dropped),
            "refused": ("messages the broker refused (PUBREC/PUBACK reason), queued again", stats.refused),
            "connect_attempts": ("connection attempts refused or lost", stats.attempts),
        }
        gauges: Figures = {
            "queue_depth": ("messages waiting in the store-and-forward queue", stats.queued),
            "inflight": ("QoS 2 messages in flight", stats.inflight),
            "window": ("QoS 2 in-flight window (broker Receive Maximum, capped)", stats.window),
            "connected": ("1 when connected to the broker", int(stats.connected)),
        }
        yield from _families("enerlink_edge", counters=counters, gauges=gauges)


def register_publisher(registry: CollectorRegistry, stats: Callable[[], PublisherStats | None]) -> None:
    registry.register(PublisherCollector(stats))


class LogCollector(Collector):
    """The delivery log's counters (:class:`enerlink.edge.readings_log.LogStats`), read at scrape time."""

    def __init__(self, stats: Callable[[], LogStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        counters: Figures = {
            "logged": ("data messages written to the delivery log before publishing", stats.logged),
            "confirmed": ("logged readings the pipeline confirmed it stored", stats.confirmed),
            "not_held": ("readings asked for in resend requests that the log does not hold", stats.not_held),
            "pruned": ("rows pruned from the delivery log (keep window and caps)", stats.pruned),
            "dropped_unconfirmed": (
                "UNCONFIRMED readings pruned because the log was full (lost unless stored)",
                stats.dropped_unconfirmed,
            ),
            "errors": ("re-send rounds or prunes that failed", stats.errors),
        }
        resent = CounterMetricFamily(
            "enerlink_edge_log_resent", "readings republished on the resent topic", labels=["reason"]
        )
        resent.add_metric(["request"], stats.resent_request)
        resent.add_metric(["timer"], stats.resent_timer)
        yield resent
        invalid = CounterMetricFamily(
            "enerlink_edge_log_invalid_confirmations",
            "confirmations ignored (malformed, foreign) or partly ignored (stale)",
            labels=["kind"],
        )
        for kind in ("malformed", "foreign", "stale"):
            invalid.add_metric([kind], stats.invalid_confirmations.get(kind, 0))
        yield invalid
        requests = CounterMetricFamily(
            "enerlink_edge_resend_requests", "resend requests by outcome", labels=["outcome"]
        )
        for outcome in ("ok", "invalid", "oversized", "busy", "failed"):
            requests.add_metric([outcome], stats.resend_requests.get(outcome, 0))
        yield requests
        gauges: Figures = {
            "unconfirmed": ("logged readings not yet confirmed", stats.unconfirmed),
            "rows": ("rows in the delivery log", stats.rows),
            "bytes": ("payload bytes in the delivery log", stats.bytes),
        }
        yield from _families("enerlink_edge_log", counters=counters, gauges=gauges)


def register_log(registry: CollectorRegistry, stats: Callable[[], LogStats | None]) -> None:
    registry.register(LogCollector(stats))
