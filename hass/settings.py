"""The Home Assistant bridge's settings, read once from ``ENERLINK_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.schemas.wire import DEFAULT_DISCOVERY_PREFIX, HaDiscovery


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything :func:`enerlink.hass.service.run` needs; ``enabled`` is ``ENERLINK_HA_DISCOVERY`` (off by
    default: nothing is published under the discovery prefix)."""

    common: CommonSettings
    enabled: bool = False
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    client_id: str = "enerlink-hass"
    max_queued: int = 20_000
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            common=CommonSettings.from_env(env),
            enabled=env.bool("HA_DISCOVERY", False),
            discovery_prefix=env.str("HA_DISCOVERY_PREFIX", DEFAULT_DISCOVERY_PREFIX),
            client_id=env.str("HA_CLIENT_ID", "enerlink-hass"),
            metrics_port=env.int("HA_METRICS_PORT", 0),
            metrics_host=env.str("HA_METRICS_HOST", "127.0.0.1"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        prefix = self.discovery_prefix
        if any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigError(
                f"ENERLINK_HA_DISCOVERY_PREFIX={prefix!r}: a topic without '+', '#' or a leading or "
                "trailing '/'"
            )

    @property
    def discovery(self) -> HaDiscovery:
        return HaDiscovery(self.discovery_prefix)
