"""deploy/raspberry-pi: the install script (shellcheck, a dry run into a temporary root) and the
systemd unit (systemd-analyze verify). CI needs: apt-get install -y shellcheck systemd."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from enerlink.config import Env
from enerlink.edge.hardware.runner import HardwareConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "raspberry-pi"
SCRIPT = DEPLOY / "install.sh"
UNIT = DEPLOY / "enerlink-edge.service"


def _dry_run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--root", str(root), "-y", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def _env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install -y shellcheck)"
)
def test_install_script_passes_shellcheck() -> None:
    result = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_writes_settings_and_unit_into_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _dry_run(
        root,
        "--meter-id",
        "METER042",
        "--broker-url",
        "mqtts://broker.example:8883",
        "--username",
        "meter 42",
        "--password",
        "p@ss:w/rd&x",
        "--timezone",
        "Asia/Jakarta",
        "--interval",
        "10",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # System-changing commands are printed, not run.
    assert "+ useradd --system" in out and "enerlink" in out
    assert "venv/bin/pip install" in out and "\\[edge\\]" in out
    assert "+ systemctl enable --now enerlink-edge.service" in out
    env_path = root / "etc" / "enerlink" / "edge.env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o640
    values = _env_file(env_path)
    assert values["ENERLINK_METER_ID"] == "METER042"
    assert values["ENERLINK_TIMEZONE"] == "Asia/Jakarta"
    assert values["ENERLINK_EDGE_INTERVAL"] == "10"
    assert values["ENERLINK_STATE_DIR"] == "/var/lib/enerlink"
    # The settings the service builds from that file: credentials survive URL encoding.
    config = HardwareConfig.from_env(Env(values))
    assert config.meter_id == "METER042" and config.interval_s == 10.0
    mqtt = config.common.mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("broker.example", 8883, True)
    assert (mqtt.username, mqtt.password) == ("meter 42", "p@ss:w/rd&x")
    unit = (root / "etc" / "systemd" / "system" / "enerlink-edge.service").read_text()
    assert unit == UNIT.read_text()  # default prefix and user: installed unchanged
    # Nothing outside the root was needed: the package install was only printed.
    assert not (root / "opt" / "enerlink" / "venv").exists()


def test_dry_run_custom_prefix_and_user_rewrite_the_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _dry_run(
        root, "--meter-id", "M1", "--prefix", "/srv/el", "--user", "meter", "--emulate", "--no-start"
    )
    assert result.returncode == 0, result.stderr
    unit = (root / "etc" / "systemd" / "system" / "enerlink-edge.service").read_text()
    assert "ExecStart=/srv/el/venv/bin/python -m enerlink.edge.hardware" in unit
    assert "User=meter" in unit and "Group=meter" in unit
    assert "systemctl enable" not in result.stdout
    assert _env_file(root / "etc" / "enerlink" / "edge.env")["ENERLINK_EDGE_EMULATE"] == "true"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meter-id", "bad id/1"], "meter id"),
        (["--meter-id", "M1", "--broker-url", "http://x"], "broker URL"),
        (["--meter-id", "M1", "--timezone", "Mars/Olympus"], "time zone"),
        ([], "meter id"),
    ],
)
def test_bad_input_is_refused_in_plain_words(tmp_path: Path, args: list[str], message: str) -> None:
    result = _dry_run(tmp_path / "root", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_unit_has_what_an_unattended_service_needs() -> None:
    unit = UNIT.read_text()
    for line in (
        "Restart=always",
        "WatchdogSec=60",
        "Type=notify",
        "User=enerlink",
        "EnvironmentFile=/etc/enerlink/edge.env",
        "StandardOutput=journal",
        "StateDirectory=enerlink",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines(), line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _dry_run(root, "--meter-id", "M1").returncode == 0
    # verify resolves dependencies and ExecStart inside --root: give it the host's unit files
    # (copied, since their symlinks are absolute) and the interpreter the unit starts.
    units = root / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    for source in Path("/usr/lib/systemd/system").iterdir():
        if source.is_file():
            shutil.copyfile(source, units / source.name)
    python = root / "opt" / "enerlink" / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/enerlink-edge.service"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    ours = [line for line in result.stderr.splitlines() if "enerlink-edge" in line]
    assert result.returncode == 0 and not ours, result.stderr
