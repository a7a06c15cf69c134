"""``enerlink up``: the whole pipeline in one process, as ``make run`` starts it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from enerlink.schemas.wire import Keys
from tests.conftest import TEST_REDIS_URL
from tests.support.services import ROOT, ServiceProcess, free_port

SERVICES = ("ingest", "aggregator", "archiver", "api", "console", "edge")


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


def _process_group(pgid: int) -> list[int]:
    """The live processes of a process group (zombies not counted)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_drains_quietly_when_its_whole_process_group_is_signalled(
    environ: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C in a terminal signals the whole process group (the aggregator's worker processes too),
    as a service manager may: every service drains, the exit code is 0, no traceback anywhere."""
    log_path = tmp_path / "up.log"
    args = ["up", "--meters", "3", "--interval", "1", "--port", str(free_port())]
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "enerlink", *args],
            env={**os.environ, **environ},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            client.hlen(keys.latest_data) == 3
            and client.zcard(keys.timeseries("METER003")) >= 2
            and "enerlink.aggregator.job: aggregate:" in log_path.read_text()
        ):
            time.sleep(0.2)
        assert client.hlen(keys.latest_data) == 3, log_path.read_text()[-3000:]
        group = _process_group(up.pid)
        assert len(group) > 1, group  # the worker processes the signal reaches too
    finally:
        if up.poll() is None:
            os.killpg(up.pid, sig)
        code = up.wait(timeout=60)
        client.close()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-5000:]
    assert f"up: {sig.name} received, draining" in output
    for service in SERVICES:
        assert f"up: {service} stopped" in output, service
    assert re.search(r"ingest: \d+ messages in \d+ batches", output)  # the drain summaries
    assert "simulator stopped: " in output
    assert output.rstrip().endswith("up: stopped cleanly"), output[-2000:]
    deadline = time.monotonic() + 10
    while _process_group(up.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _process_group(up.pid) == []  # nothing of it stays behind


def _caught(pid: int, sig: signal.Signals) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_while_a_service_still_starts_is_quiet(environ: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C before the service runner takes SIGINT/SIGTERM over (the subcommand's modules still
    importing): exit 130 with one line, no traceback."""
    log_path = tmp_path / "aggregate.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "enerlink", "aggregate"],
            env={**os.environ, **environ},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    started = False
    try:
        # The subcommand's modules importing (psycopg's library is in), the runner not yet there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _loaded(proc.pid, "psycopg"):
            time.sleep(0.002)
        started = _caught(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM if started else signal.SIGINT)
    finally:
        code = proc.wait(timeout=60)
    if started:
        pytest.skip("the service started before the signal could be sent")  # a very fast machine
    output = log_path.read_text()
    assert code == 130, output
    assert "enerlink: interrupted (aggregate)" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
