"""Schemathesis against the live API (``enerlink api`` subprocess, real Redis and PostgreSQL):
generated requests for every operation in the OpenAPI document find no server error."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis

from enerlink.db import migrate
from enerlink.schemas.wire import Keys, Tables
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.services import ServiceProcess, free_port, wait_port

ST = Path(sys.executable).with_name("st")
#: Operations that wait for a meter's (or the simulated fleet's) answer and answer 504 when none comes
#: (nobody answers here): excluded from the fuzz; tests/test_commands_api.py, tests/test_settlements.py
#: and tests/test_simulation_api.py cover them.
DEVICE_POSTS = (
    "POST /commands",
    "POST /meters/{meter_id}/commands",
    "POST /meters/{meter_id}/settlements",
    "POST /simulation/start",
    "POST /simulation/stop",
)


def test_schemathesis_finds_no_server_errors(
    environ: dict[str, str], database_url: str, data_fixture_bytes: bytes, status_fixture_bytes: bytes
) -> None:
    asyncio.run(migrate(database_url))
    Path(environ["ENERLINK_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    with redis.Redis.from_url(environ["ENERLINK_REDIS_URL"]) as client:
        client.hset(keys.latest_data, "METER001", data_fixture_bytes)
        client.hset(keys.latest_status, "METER001", status_fixture_bytes)
        client.hset(keys.meters, "METER001", int(time.time() * 1000))
        client.hset(keys.presence, "METER001", json.dumps({"online": True, "since": 0}))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    insert_rows(
        database_url,
        Tables.TELEMETRY_AGGREGATES,
        [aggregate_row("METER001", now - timedelta(minutes=i), battery_soc_avg=80.0 + i) for i in range(5)],
    )
    port = free_port()
    token = "schemathesis-token"
    service = ServiceProcess(
        args=["api", "--port", str(port)],
        env={**environ, "ENERLINK_API_TOKEN": token, "ENERLINK_COMMAND_TIMEOUT_S": "2"},
    ).start()
    try:
        wait_port(port, timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        result = subprocess.run(
            [
                str(ST),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "not_a_server_error",
                *(arg for name in DEVICE_POSTS for arg in ("--exclude-name", name)),
                "--max-examples",
                "25",
                "--header",
                f"Authorization: Bearer {token}",
                "--seed",
                "1",
                "--no-color",
                "--request-timeout",
                "10",
                "--generation-database",
                "none",
                "--report-dir",
                str(Path(environ["ENERLINK_STATE_DIR"]) / "schemathesis"),
            ],
            cwd=environ["ENERLINK_STATE_DIR"],  # schemathesis keeps a cache in its working directory
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, (
            result.stdout[-6000:] + result.stderr[-2000:] + service.output()[-3000:]
        )
        selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
        tested = re.search(r"Tested: (\d+)", result.stdout)
        assert selected and tested, result.stdout
        # every operation but the device-contacting POSTs is selected, and every selected one tested
        assert selected.group(1) == tested.group(1) and int(tested.group(1)) >= 9, result.stdout
        assert int(selected.group(2)) - int(selected.group(1)) == len(DEVICE_POSTS), result.stdout
    finally:
        assert service.terminate() == 0, service.output()[-3000:]
