from __future__ import annotations

import asyncio
import io
import json

import aiomqtt

from enerlink.config import CommonSettings, Env
from enerlink.console import format_line, format_power, run
from enerlink.schemas.telemetry import DataMessage
from tests.conftest import load_fixture


def test_power_is_shown_in_the_unit_a_person_reads() -> None:
    assert format_power(12_500_000) == "12.5 kW"
    assert format_power(480.2) == "480 mW"
    assert format_power(-2_500) == "-2.5 W"


def test_fixture_line() -> None:
    line = format_line(DataMessage.model_validate(load_fixture("meter-data.json"), strict=False))
    assert line.endswith("METER001: solar 0 mW, battery 87 %, load 475 mW, grid import 480 mW")


async def test_console_prints_what_reaches_the_broker(env: Env, data_fixture_bytes: bytes) -> None:
    common = CommonSettings.from_env(env)
    out = io.StringIO()
    task = asyncio.create_task(run(common, out=out), name="console")
    try:
        async with aiomqtt.Client("127.0.0.1", common.mqtt.port) as publisher:
            message = load_fixture("meter-data.json")
            message["data"]["solar_output"]["power"] = 12_500_000.0
            for _ in range(100):  # until the console's subscription is in place
                await publisher.publish(common.topics.data, json.dumps(message).encode(), qos=1)
                await publisher.publish(common.topics.data, b"not json", qos=1)
                await asyncio.sleep(0.05)
                if "solar 12.5 kW" in out.getvalue():
                    break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    lines = out.getvalue().splitlines()
    assert lines and all("METER001: solar 12.5 kW, battery 87 %" in line for line in lines)
