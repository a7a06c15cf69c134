"""Re-sends on a real broker: resend requests answered with the exact stored bytes on the resent
topic and a ResendResult ack, bad requests refused with ok:false, unconfirmed readings re-sent by the
edge after a timeout (confirmed ones not), for the simulated fleet and the hardware edge."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import orjson
from prometheus_client import generate_latest

from enerlink.config import CommonSettings, Env
from enerlink.edge.hardware.model import LabModel
from enerlink.edge.hardware.runner import HardwareConfig, emulated_bus, run_hardware
from enerlink.edge.hardware.sensors import DEFAULT_SENSORS
from enerlink.edge.readings_log import LogSettings
from enerlink.edge.service import log_path, run
from enerlink.schemas.delivery import ResendResult
from tests.support.delivery_support import (
    collect_raw,
    confirmation,
    fast,
    log_rows,
    resend,
    running,
    send,
    stop,
)
from tests.support.sim_support import wait_for


async def test_resend_request_republishes_the_stored_bytes_and_names_what_is_not_held(env: Env) -> None:
    # keep_s=0: a confirmed reading is pruned at the next prune (every second), so it is "not held"
    settings = fast(env, meters=2, log=LogSettings(keep_s=0))
    topics, common = settings.common.topics, settings.common
    ack1, ack2 = topics.command_ack("METER001"), topics.command_ack("METER002")
    async with collect_raw(common, [topics.data, topics.resent, ack1, ack2]) as got:
        task, runner = await running(settings)
        try:
            await wait_for(lambda: runner.steps >= 5, limit_s=30)
            await send(common, topics.confirm("METER001"), confirmation("METER001", through=2))
            await wait_for(lambda: runner.readings.is_confirmed("METER001", 2) is None, limit_s=20)
            await send(common, topics.command("METER001"), resend([(1, 4), (5000, 5002)], "r1"), qos=2)
            await send(common, topics.command("METER002"), resend([(1, 2)], "r2"), qos=2)
            await wait_for(lambda: len(got.on(ack1)) >= 1 and len(got.on(ack2)) >= 1, limit_s=20)
        finally:
            await stop(task)
    (first,) = got.json(ack1)
    assert first["ok"] is True and first["cmd"] == "resend" and first["id"] == "r1"
    assert first["meterId"] == "METER001"
    assert ResendResult.model_validate(first["result"]) == ResendResult(
        resent=2, not_held=[(1, 2), (5000, 5002)]
    )
    (second,) = got.json(ack2)
    assert second["ok"] is True and second["result"] == {"resent": 2, "not_held": []}
    data = {m: got.by_seq(topics.data, m) for m in ("METER001", "METER002")}
    resent = {m: got.by_seq(topics.resent, m) for m in ("METER001", "METER002")}
    assert sorted(resent["METER001"]) == [3, 4] and sorted(resent["METER002"]) == [1, 2]
    for meter, by_seq in resent.items():
        for seq, payloads in by_seq.items():
            assert payloads == data[meter][seq]  # exactly the bytes published live, once
    stats = runner.readings.stats
    assert (stats.resent_request, stats.not_held, stats.resend_requests) == (4, 5, {"ok": 2})
    scraped = generate_latest(runner.metrics.registry).decode()
    assert 'enerlink_edge_log_resent_total{reason="request"} 4.0' in scraped
    assert 'enerlink_edge_resend_requests_total{outcome="ok"} 2.0' in scraped
    assert "enerlink_edge_log_not_held_total 5.0" in scraped
    assert "enerlink_edge_log_confirmed_total 2.0" in scraped


async def test_bad_resend_requests_are_refused_with_a_reason(env: Env) -> None:
    settings = fast(env, meters=1)
    topics, common = settings.common.topics, settings.common
    ack = topics.command_ack("METER001")
    bad = {
        "big": b'{"cmd": "resend", "ranges": [[1, 2001]], "id": "big"}',
        "down": b'{"cmd": "resend", "ranges": [[5, 2]], "id": "down"}',
        "none": b'{"cmd": "resend", "ranges": [], "id": "none"}',
        "many": orjson.dumps({"cmd": "resend", "ranges": [[k, k] for k in range(1, 40, 2)], "id": "many"}),
        "zero": b'{"cmd": "resend", "ranges": [[0, 3]], "id": "zero"}',
    }
    async with collect_raw(common, [ack, topics.resent]) as got:
        task, runner = await running(settings)
        try:
            for payload in bad.values():
                await send(common, topics.command("METER001"), payload, qos=2)
            await wait_for(lambda: len(got.on(ack)) >= len(bad), limit_s=20)
        finally:
            await stop(task)
    acks = {a["id"]: a for a in got.json(ack)}
    assert set(acks) == set(bad)
    assert all(a["ok"] is False and a["cmd"] == "resend" and "result" not in a for a in acks.values())
    assert "at most 2000" in acks["big"]["error"]
    assert "ends before it starts" in acks["down"]["error"]
    assert acks["none"]["error"].startswith("ranges:")
    assert acks["many"]["error"].startswith("ranges:")
    assert got.on(topics.resent) == []
    assert runner.readings.stats.resend_requests == {"oversized": 1, "invalid": 4}


async def test_unconfirmed_readings_are_resent_after_the_timeout_and_confirmed_ones_are_not(env: Env) -> None:
    log = LogSettings(resend_after_s=1.0, resend_max_backoff_s=1.5)
    settings = fast(env, meters=2, log=log)
    topics, common = settings.common.topics, settings.common
    await asyncio.wait_for(run(settings, max_steps=2), timeout=60)
    # what the pipeline leaves retained for METER001 while the fleet is down: seqs 1-2 stored
    await send(common, topics.confirm("METER001"), confirmation("METER001", through=2), retain=True)
    await asyncio.sleep(1.0)  # every logged reading is now older than the timeout
    async with collect_raw(common, [topics.resent]) as got:
        task, runner = await running(dataclasses.replace(settings, speed=1.0))
        try:
            twice = lambda: len(got.by_seq(topics.resent, "METER002").get(1, [])) >= 2  # noqa: E731
            await wait_for(twice, limit_s=30)
            path = log_path(settings)
            await wait_for(lambda: log_rows(path)[("METER002", 1)].resends >= 2, limit_s=10)
        finally:
            await stop(task)
        await send(common, topics.confirm("METER001"), b"", retain=True)
    rows = log_rows(log_path(settings))
    assert rows[("METER001", 1)].confirmed and rows[("METER001", 2)].confirmed
    assert 1 not in got.by_seq(topics.resent, "METER001") and 2 not in got.by_seq(topics.resent, "METER001")
    again = got.by_seq(topics.resent, "METER002")
    for seq in (1, 2):
        assert again[seq] and all(payload == rows[("METER002", seq)].payload for payload in again[seq])
    assert rows[("METER002", 1)].resends >= 2 and rows[("METER001", 1)].resends == 0
    assert runner.readings.stats.resent_timer >= 3


def _hardware(environ: dict[str, str], tmp_path: Path) -> HardwareConfig:
    env = Env(environ)
    return HardwareConfig(
        common=CommonSettings.from_env(env),
        meter_id=f"HW{uuid.uuid4().hex[:6]}",
        emulate=True,
        interval_s=0.5,
        status_interval_s=30.0,
        sample_rate_hz=20.0,
        sensor_retry_s=0.0,
        state_dir=tmp_path / "hw",
        bus=emulated_bus(DEFAULT_SENSORS, LabModel()),
        log=LogSettings(resend_after_s=3600.0),
    )


async def test_hardware_meter_logs_applies_confirmations_and_answers_resend(
    environ: dict[str, str], tmp_path: Path
) -> None:
    config = _hardware(environ, tmp_path)
    meter, topics, common = config.meter_id, config.common.topics, config.common
    path = config.state_dir / f"{meter}.log.sqlite3"
    async with collect_raw(common, [topics.data, topics.resent, topics.command_ack(meter)]) as got:
        task = asyncio.create_task(run_hardware(config), name="hardware-under-test")
        try:
            await wait_for(lambda: len(got.on(topics.data)) >= 3, limit_s=30)
            await send(common, topics.confirm(meter), confirmation(meter, through=1))
            await wait_for(lambda: log_rows(path)[(meter, 1)].confirmed, limit_s=20)
            await send(common, topics.command(meter), resend([(1, 2), (900, 900)], "h1"), qos=2)
            await send(common, topics.command(meter), b'{"cmd": "resend", "ranges": "all"}', qos=2)
            await wait_for(lambda: len(got.on(topics.command_ack(meter))) >= 2, limit_s=20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    good, bad = sorted(got.json(topics.command_ack(meter)), key=lambda a: "id" not in a)
    assert good["ok"] is True and good["id"] == "h1"
    assert good["result"] == {"resent": 2, "not_held": [[900, 900]]}
    assert bad["ok"] is False and bad["error"].startswith("ranges")
    data = got.by_seq(topics.data, meter)
    resent = got.by_seq(topics.resent, meter)
    assert sorted(resent) == [1, 2] and all(resent[s] == data[s] for s in (1, 2))
    rows = log_rows(path)
    assert rows[(meter, 1)].confirmed and not rows[(meter, 2)].confirmed
    for seq, payloads in data.items():
        assert rows[(meter, seq)].payload == payloads[0]
