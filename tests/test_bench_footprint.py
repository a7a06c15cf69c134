"""bench/footprint.py with tiny numbers against the real services: it prints every figure, and
removes what it created (PostgreSQL schema, its Redis server, broker, archive folder), also when
stopped half-way."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-u", str(ROOT / "bench" / "footprint.py"), "--database-url", TEST_DATABASE_URL]
NUMBER = r"[\d,]+(?:\.\d+)?"
FIGURES = (
    ("redis per data snapshot", "snapshot", True),
    ("redis per status snapshot", "snapshot", False),
    ("redis latest data+status hashes", "meter", False),
    ("redis seq records", "meter", False),
    ("redis meters/gaps/presence/due", "meter", False),
    ("redis steady state (2 h window)", "meter", False),
    ("postgresql minute", "meter-minute", True),
    ("postgresql 5-minute rollup", "5-min row", True),
    ("postgresql hourly folded", "hour row", False),
    ("postgresql daily folded", "day row", False),
    ("archive CSV.gz per meter-month", "meter-month", False),
)


def _created(out: str) -> tuple[str, int, Path]:
    match = re.search(r"services: schema (\S+), (\S+), broker \S+, folder (\S+)", out)
    assert match, out
    return match.group(1), urlparse(match.group(2)).port or 0, Path(match.group(3))


def _gone(schema: str, port: int, folder: Path) -> None:
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        row = conn.execute("select count(*) from pg_namespace where nspname = %s", (schema,)).fetchone()
    assert row == (0,), f"schema {schema} left behind"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"the bench's Redis on {port} still runs"
    assert not folder.exists()


def test_tiny_run_prints_every_figure_and_cleans_up() -> None:
    done = subprocess.run(
        [*BENCH, "--meters", "3", "--minutes", "15"], check=False, capture_output=True, text=True, timeout=120
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # every reading went through the ingest and every meter-minute through the aggregator
    assert "540 data + 90 status snapshots of 3 meters" in out
    assert re.search(r"telemetry_aggregates: 45 rows", out), out
    assert "archive: 45 minute rows" in out
    for label, unit, target in FIGURES:
        line = next((x for x in out.splitlines() if x.startswith(label)), None)
        assert line is not None, f"{label!r} missing:\n{out}"
        assert re.search(rf"{NUMBER} B/{re.escape(unit)}\s", line), line
        assert "per meter-year" in line or "held per meter" in line, line
        assert ("target <= " in line and re.search(r": (PASS|ABOVE TARGET)$", line)) or not target, line
    # the loaded quarter of an hour holds a closed hour (raw-exported) or not, by the clock
    raw = next(x for x in out.splitlines() if x.startswith("raw archive per reading"))
    assert raw.endswith("n/a (no closed hour among the loaded readings)") or re.search(
        rf"{NUMBER} B/reading .*target <= 100: (PASS|ABOVE TARGET)$", raw
    ), raw
    assert re.search(r"raw export: [\d,]+ readings of [01] closed hour\(s\)", out), out
    assert re.search(r"floor: \d+ numbers per data message x 4 B = \d+ B per reading", out)
    _gone(*_created(out))


def test_stopped_half_way_cleans_up() -> None:
    proc = subprocess.Popen(
        [*BENCH, "--meters", "200", "--minutes", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    while not (lines and lines[-1].startswith("load:")):
        lines.append(proc.stdout.readline())
        assert lines[-1], "".join(lines)
    time.sleep(1.0)  # publishing
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=180)  # cleaning up under a loaded machine; only guards a hang
    out = "".join(lines) + rest
    assert proc.returncode != 0, out
    assert "postgresql minute" not in out
    _gone(*_created(out))
