"""``enerlink edge doctor`` (or ``python -m enerlink.edge.doctor``): what is wrong with this edge, in plain
words.

Checks the clock, the state directory, the I2C bus, every configured sensor (through the same
drivers the service uses), the broker connection and the store-and-forward backlog. Prints one line
per check and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import aiomqtt

from enerlink.config import ConfigError, Env
from enerlink.edge.hardware.bus import smbus_scan
from enerlink.edge.hardware.runner import HardwareConfig, open_bus
from enerlink.edge.hardware.sensors import SensorArray
from enerlink.edge.queue import SpoolQueue
from enerlink.mqtt import client as mqtt_client

Level = Literal["ok", "warn", "fail"]
_LABEL = {"ok": "[ OK ]", "warn": "[WARN]", "fail": "[FAIL]"}


@dataclass(frozen=True, slots=True)
class Check:
    level: Level
    what: str
    detail: str

    def line(self) -> str:
        return f"{_LABEL[self.level]} {self.what}: {self.detail}"


def check_clock() -> Check:
    now = dt.datetime.now(dt.UTC)
    if now.year < 2025:
        return Check(
            "fail",
            "clock",
            f"it says {now:%Y-%m-%d}; without the right time every message is misdated. "
            "Connect to the network so NTP can set it (timedatectl set-ntp true).",
        )
    if shutil.which("timedatectl"):
        result = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
        if result.returncode == 0 and result.stdout.strip() == "no":
            return Check(
                "warn",
                "clock",
                f"{now:%Y-%m-%d %H:%M:%S} UTC, but not synchronised with NTP yet "
                "(timedatectl timesync-status)",
            )
    return Check("ok", "clock", f"{now:%Y-%m-%d %H:%M:%S} UTC")


def check_state_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".doctor-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check(
            "fail",
            "state directory",
            f"cannot write to {path} ({exc.strerror}); counters and the "
            "offline queue live there. Fix its owner (chown enerlink) or ENERLINK_STATE_DIR.",
        )
    free = shutil.disk_usage(path).free
    if free < 50 << 20:
        return Check("warn", "state directory", f"{path} has only {free >> 20} MiB free")
    return Check("ok", "state directory", f"{path} is writable, {free >> 20} MiB free")


def check_i2c(config: HardwareConfig) -> list[Check]:
    if config.emulate or config.bus is not None:
        return [Check("ok", "I2C bus", "emulated chips (ENERLINK_EDGE_EMULATE / --emulate-hardware)")]
    device = Path(f"/dev/i2c-{config.i2c_bus}")
    if not device.exists():
        return [
            Check(
                "fail",
                "I2C bus",
                f"{device} does not exist: I2C is switched off. Run "
                "'sudo raspi-config nonint do_i2c 0' (or re-run install.sh) and reboot.",
            )
        ]
    if not os.access(device, os.R_OK | os.W_OK):
        return [
            Check(
                "fail",
                "I2C bus",
                f"no permission on {device}: add this user to the i2c group "
                "(sudo usermod -a -G i2c $USER) and log in again.",
            )
        ]
    try:
        found = smbus_scan(config.i2c_bus)
    except OSError as exc:
        return [Check("fail", "I2C bus", f"scanning {device} failed: {exc}")]
    listed = ", ".join(f"0x{a:02x}" for a in found) or "nothing"
    return [Check("ok" if found else "fail", "I2C bus", f"{device}: devices answer at {listed}")]


def check_sensors(config: HardwareConfig) -> list[Check]:
    """Opens the sensors itself (never the counters: the running service owns those)."""
    sensors = SensorArray(open_bus(config), config.sensors)
    sensors.start()
    checks: list[Check] = []
    for sensor in sensors.sensors.values():
        spec = sensor.spec
        what = f"sensor {spec.name} ({spec.kind} at 0x{spec.address:02x})"
        if not sensor.connected:
            checks.append(
                Check(
                    "fail",
                    what,
                    f"does not answer ({sensor.last_error}). Check its wiring, power "
                    "and address jumpers; the edge keeps running without it.",
                )
            )
            continue
        if spec.kind == "ina219":
            sample = sensors.read_ina(spec.name)
            if sample is None:
                checks.append(Check("fail", what, "answered once, then stopped"))
            elif sample.overflow:
                checks.append(
                    Check(
                        "warn",
                        what,
                        f"{sample.voltage_v:.3f} V, {sample.current_ma:.1f} mA: the "
                        "current is beyond the shunt's range (overflow); check the calibration",
                    )
                )
            else:
                checks.append(Check("ok", what, f"{sample.voltage_v:.3f} V, {sample.current_ma:.1f} mA"))
        else:
            gauge = sensors.read_gauge(spec.name)
            if gauge is None:
                checks.append(Check("fail", what, "answered once, then stopped"))
            else:
                checks.append(Check("ok", what, f"cell {gauge.voltage_v:.3f} V, {gauge.soc_pct:.1f} %"))
    return checks


async def check_broker(config: HardwareConfig, *, timeout_s: float = 5.0) -> Check:
    endpoint = config.common.mqtt
    try:
        async with asyncio.timeout(timeout_s):
            async with mqtt_client(
                endpoint, identifier=f"enerlink-doctor-{config.meter_id}", timeout=timeout_s
            ):
                pass
    except TimeoutError:
        return Check(
            "fail",
            "broker",
            f"{endpoint!r} did not answer within {timeout_s:.0f} s (network, firewall or wrong port?)",
        )
    except aiomqtt.MqttError as exc:
        text = str(exc)
        hint = (
            "wrong user name or password?"
            if "authori" in text.lower() or "password" in text.lower()
            else "is the broker running and the URL right (mqtt:// 1883, mqtts:// 8883)?"
        )
        return Check("fail", "broker", f"cannot connect to {endpoint!r}: {text}; {hint}")
    return Check("ok", "broker", f"connected to {endpoint!r}")


def check_backlog(config: HardwareConfig) -> Check:
    path = config.state_dir / f"{config.meter_id}.outbox.sqlite3"
    if not path.exists():
        return Check("ok", "offline queue", "empty")
    queue = SpoolQueue(path, limits=config.queue_limits)
    try:
        count, size = len(queue), queue.size_bytes
    finally:
        queue.close()
    level: Level = "warn" if count else "ok"
    return Check(level, "offline queue", f"{count} messages ({size >> 10} KiB) waiting for the broker")


async def run_checks(config: HardwareConfig) -> list[Check]:
    checks = [check_clock(), check_state_dir(config.state_dir)]
    checks += check_i2c(config)
    if checks[-1].level != "fail":
        checks += await asyncio.to_thread(check_sensors, config)
    checks.append(await check_broker(config))
    checks.append(check_backlog(config))
    return checks


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emulate-hardware", action="store_true", help="check against emulated chips")
    parser.add_argument("--meter-id", help="meter id (ENERLINK_METER_ID)")


def main(args: argparse.Namespace, env: Env | None = None) -> int:
    try:
        config = HardwareConfig.from_env(env or Env())
    except ConfigError as exc:
        print(f"{_LABEL['fail']} settings: {exc}")
        return 1
    if getattr(args, "emulate_hardware", False):
        config = replace(config, emulate=True)
    if getattr(args, "meter_id", None):
        config = replace(config, meter_id=args.meter_id)
    checks = asyncio.run(run_checks(config))
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.level == "fail"]
    print(
        f"{len(checks) - len(failed)}/{len(checks)} checks passed"
        + ("" if not failed else "; see [FAIL] above")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m enerlink.edge.doctor", description=__doc__)
    configure(parser)
    sys.exit(main(parser.parse_args()))
