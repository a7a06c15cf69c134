"""Settlement settings from ``ENERLINK_SETTLEMENT_*`` (and the command settings the settle round uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from enerlink import commands
from enerlink.config import ConfigError, Env


@dataclass(frozen=True, slots=True)
class SettlementSettings:
    commands: commands.CommandSettings
    tolerance_wh: float  # device vs pipeline difference allowed per channel, Wh ...
    tolerance_pct: float  # ... or this share of the period's energy when larger
    repair_deadline_s: float = 3600.0  # a period missing readings stays pending at most this long

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(
            commands=commands.CommandSettings.from_env(env),
            tolerance_wh=env.float("SETTLEMENT_TOLERANCE_WH", 10.0),
            tolerance_pct=env.float("SETTLEMENT_TOLERANCE_PCT", 1.0),
            repair_deadline_s=env.float("SETTLEMENT_REPAIR_DEADLINE_S", 3600.0),
        )
        if settings.tolerance_wh < 0 or settings.tolerance_pct < 0:
            raise ConfigError("ENERLINK_SETTLEMENT_TOLERANCE_WH and _PCT must not be negative")
        if settings.repair_deadline_s < 0:
            raise ConfigError("ENERLINK_SETTLEMENT_REPAIR_DEADLINE_S must not be negative")
        return settings
