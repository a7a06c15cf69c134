"""The simulated edge on a real broker: what a fleet publishes, and that it validates."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
from typing import Any

from enerlink.config import Env
from enerlink.edge.service import run
from enerlink.edge.settings import Settings
from enerlink.schemas.telemetry import DATA_UNITS, STATUS_UNITS, DataMessage, StatusMessage
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


async def _running(settings: Settings, **kwargs: Any) -> tuple[asyncio.Task[None], list[Any]]:
    """Start the fleet in the background; returns the task and a list holding its runner when ready."""
    ready: list[Any] = []
    task = asyncio.create_task(run(settings, on_ready=ready.append, **kwargs), name="fleet-under-test")
    from tests.support.sim_support import wait_for

    await wait_for(lambda: bool(ready) and ready[0].steps >= 1, limit_s=30)
    return task, ready


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_commands_round_trip_and_scenarios_show_in_messages(env: Env) -> None:
    from tests.support.sim_support import publish, wait_for

    settings = fast(env, meters=2, speed=10.0, status_interval_s=3600.0)
    common, topics = settings.common, settings.common.topics
    acks_topic = topics.command_ack("+")
    async with collect(common, [topics.data, topics.status, acks_topic]) as got:
        task, ready = await _running(settings)
        try:
            acks = lambda: [m for t, ms in got.by_topic.items() if t.endswith("/cmd/ack") for m in ms]  # noqa: E731
            await publish(
                common,
                topics.command("METER001"),
                b'{"cmd": "scenario", "name": "grid_outage", "duration_s": 3600, "id": "c1"}',
            )
            await publish(
                common,
                topics.command("METER002"),
                b'{"cmd": "scenario", "name": "sensor_failure", "sensor": "Load Home"}',
            )
            await publish(common, topics.command("METER002"), b'{"cmd": "explode"}')
            await publish(common, topics.command("METER002"), b"not json at all")
            await publish(common, topics.command("METER002"), b'{"cmd": "scenario", "name": "meteor"}')
            await wait_for(lambda: len(acks()) >= 5)
            marker = ready[0].published
            await wait_for(lambda: ready[0].published >= marker + 4)
            await publish(common, topics.command("METER002"), b'{"cmd": "status_now"}')
            await publish(common, topics.command("METER001"), b'{"cmd": "settle"}')
            await wait_for(lambda: len(acks()) >= 7 and len(got.on(topics.status)) >= 3)
            marker = ready[0].published
            await wait_for(lambda: ready[0].published >= marker + 4)
        finally:
            await _stop(task)
    by_id = {(a["meterId"], a.get("id")): a for a in acks()}
    assert by_id[("METER001", "c1")]["ok"] is True
    assert by_id[("METER001", "c1")]["result"]["scenario"] == "grid_outage"
    outcomes = [(a["meterId"], a["cmd"], a["ok"]) for a in acks()]
    assert ("METER002", "scenario", True) in outcomes
    assert ("METER002", None, False) in outcomes  # unknown cmd and bad JSON: error acks
    assert sum(1 for a in acks() if not a["ok"]) == 3
    assert next(a for a in acks() if a["cmd"] == "settle")["ok"]
    data = got.on(topics.data)
    late = data[-4:]
    outage = [m for m in late if m["meterId"] == "METER001"]
    assert outage and all(
        m["data"]["import"]["power"] == 0 and m["data"]["export"]["power"] == 0 for m in outage
    )
    assert all(m["data"]["import"]["voltage"] == 0 for m in outage)
    failed = [m for m in late if m["meterId"] == "METER002"]
    assert failed and all(m["data"]["load_home"]["connected"] is False for m in failed)
    assert all(
        m["data"]["load_home"]["valid"] is False and m["data"]["load_home"]["power"] == 0 for m in failed
    )
    assert all(m["data"]["export"]["settlement_energy"] <= m["data"]["export"]["total_energy"] for m in data)
    now_status = [s for s in got.on(topics.status) if s["meterId"] == "METER002"][-1]
    ina = {s["name"]: s["connected"] for s in now_status["data"]["sensors"]["ina219"]}
    assert ina["Load Home"] is False and now_status["data"]["sensors"]["ina219_count"] == 5
    assert now_status["data"]["system"]["status"] == "warning"


async def test_state_survives_a_restart(env: Env) -> None:
    settings = fast(env, meters=2)
    first: list[dict[str, Any]] = []
    await asyncio.wait_for(run(dataclasses.replace(settings, on_data=first.append), max_steps=3), timeout=60)
    second: list[dict[str, Any]] = []
    await asyncio.wait_for(run(dataclasses.replace(settings, on_data=second.append), max_steps=2), timeout=60)
    last_before = {m["meterId"]: m for m in first[-2:]}
    first_after = {m["meterId"]: m for m in second[:2]}
    for meter, before in last_before.items():
        after = first_after[meter]
        assert after["seq"] == before["seq"] + 1 == 4
        for name in CHANNELS:
            assert after["data"][name]["total_energy"] >= before["data"][name]["total_energy"]
        assert abs(after["data"]["battery"]["soc"] - before["data"]["battery"]["soc"]) < 1.0


async def test_backfill_publishes_history_with_past_timestamps(env: Env) -> None:
    from enerlink.edge.settings import parse_when

    settings = fast(
        env,
        meters=2,
        interval_s=3600.0,
        status_interval_s=6 * 3600.0,
        start=parse_when("2025-01-01"),
        end=parse_when("2025-01-02"),
    )
    topics = settings.common.topics
    async with collect(settings.common, [topics.data, topics.status]) as got:
        await asyncio.wait_for(run(settings), timeout=120)
    data = got.on(topics.data)
    stamps = sorted({m["datetime"] for m in data})
    assert len(data) == 2 * 25
    assert stamps[0] == "2025-01-01T00:00:00Z" and stamps[-1] == "2025-01-02T00:00:00Z"
    assert len(got.on(topics.status)) == 2 * 5
    per_meter = [m["seq"] for m in data if m["meterId"] == "METER001"]
    assert per_meter == list(range(1, 26))


async def test_emulated_hardware_runs_on_the_simulators_physics(environ: dict[str, str], env: Env) -> None:
    from tests.support.services import ServiceProcess
    from tests.support.sim_support import wait_for

    common = Settings.from_env(env).common
    async with collect(common, [common.topics.data]) as got:
        proc = ServiceProcess(
            args=["edge", "--emulate-hardware", "--meter-id", "LAB7", "--interval", "1"], env=environ
        ).start()
        try:
            await wait_for(lambda: len(got.on(common.topics.data)) >= 2, limit_s=30)
        finally:
            code = proc.terminate()
    assert code == 0, proc.output()
    for message in got.on(common.topics.data):
        parsed = DataMessage.model_validate_json(json.dumps(message))
        assert parsed.meterId == "LAB7"
        assert 2.5 < parsed.data.battery.voltage < 4.3  # the simulated lab cell, read through the MAX17048
        assert 8.5 < parsed.data.load_smart_mtr.voltage < 9.5


async def test_fleet_file_and_scenario_cli(environ: dict[str, str], env: Env, tmp_path: Any) -> None:
    from tests.support.services import ServiceProcess

    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        'seed = 5\n[[meter]]\nid = "HOUSE-1"\nlatitude = -8.65\nlongitude = 115.22\n'
        'timezone = "Asia/Makassar"\n'
        'pv_kw = 6.5\nbattery_kwh = 13.5\nprofile = "commercial"\n[[meter]]\nid = "RIG.2"\nscale = "lab"\n',
        encoding="utf-8",
    )
    settings = fast(env, fleet_file=fleet, speed=5.0, status_interval_s=3600.0)
    common = settings.common
    async with collect(common, [common.topics.data, common.topics.command_ack("+")]) as got:
        task, ready = await _running(settings)
        try:
            proc = ServiceProcess(
                args=["edge", "scenario", "heatwave", "--meter", "HOUSE-1,RIG.2", "--duration", "900"],
                env=environ,
            ).start()
            assert proc.process is not None
            code = await asyncio.to_thread(proc.process.wait, 30)
            bad = ServiceProcess(
                args=["edge", "scenario", "cloudy", "--meter", "NOBODY", "--wait", "1"], env=environ
            )
            bad.start()
            assert bad.process is not None
            bad_code = await asyncio.to_thread(bad.process.wait, 30)
        finally:
            await _stop(task)
    assert code == 0, proc.output()
    assert "HOUSE-1: scenario ok" in proc.output() and "RIG.2: scenario ok" in proc.output()
    assert bad_code == 1 and "no ack within 1 s from: NOBODY" in bad.output()
    assert ready[0].sim.scenarios.mask("heatwave").tolist() == [True, True]
    ids = {m["meterId"] for m in got.on(common.topics.data)}
    assert ids == {"HOUSE-1", "RIG.2"}
    rig = [m for m in got.on(common.topics.data) if m["meterId"] == "RIG.2"][-1]
    assert rig["data"]["battery"]["voltage"] < 4.3  # the lab cell


def test_fleet_file_errors_name_the_meter(tmp_path: Any) -> None:
    import pytest

    from enerlink.edge.sim.fleet import FleetError, load

    path = tmp_path / "bad.toml"
    path.write_text('[[meter]]\nid = "OK1"\n[[meter]]\nid = "bad id!"\n', encoding="utf-8")
    with pytest.raises(FleetError, match="'bad id!'"):
        load(path)
    path.write_text('[[meter]]\nid = "M1"\npanels = 3\n', encoding="utf-8")
    with pytest.raises(FleetError, match=r"unknown keys \['panels'\]"):
        load(path)
    path.write_text('[[meter]]\nid = "M1"\ntimezone = "Mars/Olympus"\n', encoding="utf-8")
    with pytest.raises(FleetError, match="unknown timezone"):
        load(path)


def test_example_fleet_file_loads() -> None:
    from pathlib import Path

    import enerlink.edge.sim
    from enerlink.edge.sim.fleet import load

    fleet = load(Path(enerlink.edge.sim.__file__).parent / "fleet.example.toml")
    assert fleet.ids == ["METER001", "SHOP-DPS-01", "LAB-RIG-1"] and fleet.seed == 42
    assert [m.scale for m in fleet.meters] == ["home", "home", "lab"]
