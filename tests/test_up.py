"""``enerlink up``: the whole pipeline in one process, as ``make run`` starts it."""

from __future__ import annotations

import json
import time

import redis

from schemas.wire import Keys
from tests.conftest import TEST_REDIS_URL
from tests.support.services import ServiceProcess, free_port


def test_up_runs_the_pipeline_prints_console_lines_and_drains_on_sigterm(environ: dict[str, str]) -> None:
    port = free_port()
    up = ServiceProcess(
        args=["up", "--meters", "2", "--interval", "1", "--port", str(port)], env=environ
    ).start()
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.hlen(keys.latest_data) < 2:
            time.sleep(0.2)
        latest = client.hgetall(keys.latest_data)
        assert sorted(latest) == [b"METER001", b"METER002"], up.output()[-3000:]
        assert json.loads(latest[b"METER001"])["meterId"] == "METER001"
        assert client.zcard(keys.timeseries("METER001")) >= 1
    finally:
        code = up.terminate(timeout=60)
        client.close()
    output = up.output()
    assert code == 0, output[-3000:]
    assert "METER001: solar " in output and ", battery " in output
    assert "up: stopped cleanly" in output
