"""Settings of ``enerlink edge`` (the simulated fleet; the hardware path adds its own)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.edge.readings_log import LogSettings

DataCallback = Callable[[dict[str, Any]], None]
WEATHER_SOURCES = ("offline", "open-meteo")


def parse_when(text: str) -> dt.datetime:
    """``2025-01-01`` or an ISO 8601 date-time; naive values are UTC."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an ISO 8601 date or date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Settings:
    common: CommonSettings
    meters: int = 3
    """Generated fleet size (``--meters``), ignored when ``fleet_file`` is set."""
    fleet_file: Path | None = None
    seed: int = 0
    scale: str = "home"
    """Generated meters' scale: home, lab or mixed (10 % lab)."""
    interval_s: float = 5.0
    status_interval_s: float = 30.0
    speed: float = 1.0
    """Simulated seconds per wall-clock second (real time = 1)."""
    start: dt.datetime | None = None
    """Backfill from here (``--from``); with ``end`` the run publishes history as fast as it can."""
    end: dt.datetime | None = None
    state_dir: Path = field(default_factory=lambda: Path(".run/state"))
    save_every_s: float = 60.0
    weather: str = "offline"
    weather_url: str = "https://api.open-meteo.com/v1/forecast"
    max_inflight: int = 20
    client_id: str = "enerlink-sim"
    metrics_port: int = 0
    publish_log: Path | None = None
    """Append ``meterId,datetime,seq`` per broker-acknowledged data message (end-to-end checks)."""
    max_steps: int | None = None
    """Stop after this many steps (``--steps``), once everything queued has been delivered."""
    console: bool = False
    """Print one line per data message (the ``make run`` console) from the simulator itself."""
    commands: bool = True
    """Answer commands on ``{prefix}/meters/{meterId}/cmd``."""
    on_data: DataCallback | None = None
    """Called with every data message dict published (the integrator's console, tests)."""
    progress: bool = True
    interactive: bool = False
    """Read scenario/settle/status commands from stdin while running (``--interactive``)."""
    idle: bool = False
    """A live fleet starts stopped (``--idle``) and waits for a start on the fleet command topic."""
    log: LogSettings = field(default_factory=LogSettings)
    """The delivery log (kept until confirmed) and re-sends (:mod:`enerlink.edge.delivery`)."""
    confirm_wait_s: float = 0.0
    """A bounded run (``--steps``) waits at its end up to this long for the pipeline to confirm every
    reading, re-sending meanwhile (0: it stops once the broker took everything)."""

    @classmethod
    def from_env(cls, env: Env) -> Self:
        start, end = env.optional("SIM_FROM"), env.optional("SIM_TO")
        weather = env.str("WEATHER", "offline")
        if weather not in WEATHER_SOURCES:
            raise ConfigError(f"ENERLINK_WEATHER={weather!r}: one of {WEATHER_SOURCES}")
        fleet = env.optional("SIM_FLEET")
        publish_log = env.optional("EDGE_PUBLISH_LOG")
        settings = cls(
            common=CommonSettings.from_env(env),
            meters=env.int("SIM_METERS", 3),
            fleet_file=Path(fleet) if fleet else None,
            seed=env.int("SIM_SEED", 0),
            scale=env.str("SIM_SCALE", "home"),
            interval_s=env.float("SIM_INTERVAL", 5.0),
            status_interval_s=env.float("SIM_STATUS_INTERVAL", 30.0),
            speed=env.float("SIM_SPEED", 1.0),
            start=parse_when(start) if start else None,
            end=parse_when(end) if end else None,
            state_dir=env.path("STATE_DIR", ".run/state"),
            save_every_s=env.float("SIM_SAVE_EVERY", 60.0),
            weather=weather,
            weather_url=env.str("WEATHER_URL", "https://api.open-meteo.com/v1/forecast"),
            max_inflight=env.int("EDGE_MAX_INFLIGHT", 20),
            client_id=env.str("SIM_CLIENT_ID", "enerlink-sim"),
            metrics_port=env.int("EDGE_METRICS_PORT", 0),
            publish_log=Path(publish_log).expanduser() if publish_log else None,
            log=LogSettings.from_env(env),
            confirm_wait_s=env.float("SIM_CONFIRM_WAIT_S", 0.0),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.meters < 1:
            raise ConfigError("meters must be >= 1")
        if self.interval_s <= 0 or self.status_interval_s <= 0 or self.speed <= 0:
            raise ConfigError("interval, status interval and speed must be > 0")
        if self.scale not in ("home", "lab", "mixed"):
            raise ConfigError(f"scale {self.scale!r}: one of home, lab, mixed")
        if (self.start is None) != (self.end is None) and self.end is not None:
            raise ConfigError("--to needs --from")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("--steps must be >= 1")
        if self.start and self.end and self.end <= self.start:
            raise ConfigError("--to must be after --from")
