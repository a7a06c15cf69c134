"""Reading ``ENERLINK_*`` environment variables once, and the settings every service shares.

Each service has its own frozen ``Settings`` (``<service>/settings.py``) built once at start-up
from an :class:`Env`; nothing else in the code base reads ``os.environ``.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from enerlink.redis_client import RedisUrlError, check_url, is_cluster_url
from enerlink.schemas.wire import DEFAULT_KEY_PREFIX, DEFAULT_TOPIC_PREFIX, Keys, Topics

PREFIX = "ENERLINK_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


class Env:
    """Typed access to ``ENERLINK_*`` variables (names given without the prefix)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)

    def raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def is_set(self, name: str) -> bool:
        """True when the variable is present, even if empty (``X=`` can mean "turn off")."""
        return PREFIX + name in self._environ

    def str(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: builtins.str) -> builtins.str | None:
        return self.raw(name)

    def int(self, name: builtins.str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}{name}={value!r} is not an integer") from exc

    def float(self, name: builtins.str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}{name}={value!r} is not a number") from exc

    def bool(self, name: builtins.str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{PREFIX}{name}={value!r} is not a boolean (use true/false)")

    def path(self, name: builtins.str, default: builtins.str) -> Path:
        return Path(self.str(name, default)).expanduser()


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """A broker address parsed once from ``mqtt://user:pass@host:port`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: str | None = None) -> Self:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ConfigError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    def __repr__(self) -> str:  # never log the password
        user = f"{self.username}:***@" if self.username else ""
        return f"MqttEndpoint({'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port})"


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every service shares: where the services are and which names it uses."""

    mqtt: MqttEndpoint
    redis_url: str
    database_url: str
    topics: Topics
    keys: Keys
    timezone: str
    log_level: str
    log_format: str

    @classmethod
    def from_env(cls, env: Env) -> Self:
        redis_url = env.str("REDIS_URL", "redis://127.0.0.1:6379/0")
        try:
            check_url(redis_url)
        except RedisUrlError as exc:
            raise ConfigError(f"{PREFIX}REDIS_URL: {exc}") from exc
        return cls(
            mqtt=MqttEndpoint.parse(
                env.str("MQTT_URL", "mqtt://127.0.0.1:1883"), ca_file=env.optional("MQTT_CA_FILE")
            ),
            redis_url=redis_url,
            database_url=env.str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/enerlink"),
            topics=Topics(env.str("TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)),
            keys=_keys(env, cluster=is_cluster_url(redis_url)),
            timezone=env.str("TIMEZONE", "UTC"),
            log_level=env.str("LOG_LEVEL", "INFO").upper(),
            log_format=env.str("LOG_FORMAT", "text"),
        )


DEFAULT_REDIS_PARTS = 16


def _keys(env: Env, *, cluster: bool) -> Keys:
    """The key names: plain on one Redis server; on a Redis Cluster cut into ``ENERLINK_REDIS_PARTS``
    hash-tagged parts (fixed for the life of the data: a change leaves the old parts' keys unread)."""
    prefix = env.str("KEY_PREFIX", DEFAULT_KEY_PREFIX)
    if not cluster:
        return Keys(prefix)
    parts = env.int("REDIS_PARTS", DEFAULT_REDIS_PARTS)
    if not 1 <= parts <= 16384:
        raise ConfigError(f"{PREFIX}REDIS_PARTS={parts}: must be 1..16384")
    try:
        return Keys(prefix, parts=parts)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}KEY_PREFIX: {exc}") from exc
