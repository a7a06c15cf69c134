"""Real services for tests: a Mosquitto per need, per-test Redis prefixes and PostgreSQL schemas,
moto's S3 server, and subprocess control of EnerLink services (for kill -9 tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from enerlink.devservices import mosquitto_config, prepare_data_dir
from enerlink.schemas.examples import EXAMPLES_DIR

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = EXAMPLES_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


@dataclass
class Broker:
    """A real Mosquitto started from the project's mosquitto/ configuration on a free port."""

    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="enerlink-mqtt-")))
    extra_conf: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def start(self) -> Broker:
        prepare_data_dir(self.data_dir)
        self.conf_path.write_text(
            mosquitto_config(port=self.port, data_dir=self.data_dir, extra=self.extra_conf), encoding="utf-8"
        )
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf_path)])
        wait_port(self.port)
        return self

    def stop(self, *, sig: int = signal.SIGTERM) -> None:
        """Stop the broker (SIGTERM saves persistence; SIGKILL is a crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, *, sig: int = signal.SIGTERM, down_s: float = 0.0) -> None:
        self.stop(sig=sig)
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        path = self.data_dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class ServiceProcess:
    """An ``enerlink <command>`` subprocess with its own environment (kill -9 tests)."""

    args: list[str]
    env: Mapping[str, str]
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mktemp(prefix="enerlink-svc-", suffix=".log"))
    )
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "enerlink", *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self, *, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
