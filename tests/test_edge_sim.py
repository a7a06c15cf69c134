"""The simulated edge on a real broker: what a fleet publishes, and that it validates."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
from typing import Any

from edge.service import run
from edge.settings import Settings
from enerlink.config import Env
from schemas.telemetry import DATA_UNITS, STATUS_UNITS, DataMessage, StatusMessage
from tests.support.sim_support import collect

CHANNELS = ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output")


def fast(env: Env, **changes: Any) -> Settings:
    base = Settings.from_env(env)
    return dataclasses.replace(base, **{"speed": 20.0, "interval_s": 5.0, "progress": False, **changes})


def assert_consistent(message: dict[str, Any]) -> None:
    data = message["data"]
    for name in CHANNELS:
        section = data[name]
        assert math.isclose(
            section["power"], section["voltage"] * section["current"], rel_tol=1e-4, abs_tol=0.01
        )
    ns, ng = data["net_solar"], data["net_grid"]
    assert ns["solar_power"] == data["solar_output"]["power"]
    assert math.isclose(
        ns["load_power"], data["load_smart_mtr"]["power"] + data["load_home"]["power"], abs_tol=0.01
    )
    assert math.isclose(ns["net_power"], ns["solar_power"] - ns["load_power"], abs_tol=0.01)
    assert math.isclose(ng["net_power"], ng["export_power"] - ng["import_power"], abs_tol=0.01)
    assert math.isclose(ng["net_daily"], ng["export_daily"] - ng["import_daily"], abs_tol=1e-4)
    assert math.isclose(ns["net_total"], ns["solar_total"] - ns["load_total"], abs_tol=1e-4)
    assert 0 <= data["battery"]["soc"] <= 100


async def test_fleet_publishes_valid_self_consistent_data_and_status(env: Env) -> None:
    settings = fast(env, meters=3)
    topics = settings.common.topics
    async with collect(settings.common, [topics.data, topics.status, topics.all_presence]) as got:
        await asyncio.wait_for(run(settings, max_steps=4), timeout=60)
    data = got.on(topics.data)
    assert len(data) == 12
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for message in data:
        parsed = DataMessage.model_validate_json(json.dumps(message))
        assert parsed.units == DATA_UNITS
        assert_consistent(message)
        by_meter.setdefault(message["meterId"], []).append(message)
    assert sorted(by_meter) == ["METER001", "METER002", "METER003"]
    for messages in by_meter.values():
        assert [m["seq"] for m in messages] == [1, 2, 3, 4]
        for before, after in itertools.pairwise(messages):
            for name in CHANNELS:
                assert after["data"][name]["total_energy"] >= before["data"][name]["total_energy"]
    statuses = got.on(topics.status)
    assert {s["meterId"] for s in statuses} == {"METER001", "METER002", "METER003"}
    for status in statuses:
        assert StatusMessage.model_validate_json(json.dumps(status)).units == STATUS_UNITS
        assert status["data"]["mqtt"]["qos"] == 2
    presence = {
        topic.split("/")[-2]: [m["online"] for m in got.on(topic)]
        for topic in got.by_topic
        if topic.endswith("/presence")
    }
    assert presence == {m: [True, False] for m in ("METER001", "METER002", "METER003")}


async def test_on_data_callback_sees_every_published_message(env: Env) -> None:
    seen: list[dict[str, Any]] = []
    settings = fast(env, meters=2, on_data=seen.append)
    await asyncio.wait_for(run(settings, max_steps=2), timeout=60)
    assert [m["meterId"] for m in seen] == ["METER001", "METER002"] * 2


async def test_cli_runs_until_sigterm_and_exits_cleanly(environ: dict[str, str], env: Env) -> None:
    from tests.support.services import ServiceProcess

    topics = Settings.from_env(env).common.topics
    async with collect(Settings.from_env(env).common, [topics.data, topics.all_presence]) as got:
        proc = ServiceProcess(
            args=["edge", "--simulate", "--meters", "2", "--interval", "1"], env=environ
        ).start()
        try:
            from tests.support.sim_support import wait_for

            await wait_for(lambda: len(got.on(topics.data)) >= 4, limit_s=30)
        finally:
            code = proc.terminate()
        await asyncio.sleep(0.5)
    assert code == 0, proc.output()
    assert all(DataMessage.model_validate_json(json.dumps(m)) for m in got.on(topics.data))
    assert got.on(topics.presence("METER001"))[-1] == {"online": False}
