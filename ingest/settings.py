"""The ingest worker's settings, read once from ``ENERLINK_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from enerlink.config import CommonSettings, ConfigError, Env

LATE_MARGIN_MS = 600_000  # ten aggregator runs: see Settings.late_margin_ms


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything :func:`enerlink.ingest.service.run` needs.

    ``client_id`` must be stable per worker (the broker keeps its persistent session under it) and
    unique among connected clients. Empty (the default): :func:`enerlink.ingest.service.run` claims
    ``enerlink-ingest-<host>-<n>`` with a lock file in ``state_dir`` (:mod:`enerlink.identity`).
    """

    common: CommonSettings
    client_id: str = ""
    state_dir: Path = Path(".run/ingest")
    share_group: str = "ingest"  # "" = plain subscription (one worker)
    retention_s: int = 7200
    max_payload: int = 262_144
    batch: int = 500
    receive_maximum: int = 1000
    max_held: int = 2000
    max_held_bytes: int = 16 * 1024 * 1024
    meter_rate: int = 20
    session_expiry_s: int = 7 * 24 * 3600
    max_future_s: int = 86_400
    rejected_maxlen: int = 10_000
    events_maxlen: int = 100_000
    publish_live: bool = True
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # 0 = no seq records, confirmations or gap repair. 30 s: a meter reporting every 5 s gets one
    # confirmation per 6 readings (each costs the pipeline about as much CPU as a reading), and a reading
    # waits at most about two intervals (60 s) for it, inside the edge's re-send after 120 s
    confirm_interval_s: float = 30.0
    gap_grace_s: float = 10.0
    resend_concurrency: int = 50
    resend_backoff_s: float = 30.0
    resend_backoff_max_s: float = 1800.0
    seq_record_ttl_s: int = 8 * 86_400
    # while the raw export runs (the archiver), live readings it does not hold yet are kept this long past
    # the window: an archiver outage up to it loses no raw reading, and Redis stays bounded beyond it
    raw_hold_s: int = 2 * 86_400
    # replicas that must hold a part's writes before its confirmations go out (Redis' WAIT): a failover
    # then promotes a replica that holds every reading confirmed to a meter. -1: 1 on a Redis Cluster,
    # 0 on one server
    confirm_replicas: int = -1
    confirm_replicas_wait_ms: int = 2000

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            common=CommonSettings.from_env(env),
            client_id=env.str("INGEST_CLIENT_ID", ""),
            state_dir=env.path("INGEST_STATE_DIR", ".run/ingest"),
            share_group=_share_group(env),
            retention_s=env.int("RETENTION_S", 7200),
            raw_hold_s=env.int("RAW_HOLD_S", 2 * 86_400),
            max_payload=env.int("INGEST_MAX_PAYLOAD", 262_144),
            batch=env.int("INGEST_BATCH", 500),
            receive_maximum=env.int("INGEST_RECEIVE_MAXIMUM", 1000),
            max_held=env.int("INGEST_MAX_HELD", 2000),
            max_held_bytes=env.int("INGEST_MAX_HELD_BYTES", 16 * 1024 * 1024),
            meter_rate=env.int("INGEST_METER_RATE", 20),
            session_expiry_s=env.int("INGEST_SESSION_EXPIRY_S", 7 * 24 * 3600),
            max_future_s=env.int("INGEST_MAX_FUTURE_S", 86_400),
            rejected_maxlen=env.int("INGEST_REJECTED_MAXLEN", 10_000),
            events_maxlen=env.int("INGEST_EVENTS_MAXLEN", 100_000),
            publish_live=env.bool("INGEST_PUBLISH_LIVE", True),
            metrics_port=env.int("INGEST_METRICS_PORT", 0),
            metrics_host=env.str("INGEST_METRICS_HOST", "127.0.0.1"),
            confirm_interval_s=env.float("INGEST_CONFIRM_INTERVAL_S", 30.0),
            gap_grace_s=env.float("INGEST_GAP_GRACE_S", 10.0),
            resend_concurrency=env.int("INGEST_RESEND_CONCURRENCY", 50),
            resend_backoff_s=env.float("INGEST_RESEND_BACKOFF_S", 30.0),
            resend_backoff_max_s=env.float("INGEST_RESEND_BACKOFF_MAX_S", 1800.0),
            seq_record_ttl_s=env.int("INGEST_SEQ_RECORD_TTL_S", 8 * 86_400),
            confirm_replicas=env.int("INGEST_CONFIRM_REPLICAS", -1),
            confirm_replicas_wait_ms=env.int("INGEST_CONFIRM_REPLICAS_WAIT_MS", 2000),
        )
        settings.check()
        return settings

    @property
    def replicas(self) -> int:
        """Replicas that must acknowledge a part's writes before its confirmations are published."""
        if self.confirm_replicas >= 0:
            return self.confirm_replicas
        return 1 if self.common.keys.parts else 0

    def check(self) -> None:
        if not 1 <= self.batch <= 10_000:
            raise ConfigError(f"ENERLINK_INGEST_BATCH={self.batch}: must be 1..10000")
        if not 1 <= self.receive_maximum <= 65_535:
            raise ConfigError(f"ENERLINK_INGEST_RECEIVE_MAXIMUM={self.receive_maximum}: must be 1..65535")
        if self.max_held < 1:
            raise ConfigError(f"ENERLINK_INGEST_MAX_HELD={self.max_held}: must be at least 1")
        if self.max_held_bytes < self.max_payload:
            raise ConfigError(
                f"ENERLINK_INGEST_MAX_HELD_BYTES={self.max_held_bytes}: must be at least "
                f"ENERLINK_INGEST_MAX_PAYLOAD ({self.max_payload})"
            )
        if self.meter_rate < 0:
            raise ConfigError(f"ENERLINK_INGEST_METER_RATE={self.meter_rate}: must be 0 (off) or more")
        if self.raw_hold_s < 0:
            raise ConfigError(f"ENERLINK_RAW_HOLD_S={self.raw_hold_s}: must not be negative")
        if self.retention_s < 60:
            raise ConfigError(f"ENERLINK_RETENTION_S={self.retention_s}: must be at least 60")
        if self.max_payload < 1024:
            raise ConfigError(f"ENERLINK_INGEST_MAX_PAYLOAD={self.max_payload}: must be at least 1024")
        if not 0 <= self.confirm_interval_s <= 3600:
            raise ConfigError(
                f"ENERLINK_INGEST_CONFIRM_INTERVAL_S={self.confirm_interval_s}: must be 0 (off)..3600"
            )
        if self.gap_grace_s < 0:
            raise ConfigError(f"ENERLINK_INGEST_GAP_GRACE_S={self.gap_grace_s}: must be 0 or more")
        if self.resend_concurrency < 1:
            raise ConfigError(
                f"ENERLINK_INGEST_RESEND_CONCURRENCY={self.resend_concurrency}: must be at least 1"
            )
        if not 0 < self.resend_backoff_s <= self.resend_backoff_max_s:
            raise ConfigError(
                "ENERLINK_INGEST_RESEND_BACKOFF_S must be above 0 and at most "
                "ENERLINK_INGEST_RESEND_BACKOFF_MAX_S"
            )
        if self.seq_record_ttl_s < 60:
            raise ConfigError(
                f"ENERLINK_INGEST_SEQ_RECORD_TTL_S={self.seq_record_ttl_s}: must be at least 60"
            )
        if self.confirm_replicas < -1 or self.confirm_replicas_wait_ms < 1:
            raise ConfigError(
                "ENERLINK_INGEST_CONFIRM_REPLICAS must be -1 (the layout's default) or more, and"
                " ENERLINK_INGEST_CONFIRM_REPLICAS_WAIT_MS at least 1"
            )
        if any(c in self.share_group for c in "/+#"):
            raise ConfigError(f"ENERLINK_INGEST_SHARE_GROUP={self.share_group!r}: no '/', '+' or '#'")

    @property
    def retention_ms(self) -> int:
        return self.retention_s * 1000

    @property
    def late_margin_ms(self) -> int:
        """A reading of a closed minute this close to the window's start is stored as late data (kept
        until the aggregator has handled it) instead of in the live series, which the next writes
        trim at the window, maybe before the aggregator read it: ten minutes, the whole of a shorter
        window."""
        return min(LATE_MARGIN_MS, self.retention_ms)


def _share_group(env: Env) -> str:
    """``ENERLINK_INGEST_SHARE_GROUP``: default ``ingest``; set but empty (or ``none``) = no sharing."""
    if env.raw("INGEST_SHARE_GROUP") is None:
        return "" if env.is_set("INGEST_SHARE_GROUP") else "ingest"
    group = env.str("INGEST_SHARE_GROUP", "ingest")
    return "" if group.lower() == "none" else group
