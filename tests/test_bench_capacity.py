"""bench/capacity.py with tiny numbers against the real services: it measures both aggregation
passes (every meter-minute written once by each), prints the sizing table, and removes what it
created (its PostgreSQL schemas, its Redis server)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-u", str(ROOT / "bench" / "capacity.py"), "--database-url", TEST_DATABASE_URL]


def test_tiny_run_prints_the_sizing_table_and_cleans_up() -> None:
    done = subprocess.run(
        [*BENCH, "--meters", "20", "--minutes", "6"], check=False, capture_output=True, text=True, timeout=180
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    match = re.search(r"services: schemas (\S+) (\S+), (\S+), broker", out)
    assert match, out
    assert re.search(r"ingest: 1,680 messages; CPU per message: worker [\d,]+ us, Redis [\d,]+ us", out), out
    for label in ("1 shard: ", "2 shards:"):  # the bench stops unless each pass wrote 120 minute rows
        assert re.search(rf"aggregate, {label} +[\d.]+ s wall, +[\d,]+ meter-minutes/s; CPU", out), out
    assert "2 shards / 1 shard:" in out
    rows = re.findall(
        r"^ *([\d,]+) \| +([\d,]+) \| +(\d+) \| +(\d+) \| +([\d.,]+ [KMGT]?B) \| +(\d+) \|", out, re.M
    )
    assert [r[:2] for r in rows] == [("10,000", "2,333"), ("100,000", "23,333"), ("1,000,000", "233,333")], (
        out
    )
    assert all(int(r[2]) >= 1 and int(r[3]) >= 1 and int(r[5]) >= 1 for r in rows), rows
    with psycopg.connect(TEST_DATABASE_URL) as conn:
        left = conn.execute(
            "select count(*) from pg_namespace where nspname = any(%s)", ([match.group(1), match.group(2)],)
        ).fetchone()
    assert left == (0,), "a schema was left behind"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", urlparse(match.group(3)).port or 0)) != 0, "its Redis still runs"
