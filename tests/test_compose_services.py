"""Each EnerLink service of docker-compose.yml, run as compose would run it (its command and its
environment, pointed at this test's Mosquitto, Redis and PostgreSQL and with the published ports
moved to free ones), passes the compose file's own health check command, logs only JSON lines
with ``ENERLINK_LOG_FORMAT=json``, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.services import ServiceProcess, free_port
from tests.test_compose import enerlink_services, environment, interpolate

# where compose points a service at the stores; the test's own slice replaces these
_CONNECTIONS = {
    "ENERLINK_MQTT_URL",
    "ENERLINK_REDIS_URL",
    "ENERLINK_DATABASE_URL",
    "ENERLINK_TOPIC_PREFIX",
    "ENERLINK_KEY_PREFIX",
    "ENERLINK_MINIO_ENDPOINT",  # without it the archiver uses its local folder
}
_PORT = re.compile(r"\b(8000|91\d\d)\b")
HEALTHY_WITHIN_S = 60.0


def _remap(text: str, ports: dict[str, str]) -> str:
    return _PORT.sub(lambda m: ports.setdefault(m.group(1), str(free_port())), text)


def _probe(service: dict[str, Any], ports: dict[str, str]) -> list[str]:
    test = [str(part) for part in service["healthcheck"]["test"]]
    assert test[0] == "CMD" and test[1] == "python", test
    return [sys.executable, *(_remap(part, ports) for part in test[2:])]


def _healthy(probe: list[str], process: ServiceProcess) -> bool:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            return False
        if subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0:
            return True
        time.sleep(0.3)
    return False


def test_compose_services_become_healthy_log_json_and_stop_cleanly(environ: dict[str, str], uid: str) -> None:
    started: dict[str, tuple[ServiceProcess, list[str]]] = {}
    for name, service in sorted(enerlink_services().items()):
        ports: dict[str, str] = {}
        env = {
            key: _remap(interpolate(value), ports)
            for key, value in environment(service).items()
            if key not in _CONNECTIONS
        }
        env |= environ | {
            "ENERLINK_LOG_FORMAT": "json",
            "ENERLINK_INGEST_CLIENT_ID": f"ingest-{uid}",
            "ENERLINK_SIM_CLIENT_ID": f"sim-{uid}",
        }
        args = [_remap(interpolate(str(arg)), ports) for arg in service["command"]]
        started[name] = (ServiceProcess(args=args, env=env).start(), _probe(service, ports))
    try:
        unhealthy = [name for name, (process, probe) in started.items() if not _healthy(probe, process)]
    finally:
        codes = {}
        for name, (process, _) in started.items():
            assert process.process is not None
            if process.process.poll() is None:
                codes[name] = process.terminate()
            else:
                codes[name] = process.process.returncode
    outputs = {name: process.output() for name, (process, _) in started.items()}
    assert unhealthy == [], {name: outputs[name][-2000:] for name in unhealthy}
    assert codes == dict.fromkeys(started, 0), {n: outputs[n][-2000:] for n, c in codes.items() if c}
    for name, output in outputs.items():
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines, f"{name} logged nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{name} logged a line that is not JSON: {line!r}")
            assert {"ts", "level", "logger", "msg"} <= set(entry), line
