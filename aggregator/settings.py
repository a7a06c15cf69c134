"""The aggregator's settings, read once from ``ENERLINK_*``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Self

from enerlink.completeness import CompletenessSettings
from enerlink.config import CommonSettings, ConfigError, Env


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """When device-health events are raised; see aggregator/health.py."""

    weak_rssi_dbm: float = -75.0  # RSSI below this ...
    weak_rssi_s: int = 600  # ... in every status message for this long: weak_signal
    low_heap_bytes: int = 51_200  # free heap below this (50 KB): low_memory
    reboots: int = 3  # this many reboots (uptime going back) ...
    reboot_window_s: int = 3600  # ... within this window: repeated_reboots
    status_interval_s: int = 60  # the meters' status interval ...
    silent_intervals: int = 3  # ... no status for this many intervals: meter_silent

    @property
    def silent_ms(self) -> int:
        return self.status_interval_s * self.silent_intervals * 1000


@dataclass(frozen=True, slots=True)
class Settings:
    common: CommonSettings
    grace_s: float = 10.0  # a minute is closed this long after it ends
    retention_s: int = 7200  # Redis live window (shared with the ingest): catch-up reaches this far
    late_hold_s: int = 600  # late data of a re-aggregated minute is deleted this long after
    workers: int = 1  # worker processes that read, validate and compute (aggregator/memory.py)
    renew_jobs: int = 10  # the worker processes are replaced by fresh ones every this many jobs
    metrics_port: int = 0  # Prometheus port; 0 = off (the default, like the other services)
    thermal_warn_c: float = 45.0
    thermal_crit_c: float = 60.0
    health: HealthThresholds = HealthThresholds()
    completeness: CompletenessSettings = field(default_factory=CompletenessSettings)
    completeness_delay_s: float = 300.0  # a closed hour's completeness is evaluated this long after it
    shards: int = 1  # the fleet cut into this many shards, leased to the aggregator processes (leases.py)
    lease_s: float = 30.0  # a shard whose process stops renewing is taken over after this long
    name: str = ""  # this process among the aggregators ("": host, pid and a random suffix)

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            common=CommonSettings.from_env(env),
            grace_s=env.float("AGGREGATE_GRACE_S", 10.0),
            retention_s=env.int("RETENTION_S", 7200),
            late_hold_s=env.int("AGGREGATE_LATE_HOLD_S", 600),
            workers=env.int("AGGREGATE_WORKERS", min(os.cpu_count() or 1, 4)),
            renew_jobs=env.int("AGGREGATE_RENEW_JOBS", 10),
            metrics_port=env.int("AGGREGATOR_METRICS_PORT", 0),
            thermal_warn_c=env.float("AGGREGATE_THERMAL_WARN_C", 45.0),
            thermal_crit_c=env.float("AGGREGATE_THERMAL_CRIT_C", 60.0),
            health=HealthThresholds(
                weak_rssi_dbm=env.float("HEALTH_WEAK_RSSI_DBM", -75.0),
                weak_rssi_s=env.int("HEALTH_WEAK_RSSI_S", 600),
                low_heap_bytes=env.int("HEALTH_LOW_HEAP_BYTES", 51_200),
                reboots=env.int("HEALTH_REBOOTS", 3),
                reboot_window_s=env.int("HEALTH_REBOOT_WINDOW_S", 3600),
                status_interval_s=env.int("HEALTH_STATUS_INTERVAL_S", 60),
                silent_intervals=env.int("HEALTH_SILENT_INTERVALS", 3),
            ),
            completeness=CompletenessSettings.from_env(env),
            completeness_delay_s=env.float("COMPLETENESS_EVAL_DELAY_S", 300.0),
            shards=env.int("AGGREGATE_SHARDS", 1),
            lease_s=env.float("AGGREGATE_LEASE_S", 30.0),
            name=env.str("AGGREGATE_NAME", ""),
        )
        if not 1 <= settings.shards <= 1024:
            raise ConfigError(f"ENERLINK_AGGREGATE_SHARDS={settings.shards}: must be within 1..1024")
        if settings.lease_s < 3:
            raise ConfigError(f"ENERLINK_AGGREGATE_LEASE_S={settings.lease_s}: must be at least 3")
        if not 0 <= settings.grace_s < 60:
            raise ConfigError(f"ENERLINK_AGGREGATE_GRACE_S={settings.grace_s}: must be within 0..59")
        if settings.retention_s < 60:
            raise ConfigError(f"ENERLINK_RETENTION_S={settings.retention_s}: must be at least 60")
        if settings.workers < 1:
            raise ConfigError(f"ENERLINK_AGGREGATE_WORKERS={settings.workers}: must be at least 1")
        if settings.renew_jobs < 0:
            raise ConfigError(
                f"ENERLINK_AGGREGATE_RENEW_JOBS={settings.renew_jobs}: must be >= 0 (0 = never)"
            )
        if settings.thermal_crit_c < settings.thermal_warn_c:
            raise ConfigError(
                "ENERLINK_AGGREGATE_THERMAL_CRIT_C must be >= ENERLINK_AGGREGATE_THERMAL_WARN_C"
            )
        if settings.completeness_delay_s < 0:
            raise ConfigError("ENERLINK_COMPLETENESS_EVAL_DELAY_S must not be negative")
        h = settings.health
        if h.reboots < 1 or h.reboot_window_s < 1 or h.weak_rssi_s < 0:
            raise ConfigError(
                "ENERLINK_HEALTH_REBOOTS and ENERLINK_HEALTH_REBOOT_WINDOW_S must be >= 1,"
                " ENERLINK_HEALTH_WEAK_RSSI_S >= 0"
            )
        if h.status_interval_s < 1 or h.silent_intervals < 1:
            raise ConfigError(
                "ENERLINK_HEALTH_STATUS_INTERVAL_S and ENERLINK_HEALTH_SILENT_INTERVALS must be >= 1"
            )
        return settings
