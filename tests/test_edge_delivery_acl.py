"""Delivery under the production broker configuration (accounts and ACLs from mosquitto/): a meter's
own account and the simulated fleet's account receive the ingest's confirmations and resend requests,
and the ingest's account receives what they republish and their acks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from enerlink.config import CommonSettings, Env, MqttEndpoint
from enerlink.edge.hardware.model import LabModel
from enerlink.edge.hardware.runner import HardwareConfig, emulated_bus, run_hardware
from enerlink.edge.hardware.sensors import DEFAULT_SENSORS
from enerlink.edge.readings_log import LogSettings
from enerlink.edge.service import log_path, run
from enerlink.edge.settings import Settings
from enerlink.schemas.wire import Topics
from tests.support.delivery_support import Raw, confirmation, log_rows, raw_client, resend
from tests.support.secured_broker import SERVICE_PASSWORDS, SecuredBroker
from tests.support.sim_support import wait_for

TOPICS = Topics()  # production prefix: the ACLs name it, and this broker is the test's own
METER, METER_PASSWORD = "METER001", "pw-meter-001"


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredBroker]:
    broker = SecuredBroker(root=Path(tempfile.mkdtemp(prefix="enerlink-secured-")))
    broker.script("add-meter.sh", METER, METER_PASSWORD)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)


def _env(environ: dict[str, str], broker: SecuredBroker, user: str, password: str) -> Env:
    url = f"mqtt://{user}:{password}@127.0.0.1:{broker.port}"
    return Env({**environ, "ENERLINK_MQTT_URL": url, "ENERLINK_TOPIC_PREFIX": TOPICS.prefix})


@contextlib.asynccontextmanager
async def _ingest(broker: SecuredBroker, meter_id: str) -> AsyncIterator[tuple[Any, Raw]]:
    """The ingest's account: reads data, resent and the meter's acks; writes confirm and cmd."""
    password = SERVICE_PASSWORDS["MQTT_INGEST_PASSWORD"]
    endpoint = MqttEndpoint.parse(f"mqtt://enerlink-ingest:{password}@127.0.0.1:{broker.port}")
    topics = (TOPICS.data, TOPICS.resent, TOPICS.command_ack(meter_id))
    async with raw_client(endpoint, topics, name="ingest") as (client, out):
        yield client, out


async def _round_trip(client: Any, got: Raw, meter_id: str, path: Path) -> None:
    await wait_for(lambda: len(got.by_seq(TOPICS.data, meter_id)) >= 3, limit_s=30)
    payload = confirmation(meter_id, through=1)
    await client.publish(TOPICS.confirm(meter_id), payload, qos=1, retain=True)
    await wait_for(lambda: log_rows(path)[(meter_id, 1)].confirmed, limit_s=20)
    await client.publish(TOPICS.command(meter_id), resend([(1, 2)], "acl"), qos=2)
    await wait_for(lambda: bool(got.on(TOPICS.command_ack(meter_id))), limit_s=20)
    await wait_for(lambda: len(got.by_seq(TOPICS.resent, meter_id)) >= 2, limit_s=10)
    await client.publish(TOPICS.confirm(meter_id), b"", qos=1, retain=True)


def _check(got: Raw, meter_id: str) -> None:
    (ack,) = [orjson.loads(p) for p in got.on(TOPICS.command_ack(meter_id))]
    assert ack["ok"] is True and ack["id"] == "acl"
    assert ack["result"] == {"resent": 2, "not_held": []}
    data, resent = got.by_seq(TOPICS.data, meter_id), got.by_seq(TOPICS.resent, meter_id)
    assert sorted(resent) == [1, 2] and all(resent[s] == data[s] for s in (1, 2))


async def test_a_meters_own_account_gets_confirmations_and_answers_resend(
    secured: SecuredBroker, environ: dict[str, str], tmp_path: Path
) -> None:
    env = _env(environ, secured, METER, METER_PASSWORD)
    config = HardwareConfig(
        common=CommonSettings.from_env(env),
        meter_id=METER,
        emulate=True,
        interval_s=0.5,
        sample_rate_hz=20.0,
        sensor_retry_s=0.0,
        state_dir=tmp_path / "hw",
        bus=emulated_bus(DEFAULT_SENSORS, LabModel()),
        log=LogSettings(resend_after_s=3600.0),
    )
    async with _ingest(secured, METER) as (client, got):
        task = asyncio.create_task(run_hardware(config), name="hardware-under-test")
        try:
            await _round_trip(client, got, METER, config.state_dir / f"{METER}.log.sqlite3")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    _check(got, METER)


async def test_the_fleets_account_gets_confirmations_and_answers_resend(
    secured: SecuredBroker, environ: dict[str, str]
) -> None:
    env = _env(environ, secured, "enerlink-sim", SERVICE_PASSWORDS["MQTT_SIM_PASSWORD"])
    settings = dataclasses.replace(
        Settings.from_env(env), meters=2, speed=20.0, interval_s=5.0, progress=False
    )
    async with _ingest(secured, "METER002") as (client, got):
        task = asyncio.create_task(run(settings), name="fleet-under-test")
        try:
            await _round_trip(client, got, "METER002", log_path(settings))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    _check(got, "METER002")
