"""Data messages of a household with solar, battery and grid, every 10 s, whose energy counters the
test knows exactly: each step moves integer mWh on every channel, the daily counters reset at local
midnight, and the battery's charge or discharge is fixed per 5-minute block (the energy balance
``solar + import = load + export + battery`` holds for every step)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from enerlink.aggregator.service import run as aggregate
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.config import Env
from enerlink.schemas.snapshot import encode_snapshots
from enerlink.schemas.wire import Keys
from tests.conftest import load_fixture

MIN_MS = 60_000
STEP_MS = 10_000
BLOCK_MS = 300_000
CHANNELS = ("import", "export", "solar_output", "load_home", "load_smart_mtr")
GRID = ("import", "export")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Household:
    """One meter's counters (mWh, integers) and every step's flows (mWh) by snapshot time."""

    meter_id: str
    timezone: str
    scale: int = 1
    dark_blocks: range = range(0)  # 5-minute block numbers (from ``start``) without sun
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 4_321_000))
    daily: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    steps: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (ms, mWh per flow)
    counters: list[tuple[int, dict[str, int], dict[str, int]]] = field(default_factory=list)

    def step(self, *, at_ms: int, block: int, k: int) -> dict[str, int]:
        """Flows of the step ending at ``at_ms`` (mWh), battery included (+ charging)."""
        dark = block in self.dark_blocks
        solar = 0 if dark else (20 + (k * 7 + block) % 11) * self.scale
        home = (8 + (k * 3 + block) % 5) * self.scale
        smart = 2 * self.scale
        battery = {0: 5, 1: -4, 2: 10 if dark else 3}[block % 3] * self.scale
        surplus = solar - home - smart - battery
        return {
            "solar_output": solar,
            "load_home": home,
            "load_smart_mtr": smart,
            "export": max(surplus, 0),
            "import": max(-surplus, 0),
            "battery": battery,
        }

    def message(self, at_ms: int, *, first: bool, block: int, k: int) -> bytes:
        zone = ZoneInfo(self.timezone)
        day = datetime.fromtimestamp(at_ms / 1000, zone).date()
        if self.counters and datetime.fromtimestamp(self.counters[-1][0] / 1000, zone).date() != day:
            self.daily = dict.fromkeys(CHANNELS, 0)  # local midnight: the device resets its daily counters
        if not first:
            flows = self.step(at_ms=at_ms, block=block, k=k)
            for name in CHANNELS:
                self.total[name] += flows[name]
                self.daily[name] += flows[name]
            self.steps.append((at_ms, flows))
        self.counters.append((at_ms, dict(self.total), dict(self.daily)))
        msg: dict[str, Any] = copy.deepcopy(load_fixture("meter-data.json"))
        msg["meterId"] = self.meter_id
        msg["datetime"] = _iso(at_ms)
        for name in CHANNELS:
            msg["data"][name]["total_energy"] = self.total[name] / 1000
            msg["data"][name]["daily_energy"] = self.daily[name] / 1000
            if name in GRID:
                msg["data"][name]["settlement_energy"] = (self.total[name] - 4_000_000) / 1000
        return json.dumps(msg).encode()

    def messages(self, *, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        """Snapshots every 10 s from ``start_ms`` (the baseline: no energy before it) to ``end_ms``."""
        out = []
        for k, at in enumerate(range(start_ms, end_ms, STEP_MS)):
            out.append((at, self.message(at, first=k == 0, block=(at - start_ms) // BLOCK_MS, k=k)))
        return out

    def flows_between(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """mWh of each flow in steps ending within [start_ms, end_ms); battery split per 5 minutes
        (a 5-minute block's steps all charge or all discharge)."""
        out = dict.fromkeys((*CHANNELS, "battery_charge", "battery_discharge"), 0)
        for at, flows in self.steps:
            if start_ms <= at < end_ms:
                for name in CHANNELS:
                    out[name] += flows[name]
                key = "battery_charge" if flows["battery"] > 0 else "battery_discharge"
                out[key] += abs(flows["battery"])
        return out


async def aggregate_homes(
    environ: dict[str, str], homes: list[Household], *, start_ms: int, end_ms: int, timezone: str
) -> None:
    """The homes' messages from ``start_ms`` to ``end_ms`` stored as the ingest stores a backfill
    (late data and one late flag per minute), then one run of the real aggregator."""
    extra = {
        "ENERLINK_TIMEZONE": timezone,
        "ENERLINK_AGGREGATOR_METRICS_PORT": "0",
        "ENERLINK_AGGREGATE_WORKERS": "1",
    }
    settings = AggregatorSettings.from_env(Env({**environ, **extra}))
    keys = settings.common.keys
    async with aioredis.Redis.from_url(settings.common.redis_url) as redis:
        for home in homes:
            points = home.messages(start_ms=start_ms, end_ms=end_ms)
            members = encode_snapshots([raw for _, raw in points])  # as the ingest stores them
            await redis.zadd(
                keys.late_data(home.meter_id), {m: at for (at, _), m in zip(points, members, strict=True)}
            )
            await redis.hset(keys.meters, home.meter_id, str(points[-1][0]))
            s, us = await redis.time()
            now = int(s) * 1000 + int(us) // 1000
            flags = {Keys.late_member(home.meter_id, at // MIN_MS * MIN_MS): now for at, _ in points}
            await redis.zadd(keys.late_minutes, flags)
    await aggregate(settings, once=True)
