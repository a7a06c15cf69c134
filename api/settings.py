"""The API's settings, read once from ``ENERLINK_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from enerlink.archiver.storage import StorageSettings
from enerlink.completeness import CompletenessSettings
from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.settlement.settings import SettlementSettings


@dataclass(frozen=True, slots=True)
class Settings:
    common: CommonSettings
    storage: StorageSettings  # where archived months are read from (same as the archiver's)
    host: str
    port: int
    token: str | None  # bearer token required on every endpoint except /health when set
    max_points: int  # history requests covering more points than this get a 422
    ws_queue: int  # messages buffered per WebSocket client before it is dropped as too slow
    ws_ping_s: float  # keep-alive ping interval on idle WebSockets
    offline_after_s: float  # /meters: a meter without presence info is online if seen this recently
    query_timeout_s: float  # PostgreSQL statement_timeout of history and health queries
    ws_send_timeout_s: float  # a WebSocket send blocked this long (client not reading) drops the client
    settlement: SettlementSettings  # commands' ack timeout and settlement tolerances
    completeness: CompletenessSettings  # the threshold the completeness routes report against

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            common=CommonSettings.from_env(env),
            storage=StorageSettings.from_env(env),
            host=env.str("API_HOST", "127.0.0.1"),
            port=env.int("API_PORT", 8000),
            token=env.optional("API_TOKEN"),
            max_points=env.int("API_MAX_POINTS", 10_000),
            ws_queue=env.int("API_WS_QUEUE", 256),
            ws_ping_s=env.float("API_WS_PING_S", 20.0),
            offline_after_s=env.float("API_OFFLINE_AFTER_S", 120.0),
            query_timeout_s=env.float("API_QUERY_TIMEOUT_S", 10.0),
            ws_send_timeout_s=env.float("API_WS_SEND_TIMEOUT_S", 10.0),
            settlement=SettlementSettings.from_env(env),
            completeness=CompletenessSettings.from_env(env),
        )
        if settings.max_points < 1 or settings.ws_queue < 1 or settings.ws_ping_s <= 0:
            raise ConfigError("ENERLINK_API_MAX_POINTS, _WS_QUEUE and _WS_PING_S must be positive")
        if settings.query_timeout_s <= 0 or settings.ws_send_timeout_s <= 0:
            raise ConfigError("ENERLINK_API_QUERY_TIMEOUT_S and _WS_SEND_TIMEOUT_S must be positive")
        return settings
