"""Prometheus metrics of the aggregator, in a registry of its own (``enerlink up`` shares a process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.lag = Gauge(
            "enerlink_aggregator_lag_seconds",
            "Redis time minus the end of the last aggregated minute",
            registry=r,
        )
        self.minute_duration = Histogram(
            "enerlink_aggregator_minute_duration_seconds",
            "Time to aggregate one minute for the whole fleet (read, compute, write, rollups)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
            registry=r,
        )
        self.rows = Counter("enerlink_aggregator_rows_total", "Minute rows upserted", registry=r)
        self.bad = Counter(
            "enerlink_aggregator_bad_snapshots_total",
            "Snapshots that failed validation (skipped)",
            registry=r,
        )
        self.bad_status = Counter(
            "enerlink_aggregator_bad_status_total",
            "Stored status messages that could not be read (skipped by device health)",
            registry=r,
        )
        self.late = Counter(
            "enerlink_aggregator_late_minutes_total", "(meter, minute) pairs re-aggregated", registry=r
        )
        self.late_kept = Counter(
            "enerlink_aggregator_late_kept_total",
            "(meter, minute) pairs with late readings left as stored: older than the live window",
            registry=r,
        )
        self.events = Counter("enerlink_aggregator_events_total", "Events inserted", registry=r)
        self.failures = Counter("enerlink_aggregator_job_failures_total", "Jobs that failed", registry=r)
        self.shards_held = Gauge(
            "enerlink_aggregator_shards_held", "Shards this process holds a lease on", registry=r
        )
        # completeness of the last closed hour evaluated (aggregator/completeness.py), fleet-wide
        prefix = "enerlink_aggregator_completeness"
        last = "in the last closed hour evaluated, meters with seq"
        self.completeness_hour = Gauge(
            f"{prefix}_hour_timestamp_seconds", "Start of the last closed hour evaluated", registry=r
        )
        self.completeness_expected = Gauge(
            f"{prefix}_expected_readings", f"Readings expected {last}", registry=r
        )
        self.completeness_received = Gauge(
            f"{prefix}_received_readings", f"Readings received {last}", registry=r
        )
        self.completeness_repaired = Gauge(
            f"{prefix}_repaired_readings", f"Readings received by re-sending {last}", registry=r
        )
        self.completeness_missing = Gauge(
            f"{prefix}_missing_readings", f"Readings still missing {last}", registry=r
        )
        self.completeness_meters = Gauge(
            f"{prefix}_meters", "Meters with seq in the last closed hour", registry=r
        )
        self.completeness_below = Gauge(
            f"{prefix}_meters_below_threshold",
            "Meters below ENERLINK_COMPLETENESS_THRESHOLD in the last closed hour",
            registry=r,
        )
