"""``enerlink edge doctor``: plain-words diagnosis of clock, state, I2C, sensors, broker, backlog."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from enerlink.config import Env
from enerlink.edge import doctor
from enerlink.edge.hardware.model import LabModel
from enerlink.edge.hardware.runner import HardwareConfig, emulated_bus
from enerlink.edge.hardware.sensors import DEFAULT_SENSORS
from enerlink.edge.queue import SpoolQueue
from tests.support.services import Broker


def _args(**kwargs: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    doctor.configure(parser)
    namespace = parser.parse_args([])
    for key, value in kwargs.items():
        setattr(namespace, key, value)
    return namespace


def test_doctor_all_green_on_emulated_hardware(
    broker: Broker, environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = doctor.main(_args(emulate_hardware=True, meter_id="DOC1"), Env(environ))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ OK ] sensor Solar Output (ina219 at 0x45)" in out
    assert "[ OK ] sensor Battery Fuel Gauge (max17048 at 0x36): cell" in out
    assert "[ OK ] broker: connected" in out
    assert "[FAIL]" not in out


async def test_doctor_names_a_dead_sensor_and_an_unreachable_broker(
    own_broker: Broker, environ: dict[str, str], tmp_path: Path
) -> None:
    bus = emulated_bus(DEFAULT_SENSORS, LabModel())
    bus.detach(0x42)
    env = Env({**environ, "ENERLINK_MQTT_URL": own_broker.url})  # never started: nothing listens
    config = replace(HardwareConfig.from_env(env), bus=bus, meter_id="DOC2", state_dir=tmp_path)
    queue = SpoolQueue(tmp_path / "DOC2.outbox.sqlite3")
    queue.append("t", b"x")
    queue.close()
    checks = {c.what: c for c in await doctor.run_checks(config)}
    dead = checks["sensor Load Smart (ina219 at 0x42)"]
    assert dead.level == "fail" and "does not answer" in dead.detail and "wiring" in dead.detail
    assert checks["sensor Load Home (ina219 at 0x43)"].level == "ok"
    assert checks["broker"].level == "fail" and "cannot connect" in checks["broker"].detail
    assert checks["offline queue"].level == "warn" and "1 messages" in checks["offline queue"].detail
    assert checks["clock"].level in ("ok", "warn")


@pytest.mark.skipif(Path("/dev/i2c-1").exists(), reason="this machine has a real I2C bus")
async def test_doctor_explains_switched_off_i2c(environ: dict[str, str]) -> None:
    config = HardwareConfig.from_env(Env(environ))
    [check] = doctor.check_i2c(config)
    assert check.level == "fail" and "raspi-config" in check.detail
