"""Control of meters over HTTP against a running simulated fleet on a real broker: commands reach the
meters, their acks come back in the response, timeouts and unknown meters are told apart, settle is a
recorded settlement, and every outcome is in the events table."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import httpx
import psycopg
import redis.asyncio as aioredis

from enerlink.config import Env
from enerlink.edge.service import run as run_fleet
from enerlink.edge.settings import Settings as EdgeSettings
from enerlink.schemas.wire import Keys, Tables
from tests.support.apiserver import serve_api
from tests.support.sim_support import wait_for


async def _fleet(env: Env) -> tuple[asyncio.Task[None], Any]:
    settings = dataclasses.replace(
        EdgeSettings.from_env(env),
        meters=2,
        speed=10.0,
        interval_s=5.0,
        progress=False,
        status_interval_s=3600.0,
    )
    ready: list[Any] = []
    task = asyncio.create_task(run_fleet(settings, on_ready=ready.append), name="fleet-under-test")
    await wait_for(lambda: bool(ready) and ready[0].steps >= 1, limit_s=30)
    return task, ready[0]


def _command_events(url: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select meter_id, details->>'cmd', details->>'outcome', details->>'request_id'"
            f" from {Tables.EVENTS} where kind = 'command' order by id"
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


async def test_http_commands_reach_the_meters_and_the_acks_come_back(
    environ: dict[str, str], env: Env, redis_client: aioredis.Redis
) -> None:
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    seen = str(int(time.time() * 1000) - 120_000)
    await redis_client.hset(keys.meters, mapping={"METER001": seen, "METER002": seen, "GHOST": seen})
    task, runner = await _fleet(env)
    try:
        async with serve_api(environ) as api:
            scenarios = (await api.client.get("/scenarios")).json()
            one = await api.client.post(
                "/meters/METER001/commands",
                json={"cmd": "scenario", "name": "grid_outage", "duration_s": 600, "request_id": "op-1"},
            )
            bad_name = await api.client.post(
                "/meters/METER001/commands", json={"cmd": "scenario", "name": "x"}
            )
            bad_args = await api.client.post(
                "/meters/METER001/commands", json={"cmd": "settle", "sensor": "a"}
            )
            refused = await api.client.post(
                "/meters/METER002/commands",
                json={"cmd": "scenario", "name": "sensor_failure", "sensor": "Flux Capacitor"},
            )
            outage_on = runner.sim.scenarios.mask("grid_outage").tolist()
            everyone = await api.client.post("/commands", json={"all": True, "cmd": "clear", "timeout_s": 2})
            outage_after = runner.sim.scenarios.mask("grid_outage").tolist()
            listed = await api.client.post(
                "/commands", json={"meters": ["METER002", "NOPE"], "cmd": "status_now", "request_id": "op-3"}
            )
            neither = await api.client.post("/commands", json={"cmd": "clear"})
            before = runner.sim.counters.settlement[0].copy()
            settle = await api.client.post("/meters/METER001/commands", json={"cmd": "settle"})
            ghost = await api.client.post(
                "/meters/GHOST/commands", json={"cmd": "status_now", "timeout_s": 1}
            )
            nobody = await api.client.post("/meters/NOPE/commands", json={"cmd": "status_now"})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [s["name"] for s in scenarios][:3] == ["normal", "heatwave", "cloudy"] and len(scenarios) == 9
    assert all(s["description"] for s in scenarios)
    assert "battery" in next(s for s in scenarios if s["name"] == "grid_outage")["description"]

    assert one.status_code == 200, one.text
    (result,) = one.json()["results"]
    assert result["outcome"] == "ok" and result["ack"]["id"] == "op-1"
    assert result["ack"]["result"]["scenario"] == "grid_outage" and result["ack"]["meterId"] == "METER001"
    assert outage_on == [True, False] and outage_after == [False, False]
    assert bad_name.status_code == 422 and bad_args.status_code == 422 and neither.status_code == 422
    assert refused.status_code == 502 and "Flux Capacitor" in refused.json()["detail"]

    body = everyone.json()
    assert everyone.status_code == 200 and body["sent"] == 3 and body["ok"] == 2
    outcomes = {r["meter_id"]: r for r in body["results"]}
    assert outcomes["METER001"]["outcome"] == "ok" and outcomes["METER002"]["ack"]["result"] == {
        "cleared": "all"
    }
    assert outcomes["GHOST"]["outcome"] == "timeout" and outcomes["GHOST"]["ack"] is None
    assert outcomes["GHOST"]["error"].startswith("GHOST did not acknowledge clear within 2 s (last seen 20")

    assert [(r["meter_id"], r["outcome"]) for r in listed.json()["results"]] == [
        ("METER002", "ok"),
        ("NOPE", "unknown"),
    ]
    assert listed.json()["sent"] == 1

    assert settle.status_code == 200, settle.text
    (settled,) = settle.json()["results"]
    record = settled["settlement"]
    assert settled["ack"]["result"]["settled_import_wh"] == record["device_import_wh"]
    assert record["meter_id"] == "METER001" and record["seq"] == 1 and record["source"] == "api-command"
    assert record["device_import_wh"] >= before[1] - 1e-6  # what the meter had counted, then reset
    assert ghost.status_code == 504 and ghost.json()["detail"].startswith(
        "GHOST did not acknowledge status_now"
    )
    assert nobody.status_code == 404

    url = environ["ENERLINK_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        (rows,) = conn.execute(f"select count(*) from {Tables.SETTLEMENTS}").fetchone()  # type: ignore[misc]
    assert rows == 1
    logged = _command_events(url)
    assert ("METER001", "scenario", "ok", "op-1") in logged
    assert ("METER002", "scenario", "error") in [(m, c, o) for m, c, o, _ in logged]
    assert sorted((m, o) for m, c, o, _ in logged if c == "clear") == [
        ("GHOST", "timeout"),
        ("METER001", "ok"),
        ("METER002", "ok"),
    ]
    assert ("METER002", "status_now", "ok", "op-3") in logged
    assert ("METER001", "settle", "ok") in [(m, c, o) for m, c, o, _ in logged]
    assert ("GHOST", "status_now", "timeout") in [(m, c, o) for m, c, o, _ in logged]
    assert not any(m == "NOPE" for m, *_ in logged)  # nothing sent, nothing logged


async def test_commands_need_the_token_when_one_is_set(environ: dict[str, str]) -> None:
    async with serve_api(environ, ENERLINK_API_TOKEN="s3cret") as api:
        calls: list[httpx.Response] = [
            await api.client.get("/scenarios"),
            await api.client.post("/commands", json={"all": True, "cmd": "clear"}),
            await api.client.post("/meters/METER001/commands", json={"cmd": "status_now"}),
            await api.client.post("/meters/METER001/settlements"),
            await api.client.get("/meters/METER001/settlements"),
        ]
        allowed = await api.client.get("/scenarios", headers={"Authorization": "Bearer s3cret"})
    assert [c.status_code for c in calls] == [401] * 5
    assert allowed.status_code == 200
