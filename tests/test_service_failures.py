"""Services facing what they cannot use, as an operator starts them: a port taken, PostgreSQL or Redis
out of reach. One line says what is wrong (no traceback), a signal still stops them at once with exit 0,
and a bounded run that cannot do its work exits 1."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from enerlink.edge.counters import Counters
from tests.support.services import ServiceProcess, free_port


def _closed_port() -> int:
    return free_port()  # nothing listens on it


def test_api_on_a_port_already_taken_says_so_and_exits_1(environ: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = ServiceProcess(["api", "--host", "127.0.0.1", "--port", str(port)], env=environ).start()
        assert api.process is not None
        code = api.process.wait(timeout=60)
    output = api.output()
    assert code == 1, output
    assert f"api: stopped by an error: ApiStartError: cannot listen on 127.0.0.1:{port}" in output, output
    assert "Traceback" not in output, output


def test_api_waiting_for_postgresql_stops_at_once_on_sigterm(environ: dict[str, str]) -> None:
    unreachable = {**environ, "ENERLINK_DATABASE_URL": f"postgresql://root@127.0.0.1:{_closed_port()}/none"}
    api = ServiceProcess(["api", "--host", "127.0.0.1", "--port", str(free_port())], env=unreachable).start()
    deadline = time.monotonic() + 30
    while "not reachable" not in api.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    started = time.monotonic()
    code = api.terminate(timeout=30)
    output = api.output()
    assert code == 0 and time.monotonic() - started < 5, output
    assert "api: stopped cleanly" in output and "Traceback" not in output, output


def test_a_bounded_aggregation_without_redis_exits_1_with_one_line(environ: dict[str, str]) -> None:
    unreachable = {**environ, "ENERLINK_REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    job = ServiceProcess(["aggregate", "--once"], env=unreachable).start()
    assert job.process is not None
    code = job.process.wait(timeout=120)
    output = job.output()
    assert code == 1, output
    assert "aggregate: stopped by an error: " in output and "Connection" in output, output
    assert "Traceback" not in output, output


def test_the_emulated_hardware_meter_once_publishes_one_reading_and_exits(environ: dict[str, str]) -> None:
    edge = ServiceProcess(
        ["edge", "--emulate-hardware", "--meter-id", "ONCE1", "--once"], env=environ
    ).start()
    assert edge.process is not None
    code = edge.process.wait(timeout=60)
    output = edge.output()
    assert code == 0, output
    counters = Counters(Path(environ["ENERLINK_STATE_DIR"]) / "ONCE1.counters.sqlite3")
    assert counters.state.seq == 1
    counters.close()
