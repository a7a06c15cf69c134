"""The fleet's publish log (``ENERLINK_EDGE_PUBLISH_LOG``), the truth the chaos test checks against:
one line per data message the broker acknowledged, never one for a message it did not take."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from enerlink.config import Env, MqttEndpoint
from enerlink.edge.service import run
from enerlink.edge.settings import Settings
from tests.support.services import Broker
from tests.support.sim_support import collect


def _settings(env: Env, tmp_path: Path, **changes: Any) -> Settings:
    base = Settings.from_env(env)
    return dataclasses.replace(
        base,
        **{
            "meters": 3,
            "speed": 20.0,
            "interval_s": 5.0,
            "progress": False,
            "commands": False,
            "state_dir": tmp_path / "state",
            "publish_log": tmp_path / "published.csv",
            **changes,
        },
    )


def _lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split(",")) for line in path.read_text().splitlines()]  # type: ignore[misc]


async def test_every_acknowledged_data_message_is_logged_once_as_sent(env: Env, tmp_path: Path) -> None:
    settings = _settings(env, tmp_path, client_id=f"plog-{tmp_path.name}")
    topics = settings.common.topics
    async with collect(settings.common, [topics.data]) as got:
        await asyncio.wait_for(run(settings, max_steps=3), timeout=60)
    received = {(m["meterId"], m["datetime"], str(m["seq"])) for m in got.on(topics.data)}
    logged = _lines(tmp_path / "published.csv")
    assert len(logged) == 9 and len(set(logged)) == 9
    assert set(logged) == received
    assert sorted({seq for _, _, seq in logged}) == ["1", "2", "3"]


async def test_messages_spooled_while_the_broker_is_away_are_logged_when_acknowledged(
    env: Env, tmp_path: Path, own_broker: Broker
) -> None:
    settings = _settings(env, tmp_path, client_id=f"plog-off-{tmp_path.name}")
    common = dataclasses.replace(settings.common, mqtt=MqttEndpoint.parse(own_broker.url))
    settings = dataclasses.replace(settings, common=common)
    fleet = asyncio.create_task(run(settings, max_steps=3), name="fleet")
    try:
        # the fleet waits 10 s for a first connection, then spools its 3 steps to the outbox
        await asyncio.sleep(12.0)
        assert not fleet.done()
        assert _lines(tmp_path / "published.csv") == []  # nothing acknowledged: nothing logged
        own_broker.start()
        await asyncio.wait_for(fleet, timeout=120)  # replays the outbox, drains, exits
    finally:
        fleet.cancel()
    logged = _lines(tmp_path / "published.csv")
    assert len(logged) == 9 and len(set(logged)) == 9
    assert sorted(meter for meter, _, _ in logged) == ["METER001"] * 3 + ["METER002"] * 3 + ["METER003"] * 3
