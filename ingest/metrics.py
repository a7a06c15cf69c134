"""The ingest's Prometheus metrics, in a registry of its own (``enerlink up`` runs several services
in one process; each serves its own registry on its own port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from enerlink.ingest.validate import REASONS

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter("enerlink_ingest_received", "MQTT messages received", ["kind"], registry=r)
        self.stored = Counter(
            "enerlink_ingest_stored", "messages newly stored in Redis", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "enerlink_ingest_duplicates",
            "messages already stored (redelivered or re-sent), absorbed by the idempotent write",
            registry=r,
        )
        self.redeliveries = Counter(
            "enerlink_ingest_redeliveries", "messages the broker marked as redelivered (DUP)", registry=r
        )
        self.late = Counter(
            "enerlink_ingest_late_data",
            "data messages older than the live window or near its start (late_data set)",
            registry=r,
        )
        self.late_minutes = Counter(
            "enerlink_ingest_late_minutes",
            "data messages that flagged an ended minute for re-aggregation",
            registry=r,
        )
        self.rejected = Counter(
            "enerlink_ingest_rejected", "messages rejected, by reason", ["reason"], registry=r
        )
        self.presence_changes = Counter(
            "enerlink_ingest_presence_changes", "online/offline transitions recorded", ["state"], registry=r
        )
        self.write_seconds = Histogram(
            "enerlink_ingest_redis_write_seconds",
            "Redis write latency per batch",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "enerlink_ingest_batch_size", "messages per Redis write", registry=r, buckets=_BATCH_BUCKETS
        )
        self.write_failures = Counter(
            "enerlink_ingest_redis_write_failures", "failed Redis batch writes (retried)", registry=r
        )
        self.connected = Gauge(
            "enerlink_ingest_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.redis_durable = Gauge(
            "enerlink_ingest_redis_durable",
            "1 when Redis keeps confirmed readings through a restart and a power cut (appendonly yes,"
            " appendfsync always), 0 when it does not (checked at start with confirmations on)",
            registry=r,
        )
        self.gap_missed = Counter(
            "enerlink_ingest_seq_missed", "sequence numbers skipped (messages missed), all meters", registry=r
        )
        self.gap_duplicates = Counter(
            "enerlink_ingest_seq_duplicates", "sequence numbers seen again, all meters", registry=r
        )
        self.held = Gauge(
            "enerlink_ingest_held_messages",
            "messages received and not yet acknowledged (buffered or being written)",
            registry=r,
        )
        self.held_bytes = Gauge(
            "enerlink_ingest_held_bytes", "payload bytes of the messages held", registry=r
        )
        self.held_peak = Gauge(
            "enerlink_ingest_held_messages_peak",
            "most messages held at once since start (bounded by ENERLINK_INGEST_MAX_HELD)",
            registry=r,
        )
        self.held_bytes_peak = Gauge(
            "enerlink_ingest_held_bytes_peak", "most payload bytes held at once since start", registry=r
        )
        self.reader_pauses = Gauge(
            "enerlink_ingest_reader_pauses",
            "times the MQTT reader stopped at the held cap (TCP flow control) since start",
            registry=r,
        )
        self.confirmations = Counter(
            "enerlink_ingest_confirmations", "confirmations published to meters (retained, QoS 1)", registry=r
        )
        self.resend_requests = Counter(
            "enerlink_ingest_resend_requests", "resend requests published to meters", registry=r
        )
        self.resend_requested_readings = Counter(
            "enerlink_ingest_resend_requested_readings", "readings asked for by resend requests", registry=r
        )
        self.repaired = Counter(
            "enerlink_ingest_repaired_readings",
            "data messages newly stored from the resent topic (repaired gaps)",
            registry=r,
        )
        self.not_held = Counter(
            "enerlink_ingest_not_held_readings",
            "readings a meter said it does not hold (lost; never asked for again)",
            registry=r,
        )
        self.given_up = Counter(
            "enerlink_ingest_given_up_readings",
            "readings given up by the seq record's size bound (oldest holes; lost)",
            registry=r,
        )
        self.record_resets = Counter(
            "enerlink_ingest_seq_record_resets",
            "seq records restarted (the meter restarted its seq)",
            registry=r,
        )
        self.resend_acks = Counter(
            "enerlink_ingest_resend_acks",
            "meters' answers to resend requests, by outcome (ok, refused = ok:false, malformed)",
            ["outcome"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "enerlink_ingest_delivery_failures",
            "confirmation/resend rounds or publishes that failed (retried later), by stage",
            ["stage"],
            registry=r,
        )
        self.resend_outstanding = Gauge(
            "enerlink_ingest_resend_outstanding",
            "meters with a resend request outstanding from this worker (ENERLINK_INGEST_RESEND_CONCURRENCY)",
            registry=r,
        )
        for outcome in ("ok", "refused", "malformed"):
            self.resend_acks.labels(outcome=outcome)
        for reason in REASONS:
            self.rejected.labels(reason=reason)
        for kind in ("data", "status", "presence"):
            self.received.labels(kind=kind)
            self.stored.labels(kind=kind)
