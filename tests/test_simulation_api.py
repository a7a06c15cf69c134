"""The simulated fleet driven over HTTP on a real broker: the API's ``/simulation`` routes reach a fleet
process (idle at start) over MQTT; started, its meters publish and are online; stopped, they go offline
and fall silent while the process keeps listening; started again, counters and ``seq`` continue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from typing import Any

import httpx

from enerlink.config import Env
from enerlink.edge.service import run as run_fleet
from enerlink.edge.settings import Settings as EdgeSettings
from enerlink.schemas.wire import Topics
from tests.support.apiserver import serve_api
from tests.support.services import ServiceProcess
from tests.support.sim_support import Collected, collect, wait_for

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _idle_fleet(env: Env, **changes: Any) -> asyncio.Task[None]:
    options: dict[str, Any] = {"meters": 2, "progress": False, "status_interval_s": 3600.0, "idle": True}
    settings = dataclasses.replace(EdgeSettings.from_env(env), **{**options, **changes})
    return asyncio.create_task(run_fleet(settings), name="fleet-under-test")


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _data(got: Collected, topics: Topics, meter: str) -> list[dict[str, Any]]:
    return [m for m in got.on(topics.data) if m["meterId"] == meter]


def _presence(got: Collected, topics: Topics, meter: str) -> dict[str, Any] | None:
    seen = got.on(topics.presence(meter))
    return seen[-1] if seen else None


def _state(got: Collected, topics: Topics) -> dict[str, Any] | None:
    seen = got.on(topics.fleet_state)
    return seen[-1] if seen else None


def _load_total(message: dict[str, Any]) -> float:
    data = message["data"]
    return float(data["load_smart_mtr"]["total_energy"] + data["load_home"]["total_energy"])


async def test_start_stop_start_over_http(environ: dict[str, str], env: Env) -> None:
    topics = Topics(environ["ENERLINK_TOPIC_PREFIX"])
    common = EdgeSettings.from_env(env).common
    watched = [topics.data, topics.all_presence, topics.fleet_state]
    fleet = _idle_fleet(env)
    try:
        async with (
            collect(common, watched) as got,
            serve_api(environ, ENERLINK_API_TOKEN=TOKEN) as api,
        ):
            await wait_for(lambda: (_state(got, topics) or {}).get("online") is True, limit_s=30)
            idle = (await api.client.get("/simulation", headers=AUTH)).json()

            params = {"meters": 2, "interval_s": 1, "speed": 2}
            started = await api.client.post("/simulation/start", json=params, headers=AUTH)
            await wait_for(lambda: all(len(_data(got, topics, m)) >= 3 for m in ("METER001", "METER002")))
            await asyncio.sleep(1.2)  # the state is published about once a second while running
            running = (await api.client.get("/simulation", headers=AUTH)).json()
            again = await api.client.post("/simulation/start", json=params, headers=AUTH)
            other = await api.client.post("/simulation/start", json={"meters": 3}, headers=AUTH)
            anonymous = [
                await api.client.post("/simulation/start", json=params),
                await api.client.post("/simulation/stop"),
                await api.client.post("/simulation/stop", headers={"Authorization": "Bearer wrong"}),
                await api.client.get("/simulation"),
            ]
            online = {m: _presence(got, topics, m) for m in ("METER001", "METER002")}

            stopped = await api.client.post("/simulation/stop", headers=AUTH)
            await wait_for(lambda: _presence(got, topics, "METER002") == {"online": False})
            before = {m: _data(got, topics, m)[-1] for m in ("METER001", "METER002")}
            count = len(got.on(topics.data))
            await asyncio.sleep(2.0)  # four intervals at this speed: nothing may come
            silent = len(got.on(topics.data)) - count
            stopped_state = (await api.client.get("/simulation", headers=AUTH)).json()
            stop_again = await api.client.post("/simulation/stop", headers=AUTH)

            restarted = await api.client.post("/simulation/start", headers=AUTH)
            await wait_for(lambda: all(len(_data(got, topics, m)) >= 4 + before[m]["seq"] for m in before))
            resumed = {m: [d for d in _data(got, topics, m) if d["seq"] > before[m]["seq"]] for m in before}
            back_online = {m: _presence(got, topics, m) for m in before}

            await api.client.post("/simulation/stop", headers=AUTH)
            grown = await api.client.post("/simulation/start", json={"meters": 3}, headers=AUTH)
            await wait_for(lambda: len(_data(got, topics, "METER003")) >= 2)
            last = {m: _data(got, topics, m)[-1]["seq"] for m in before}
            newcomer = _data(got, topics, "METER003")
    finally:
        await _stop(fleet)

    assert idle["online"] is True and idle["running"] is False and idle["meters"] == 2
    assert idle["messages_sent"] == 0

    assert started.status_code == 200, started.text
    body = started.json()
    assert body["running"] is True and body["meters"] == 2 and body["interval_s"] == 1 and body["speed"] == 2
    assert running["running"] is True and running["meters"] == 2 and running["messages_sent"] >= 6
    assert online == {"METER001": {"online": True}, "METER002": {"online": True}}

    assert again.status_code == 200 and again.json()["since"] == body["since"]  # a no-op
    assert other.status_code == 409 and "already running with meters=2" in other.json()["detail"]
    assert [r.status_code for r in anonymous] == [401, 401, 401, 401]

    assert stopped.status_code == 200 and stopped.json()["running"] is False, stopped.text
    assert _presence(got, topics, "METER001") is not None
    assert silent == 0
    assert stopped_state["online"] is True and stopped_state["running"] is False
    assert stopped_state["messages_sent"] == count
    assert stop_again.status_code == 200 and stop_again.json()["since"] == stopped.json()["since"]

    assert restarted.status_code == 200 and restarted.json()["running"] is True
    assert restarted.json()["interval_s"] == 1 and restarted.json()["speed"] == 2  # kept from before
    assert back_online == {"METER001": {"online": True}, "METER002": {"online": True}}
    for meter, previous in before.items():
        after = resumed[meter]
        assert [d["seq"] for d in after[:3]] == [previous["seq"] + k for k in (1, 2, 3)]
        for channel in ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output"):
            assert after[0]["data"][channel]["total_energy"] >= previous["data"][channel]["total_energy"]
        assert _load_total(after[-1]) > _load_total(previous)

    assert grown.status_code == 200 and grown.json()["meters"] == 3
    assert all(last[m] > before[m]["seq"] + 3 for m in before)  # the resized fleet kept their state
    assert newcomer[0]["seq"] == 1


async def test_bad_parameters_and_no_fleet(environ: dict[str, str]) -> None:
    async with serve_api(environ, ENERLINK_COMMAND_TIMEOUT_S="1") as api:
        nothing = (await api.client.get("/simulation")).json()
        unanswered = await api.client.post("/simulation/start", json={"meters": 2})
        bad = {
            "zero meters": await api.client.post("/simulation/start", json={"meters": 0}),
            "too many": await api.client.post("/simulation/start", json={"meters": 10_001}),
            "fast": await api.client.post("/simulation/start", json={"interval_s": "fast"}),
            "negative speed": await api.client.post("/simulation/start", json={"speed": -1}),
            "typo": await api.client.post("/simulation/start", json={"metres": 3}),
            "not an object": await api.client.post("/simulation/start", json=[2]),
        }
    assert nothing == {**nothing, "online": False, "running": False, "meters": 0}
    assert unanswered.status_code == 504
    assert "no simulated fleet answered start" in unanswered.json()["detail"]
    assert {name: r.status_code for name, r in bad.items()} == dict.fromkeys(bad, 422)

    def first(name: str) -> dict[str, Any]:
        detail: dict[str, Any] = bad[name].json()["detail"][0]
        return detail

    assert first("zero meters")["loc"][-1] == "meters"
    assert first("zero meters")["msg"] == "Input should be greater than or equal to 1"
    assert first("too many")["msg"] == "Input should be less than or equal to 10000"
    assert first("fast")["loc"][-1] == "interval_s" and "valid number" in first("fast")["msg"]
    assert first("negative speed")["msg"] == "Input should be greater than 0"
    assert first("typo")["loc"][-1] == "metres" and first("typo")["msg"] == "Extra inputs are not permitted"


async def test_fleet_process_answers_mqtt_commands_and_its_last_will(
    environ: dict[str, str], env: Env
) -> None:
    """``enerlink edge --simulate --idle`` as a process: bad commands are refused with a reason (and the
    process carries on), SIGTERM publishes the state offline, and so does the broker after kill -9."""
    from tests.support.sim_support import publish

    topics = Topics(environ["ENERLINK_TOPIC_PREFIX"])
    common = EdgeSettings.from_env(env).common
    args = ["edge", "--simulate", "--idle", "--meters", "2", "--interval", "1"]
    async with collect(common, [topics.fleet_state, topics.data]) as got:
        process = ServiceProcess(args=args, env=environ).start()
        try:
            await wait_for(lambda: (_state(got, topics) or {}).get("online") is True, limit_s=30)
            await publish(common, topics.fleet_command, b'{"cmd": "jump", "id": "c1"}')
            await wait_for(lambda: (_state(got, topics) or {}).get("id") == "c1")
            refused = _state(got, topics)
            await publish(common, topics.fleet_command, b'{"cmd": "stop", "meters": 3, "id": "c2"}')
            await wait_for(lambda: (_state(got, topics) or {}).get("id") == "c2")
            refused_stop = _state(got, topics)
            await publish(common, topics.fleet_command, b'{"cmd": "start", "speed": 4, "id": "c3"}')
            await wait_for(lambda: len(got.on(topics.data)) >= 2)
        finally:
            code = process.terminate()
        await asyncio.sleep(0.5)
        clean_exit = _state(got, topics)

        killed = ServiceProcess(args=args, env=environ).start()
        try:
            await wait_for(lambda: (_state(got, topics) or {}).get("online") is True, limit_s=30)
        finally:
            assert killed.process is not None
            killed.process.send_signal(signal.SIGKILL)
            killed.process.wait(timeout=10)
        await wait_for(lambda: (_state(got, topics) or {}).get("online") is False)
        will = _state(got, topics)

    assert refused is not None and refused["online"] is True and refused["running"] is False
    assert refused["error"] is not None and refused["error"].startswith(
        "cmd: Input should be 'start' or 'stop'"
    )
    assert refused_stop is not None and refused_stop["error"].endswith(
        "stop takes no meters, interval_s or speed"
    )
    assert code == 0, process.output()
    assert clean_exit is not None and clean_exit["online"] is False and clean_exit["running"] is False
    assert clean_exit["messages_sent"] >= 2 and clean_exit["speed"] == 4
    assert will is not None and will["running"] is False and will["meters"] == 2


async def test_fleet_runs_from_the_start_by_default(environ: dict[str, str], env: Env) -> None:
    """Without ``idle`` the fleet runs from the start (as before), and its state tells the scenarios
    its meters run."""
    from tests.support.sim_support import publish

    topics = Topics(environ["ENERLINK_TOPIC_PREFIX"])
    common = EdgeSettings.from_env(env).common
    async with collect(common, [topics.data, topics.fleet_state, topics.command_ack("+")]) as got:
        fleet = _idle_fleet(env, idle=False, interval_s=1.0, speed=2.0)
        try:
            await wait_for(lambda: len(got.on(topics.data)) >= 2, limit_s=30)
            for meter in ("METER001", "METER002"):
                await publish(common, topics.command(meter), b'{"cmd": "scenario", "name": "heatwave"}')
            await publish(common, topics.command("METER002"), b'{"cmd": "scenario", "name": "cloudy"}')
            await wait_for(lambda: len(got.on(topics.command_ack("METER002"))) == 2)
            await wait_for(lambda: (_state(got, topics) or {}).get("scenarios", {}).get("cloudy") == 1)
            async with serve_api(environ) as api:
                state = (await api.client.get("/simulation")).json()
                stopped = await api.client.post("/simulation/stop")
        finally:
            await _stop(fleet)
    assert state["online"] is True and state["running"] is True and state["meters"] == 2
    assert state["scenarios"] == {"heatwave": 2, "cloudy": 1}
    assert isinstance(stopped, httpx.Response) and stopped.json()["running"] is False


async def test_inside_up_idle_then_started_from_the_api(environ: dict[str, str], redis_client: Any) -> None:
    """``enerlink up --idle``: the fleet inside the one-process pipeline waits for a start from its own
    API, then its meters' data go through the ingest into Redis."""
    from enerlink.schemas.wire import Keys
    from tests.support.services import free_port

    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    port = free_port()
    args = ["up", "--meters", "2", "--interval", "1", "--idle", "--no-console", "--port", str(port)]
    up = ServiceProcess(args=args, env=environ).start()
    idle: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:

            async def fleet_online() -> bool:
                try:
                    idle.update((await client.get("/simulation")).json())
                except httpx.TransportError:
                    return False
                return idle.get("online") is True

            async with asyncio.timeout(60):
                while not await fleet_online():  # noqa: ASYNC110 (polling another process)
                    await asyncio.sleep(0.3)
            await asyncio.sleep(2.0)
            before = await redis_client.hlen(keys.latest_data)
            started = await client.post("/simulation/start", json={"speed": 2})
            async with asyncio.timeout(30):
                while await redis_client.hlen(keys.latest_data) < 2:  # noqa: ASYNC110 (polling Redis)
                    await asyncio.sleep(0.2)
            stopped = await client.post("/simulation/stop")
    finally:
        code = up.terminate(timeout=60)
    assert idle["running"] is False and idle["meters"] == 2, up.output()[-3000:]
    assert before == 0
    assert started.status_code == 200 and started.json()["running"] is True and started.json()["speed"] == 2
    assert sorted(await redis_client.hkeys(keys.latest_data)) == [b"METER001", b"METER002"]
    assert stopped.status_code == 200 and stopped.json()["running"] is False
    assert code == 0, up.output()[-3000:]


async def test_a_fleet_file_keeps_its_size(environ: dict[str, str], env: Env) -> None:
    from pathlib import Path

    import enerlink.edge.sim

    example = Path(enerlink.edge.sim.__file__).with_name("fleet.example.toml")
    fleet = _idle_fleet(env, fleet_file=example)
    try:
        async with serve_api(environ) as api:
            async with asyncio.timeout(30):
                while not (await api.client.get("/simulation")).json()["online"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            resized = await api.client.post("/simulation/start", json={"meters": 99})
            started = await api.client.post("/simulation/start", json={"interval_s": 2})
            await api.client.post("/simulation/stop")
    finally:
        await _stop(fleet)
    assert resized.status_code == 409
    assert resized.json()["detail"] == f"the fleet file {example} has 3 meters; meters cannot change"
    assert started.status_code == 200 and started.json()["meters"] == 3 and started.json()["interval_s"] == 2
    assert started.json()["fleet"] == str(example)
