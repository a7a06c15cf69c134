"""The whole hardware path on emulated chips: sampling -> counters -> messages -> MQTT, with
commands, a sensor vanishing/coming back, and OS status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson
import pytest

from enerlink.config import CommonSettings, Env
from enerlink.edge.hardware.model import LabModel
from enerlink.edge.hardware.runner import HardwareConfig, HardwareMeter, emulated_bus, run_hardware
from enerlink.edge.hardware.sensors import DEFAULT_SENSORS
from enerlink.edge.status import mem_available, overall, read_os_status, uptime_ms, wireless
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.commands import CommandAck, SettleResult
from enerlink.schemas.telemetry import DataMessage, StatusMessage
from tests.support.services import Broker, free_port


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - polls lists filled by the collector task
        await asyncio.sleep(0.05)


def _config(environ: dict[str, str], **kwargs: Any) -> HardwareConfig:
    env = Env(environ)
    base = HardwareConfig.from_env(env)
    fields: dict[str, Any] = {
        "common": CommonSettings.from_env(env),
        "meter_id": f"HW{uuid.uuid4().hex[:6]}",
        "emulate": True,
        "interval_s": 0.5,
        "status_interval_s": 0.5,
        "sample_rate_hz": 20.0,
        "sensor_retry_s": 0.0,
        "state_dir": base.state_dir,
    }
    fields.update(kwargs)
    return HardwareConfig(**fields)


async def test_emulated_meter_publishes_valid_messages_and_answers_settle(
    broker: Broker, environ: dict[str, str]
) -> None:
    bus = emulated_bus(DEFAULT_SENSORS, LabModel())
    config = _config(environ, bus=bus, metrics_port=free_port())
    topics = config.common.topics
    endpoint = config.common.mqtt
    scraped: list[str] = []
    data: list[dict[str, Any]] = []
    status: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    async with mqtt_client(endpoint, identifier=f"obs-{uuid.uuid4().hex[:6]}") as obs:
        await obs.subscribe(topics.data, qos=2)
        await obs.subscribe(topics.status, qos=2)
        await obs.subscribe(topics.command_ack(config.meter_id), qos=2)

        async def collect() -> None:
            async for message in obs.messages:
                body = orjson.loads(message.payload)  # type: ignore[arg-type]
                if message.topic.matches(topics.data):
                    DataMessage.model_validate_json(message.payload)  # type: ignore[arg-type]
                    data.append(body)
                elif message.topic.matches(topics.status):
                    StatusMessage.model_validate_json(message.payload)  # type: ignore[arg-type]
                    status.append(body)
                else:
                    acks.append(body)

        async def drive() -> None:
            async with asyncio.timeout(20):
                await _until(lambda: len(data) >= 2)
                bus.detach(0x44)  # Solar Input vanishes
                await _until(
                    lambda: (
                        any("events" in s["data"] for s in status)
                        and any(m["data"]["solar_input"].get("valid") is False for m in data)
                    )
                )
                bus.attach(0x44)
                await obs.publish(topics.command(config.meter_id), b'{"cmd": "settle", "id": "c1"}', qos=2)
                await _until(lambda: bool(acks))
                await obs.publish(topics.command(config.meter_id), b'{"cmd": "reboot"}', qos=2)
                await _until(lambda: len(acks) == 2)
                url = f"http://127.0.0.1:{config.metrics_port}/metrics"
                scraped.append(await asyncio.to_thread(lambda: urlopen(url, timeout=5).read().decode()))

        async with asyncio.TaskGroup() as tg:
            collector = tg.create_task(collect())
            runner = tg.create_task(run_hardware(config, max_messages=12))
            await drive()
            await runner
            await asyncio.sleep(0.3)
            collector.cancel()

    seqs = [m["seq"] for m in data]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    first = data[1]["data"]  # the first interval starts mid-way (sensor start-up)
    assert first["import"]["stats"]["samples"] >= 5  # 20 Hz over 0.5 s
    assert first["load_smart_mtr"]["voltage"] == pytest.approx(8.95, abs=0.05)
    assert first["net_solar"]["load_power"] == pytest.approx(
        first["load_smart_mtr"]["power"] + first["load_home"]["power"], abs=0.001
    )
    totals = [m["data"]["load_smart_mtr"]["total_energy"] for m in data]
    assert totals == sorted(totals) and totals[-1] > 0
    events = [e for s in status for e in s["data"].get("events", [])]
    assert {"event": "sensor_lost", "sensor": "Solar Input"}.items() <= events[0].items()
    assert any(e["event"] == "sensor_recovered" for e in events)
    lost = [m for m in data if m["data"]["solar_input"].get("valid") is False]
    assert lost, "a data message while the sensor was gone says valid: false"
    assert acks[0]["ok"] is True and acks[0]["id"] == "c1" and acks[0]["cmd"] == "settle"
    assert acks[1]["ok"] is False and "cmd: Input should be" in acks[1]["error"]
    assert 'enerlink_edge_commands_total{outcome="ok"} 1.0' in scraped[0]
    assert 'enerlink_edge_commands_total{outcome="rejected"} 1.0' in scraped[0]
    ack = CommandAck.model_validate(acks[0])  # the contract's ack, with the settled values billing reads
    settled = SettleResult.of(ack.result)
    assert settled.settled_import_wh is not None and settled.settled_export_wh is not None
    assert settled.settled_import_wh + settled.settled_export_wh > 0  # the lab model exports a little
    after = data[-1]["data"]["import"]["settlement_energy"]
    assert after <= data[-1]["data"]["import"]["total_energy"]
    inv = status[-1]["data"]["sensors"]
    assert inv["ina219_count"] == 6 and inv["max17048_count"] == 1
    assert status[0]["data"]["mqtt"]["qos"] == 2


async def test_counters_and_seq_continue_across_restart(broker: Broker, environ: dict[str, str]) -> None:
    config = _config(environ)
    await run_hardware(config, max_messages=3)
    meter = HardwareMeter(config)
    try:
        assert meter.counters.state.seq == 3
        assert meter.counters.state.total["load_smart_mtr"] > 0
    finally:
        meter.counters.close()
    await run_hardware(config, max_messages=2)
    meter = HardwareMeter(config)
    assert meter.counters.state.seq == 5
    meter.counters.close()


def test_meter_id_is_validated(environ: dict[str, str]) -> None:
    from enerlink.config import ConfigError

    with pytest.raises(ConfigError, match="METER_ID"):
        HardwareConfig.from_env(Env({**environ, "ENERLINK_METER_ID": "bad id/x"}))


def test_os_status_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "wireless").write_text(
        "Inter-| sta-|   Quality        |   Discarded packets\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        " wlan0: 0000   61.  -49.  -256        0      0      0      0     12        0\n"
    )
    (proc / "meminfo").write_text("MemTotal: 948304 kB\nMemAvailable: 512000 kB\n")
    (proc / "uptime").write_text("11850.67 40000.00\n")
    assert wireless(proc) == ("wlan0", -49)
    assert mem_available(proc) == 512000 * 1024
    assert uptime_ms(proc) == 11_850_670
    real = read_os_status(broker_host="127.0.0.1")
    assert real.ip == "127.0.0.1" and (real.free_heap or 0) > 0 and (real.uptime_ms or 0) > 0
    assert overall(mqtt_connected=True, sensors_ok=7, sensors_total=7, free_heap=1 << 30) == "alive"
    assert overall(mqtt_connected=True, sensors_ok=6, sensors_total=7, free_heap=1 << 30) == "warning"
    assert overall(mqtt_connected=False, sensors_ok=0, sensors_total=7, free_heap=None) == "error"


def test_service_process_notifies_systemd_and_stops_cleanly(environ: dict[str, str], tmp_path: Path) -> None:
    """``python -m enerlink.edge.hardware`` as systemd runs it: READY=1, watchdog pings while sampling,
    SIGTERM -> exit 0 with the counters saved."""
    import signal
    import socket
    import subprocess
    import sys

    from enerlink.edge.counters import Counters

    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(20)
    env = {
        **environ,
        "ENERLINK_EDGE_EMULATE": "true",
        "ENERLINK_METER_ID": "SVC1",
        "ENERLINK_EDGE_INTERVAL": "0.5",
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "400000",
    }
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "enerlink.edge.hardware"], env=env, cwd=root)
    try:
        received: list[str] = []
        while received.count("WATCHDOG=1") < 12:  # ~2.4 s: a few data intervals
            received.append(sock.recv(256).decode())
        assert "READY=1" in received
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    counters = Counters(Path(environ["ENERLINK_STATE_DIR"]) / "SVC1.counters.sqlite3")
    assert counters.state.seq >= 1 and counters.state.total["load_smart_mtr"] > 0
    counters.close()


def test_simulator_physics_feed_the_emulated_chips() -> None:
    """--emulate-hardware with the simulator's physics: the drivers read what the physics say."""
    from enerlink.edge.hardware.runner import default_truth
    from enerlink.edge.hardware.sensors import SensorArray

    noon_jakarta = 1_767_243_600.0 + 5 * 3600  # 2026-01-01 12:00 UTC+7
    truth = default_truth("LAB1")
    truth.clock = lambda: noon_jakarta  # type: ignore[attr-defined]
    bus = emulated_bus(DEFAULT_SENSORS, truth)
    sensors = SensorArray(bus, DEFAULT_SENSORS)
    sensors.start()
    step = truth._current()  # type: ignore[attr-defined]
    for k, spec in enumerate(DEFAULT_SENSORS[:6]):
        sample = sensors.read_ina(spec.name)
        assert sample is not None
        expected_ma = truth.reading(spec.role).current_a * 1000
        assert sample.voltage_v == pytest.approx(float(step.voltage[0, k]), abs=0.004)
        assert sample.current_ma == pytest.approx(expected_ma, abs=0.2)
    gauge = sensors.read_gauge("Battery Fuel Gauge")
    assert gauge is not None
    assert gauge.soc_pct == pytest.approx(float(truth.sim.battery.soc[0]), abs=1 / 256)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("payload", "cmd", "error"),
    [
        (b'{"cmd": "status_now", "id": "s1"}', "status_now", None),
        (
            b'{"cmd": "scenario", "name": "heatwave", "id": "s2"}',
            "scenario",
            "unsupported command 'scenario'",
        ),
        (b'{"cmd": "reboot", "id": "s3"}', None, "cmd: Input should be"),
        (b"not json", None, "Invalid JSON"),
        (
            b'{"cmd": "settle", "duration_s": -1, "id": "s5"}',
            None,
            "duration_s: Input should be greater than 0",
        ),
    ],
)
def test_hardware_meter_answers_every_command_with_a_contract_ack(
    environ: dict[str, str], payload: bytes, cmd: str | None, error: str | None
) -> None:
    meter = HardwareMeter(_config(environ))
    try:
        ack = meter.command(payload)
    finally:
        meter.counters.close()
        meter.readings.close()
    body = orjson.loads(ack.payload())
    assert CommandAck.model_validate(body) == ack and body["meterId"] == meter.config.meter_id
    assert body["cmd"] == cmd and body["ok"] is (error is None)
    if error is None:
        assert body["result"] == {} and "error" not in body
    else:
        assert error in body["error"] and "result" not in body
    command_id = orjson.loads(payload).get("id") if payload.startswith(b"{") else None
    assert body.get("id") == command_id
