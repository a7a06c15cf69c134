"""The Home Assistant bridge's Prometheus metrics, in a registry of its own (``enerlink up`` runs
several services in one process; each serves its own registry on its own port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

REASONS = ("invalid_data", "future", "invalid_meter_id", "bad_counter_state")


@dataclass
class HassMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter("enerlink_hass_received", "MQTT messages received", ["kind"], registry=r)
        self.rejected = Counter(
            "enerlink_hass_rejected", "messages skipped as invalid, by reason", ["reason"], registry=r
        )
        self.stale = Counter(
            "enerlink_hass_stale", "data messages not newer than the meter's last one (no state)", registry=r
        )
        self.states = Counter("enerlink_hass_states", "Home Assistant state messages published", registry=r)
        self.configs = Counter("enerlink_hass_configs", "discovery configs published", registry=r)
        self.redis_failures = Counter(
            "enerlink_hass_redis_failures", "failed counter-state reads or writes (retried)", registry=r
        )
        self.connected = Gauge("enerlink_hass_mqtt_connected", "1 while connected to the broker", registry=r)
        for reason in REASONS:
            self.rejected.labels(reason=reason)
        for kind in ("data", "presence", "birth"):
            self.received.labels(kind=kind)
