"""The archiver's settings, read once from ``ENERLINK_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from apscheduler.triggers.cron import CronTrigger

from enerlink.archiver.storage import StorageSettings
from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.schemas.wire import Tables

#: the rollup tables with a retention of their own, finest first
ROLLUP_TABLES = (Tables.TELEMETRY_5M_CLOSED, Tables.TELEMETRY_1H_FOLDED, Tables.TELEMETRY_1D_FOLDED)


@dataclass(frozen=True, slots=True)
class Settings:
    common: CommonSettings
    storage: StorageSettings
    retention_days: int  # a month is archived once its newest possible row is older than this
    cron: str  # when the nightly run starts, in ``common.timezone``
    metrics_port: int  # 0 = no Prometheus endpoint
    raw_interval_s: int = 600  # raw readings exported every this many seconds; 0 = no raw export
    raw_grace_s: int = 300  # an hour's raw readings are exported this long after it ends
    redis_retention_s: int = 7200  # the live window the ingest keeps (ENERLINK_RETENTION_S)
    raw_hold_s: int = 2 * 86_400  # how long past it the ingest keeps what the raw export lacks
    pack_after_days: int = 2  # a month's primary key is packed this long after the month ends
    #: the rollups' retention in days (None: kept for ever): 5-minute, hourly, daily rows
    rollup_retention_days: tuple[int | None, int | None, int | None] = (None, None, None)

    def retention_for(self, table: str) -> int | None:
        """Days a month of ``table`` stays in PostgreSQL after it ends (None: for ever)."""
        rollups = dict(zip(ROLLUP_TABLES, self.rollup_retention_days, strict=True))
        return rollups.get(table, self.retention_days)

    @classmethod
    def from_env(cls, env: Env) -> Self:
        common = CommonSettings.from_env(env)
        settings = cls(
            common=common,
            storage=StorageSettings.from_env(env),
            retention_days=env.int("ARCHIVE_RETENTION_DAYS", 365),
            cron=env.str("ARCHIVE_CRON", "0 2 * * *"),
            metrics_port=env.int("ARCHIVE_METRICS_PORT", 0),
            raw_interval_s=env.int("RAW_EXPORT_INTERVAL_S", 600),
            raw_grace_s=env.int("RAW_EXPORT_GRACE_S", 300),
            redis_retention_s=env.int("RETENTION_S", 7200),
            raw_hold_s=env.int("RAW_HOLD_S", 2 * 86_400),
            pack_after_days=env.int("ARCHIVE_PACK_AFTER_DAYS", 2),
            rollup_retention_days=(
                _days_or_forever(env, "ARCHIVE_RETENTION_5M_DAYS"),
                _days_or_forever(env, "ARCHIVE_RETENTION_1H_DAYS"),
                _days_or_forever(env, "ARCHIVE_RETENTION_1D_DAYS"),
            ),
        )
        if settings.raw_interval_s < 0 or settings.raw_grace_s < 0:
            raise ConfigError("ENERLINK_RAW_EXPORT_INTERVAL_S and ENERLINK_RAW_EXPORT_GRACE_S must be >= 0")
        if settings.retention_days < 0:
            raise ConfigError("ENERLINK_ARCHIVE_RETENTION_DAYS must be >= 0")
        if settings.pack_after_days < 0:
            raise ConfigError("ENERLINK_ARCHIVE_PACK_AFTER_DAYS must be >= 0")
        finer: tuple[str, int | None] = ("ARCHIVE_RETENTION_DAYS", settings.retention_days)
        names = ("ARCHIVE_RETENTION_5M_DAYS", "ARCHIVE_RETENTION_1H_DAYS", "ARCHIVE_RETENTION_1D_DAYS")
        for name, days in zip(names, settings.rollup_retention_days, strict=True):
            if days is not None and (finer[1] is None or days < finer[1]):
                raise ConfigError(
                    f"ENERLINK_{name}={days}: a coarser resolution is kept at least as long as a finer"
                    f" one (ENERLINK_{finer[0]}={'forever' if finer[1] is None else finer[1]})"
                )
            finer = (name, days)
        settings.trigger()  # fail at start-up on a bad cron expression or time zone
        return settings

    def trigger(self) -> CronTrigger:
        try:
            return CronTrigger.from_crontab(self.cron, timezone=self.common.timezone)
        except (ValueError, LookupError) as exc:
            raise ConfigError(
                f"ENERLINK_ARCHIVE_CRON={self.cron!r} / ENERLINK_TIMEZONE={self.common.timezone!r}: {exc}"
            ) from exc


def _days_or_forever(env: Env, name: str) -> int | None:
    """Days (an integer >= 0), or None for ``forever`` or unset."""
    value = env.str(name, "forever").strip().lower()
    if value == "forever":
        return None
    days = env.int(name, 0)
    if days < 0:
        raise ConfigError(f"ENERLINK_{name} must be >= 0 or forever")
    return days
