"""The aggregator's settings, read once from ``ENERLINK_*``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Self

from enerlink.config import CommonSettings, ConfigError, Env


@dataclass(frozen=True, slots=True)
class Settings:
    common: CommonSettings
    grace_s: float = 10.0  # a minute is closed this long after it ends
    retention_s: int = 7200  # Redis live window (shared with the ingest): catch-up reaches this far
    late_hold_s: int = 600  # late data of a re-aggregated minute is deleted this long after
    workers: int = 1  # processes for validation/statistics of large batches (1 = in-process)
    metrics_port: int = 0  # Prometheus port; 0 = off (the default, like the other services)
    thermal_warn_c: float = 45.0
    thermal_crit_c: float = 60.0

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            common=CommonSettings.from_env(env),
            grace_s=env.float("AGGREGATE_GRACE_S", 10.0),
            retention_s=env.int("RETENTION_S", 7200),
            late_hold_s=env.int("AGGREGATE_LATE_HOLD_S", 600),
            workers=env.int("AGGREGATE_WORKERS", min(os.cpu_count() or 1, 4)),
            metrics_port=env.int("AGGREGATOR_METRICS_PORT", 0),
            thermal_warn_c=env.float("AGGREGATE_THERMAL_WARN_C", 45.0),
            thermal_crit_c=env.float("AGGREGATE_THERMAL_CRIT_C", 60.0),
        )
        if not 0 <= settings.grace_s < 60:
            raise ConfigError(f"ENERLINK_AGGREGATE_GRACE_S={settings.grace_s}: must be within 0..59")
        if settings.retention_s < 60:
            raise ConfigError(f"ENERLINK_RETENTION_S={settings.retention_s}: must be at least 60")
        if settings.workers < 1:
            raise ConfigError(f"ENERLINK_AGGREGATE_WORKERS={settings.workers}: must be at least 1")
        if settings.thermal_crit_c < settings.thermal_warn_c:
            raise ConfigError(
                "ENERLINK_AGGREGATE_THERMAL_CRIT_C must be >= ENERLINK_AGGREGATE_THERMAL_WARN_C"
            )
        return settings
