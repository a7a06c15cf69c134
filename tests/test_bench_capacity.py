"""bench/capacity.py with tiny numbers against the real services: it measures the aggregation
passes (every meter-minute written once by each), prints the sizing table, and removes what it
created (its PostgreSQL server or its schemas on the server given, its Redis server)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

from tests.conftest import TEST_DATABASE_URL

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-u", str(ROOT / "bench" / "capacity.py"), "--meters", "20", "--minutes", "6"]
PASS = r"aggregate, {} +[\d.]+ s wall, +[\d,]+ meter-minutes/s; CPU a meter-minute: aggregator [\d,]+ us"


def _up(url: str) -> bool:
    parsed = urlparse(url)
    with socket.socket() as sock:
        return sock.connect_ex((parsed.hostname or "", parsed.port or 0)) == 0


@pytest.mark.parametrize("server", ["own", "given"])
def test_tiny_run_prints_the_sizing_table_and_cleans_up(server: str) -> None:
    given = ["--database-url", TEST_DATABASE_URL] if server == "given" else ["--repeat", "2"]
    done = subprocess.run([*BENCH, *given], check=False, capture_output=True, text=True, timeout=180)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    match = re.search(r"services: schemas (\S+) (\S+), (\S+), broker \S+, PostgreSQL (\S+)$", out, re.M)
    assert match, out
    assert (match.group(4) == TEST_DATABASE_URL) == (server == "given"), match.group(4)
    assert re.search(r"ingest: 1,680 messages; CPU per message: worker [\d,]+ us, Redis [\d,]+ us", out), out
    # the bench stops unless each pass wrote 120 minute rows
    assert len(re.findall(PASS.format("1 shard: "), out)) == 1, out
    assert len(re.findall(PASS.format("2 shards:"), out)) == 1, out
    assert "2 shards / 1 shard, all " in out
    pinned = (
        len(re.findall(PASS.format("1 shard, 1 core: "), out)),
        len(re.findall(PASS.format("2 shards, 2 cores:"), out)),
    )
    if server == "own" and len(os.sched_getaffinity(0)) >= 2:
        # one shard on one core and two on two, in two rounds (the bench stops unless it could confine
        # each pass's processes, PostgreSQL and Redis to its cores): the ratio of the fastest
        assert pinned == (2, 2), out
        assert re.search(
            r"1 shard on 1 core .*fastest of 2 each: [\d.]+ x: .*\(in turn: [\d.]+, [\d.]+\)", out
        ), out
    else:  # on a server not its own (or one core) it confines nothing
        assert pinned == (0, 0), out
        assert "1 shard on 1 core: not measured" in out
    rows = re.findall(
        r"^ *([\d,]+) \| +([\d,]+) \| +(\d+) \| +(\d+|none) \| +([\d.,]+ [KMGT]?B) \| +(\d+) \|", out, re.M
    )
    assert [r[:2] for r in rows] == [("10,000", "2,333"), ("100,000", "23,333"), ("1,000,000", "233,333")], (
        out
    )
    assert all(int(r[2]) >= 1 and int(r[5]) >= 1 for r in rows), rows
    # shards: a number where the whole reads of the fleet leave time in a shard's minute
    assert rows[0][3].isdigit() and int(rows[0][3]) >= 1, rows
    assert all(r[3] == "none" or int(r[3]) >= 1 for r in rows), rows
    within = r"a shard finishes its minute within 36 s, [\d.]+ us a meter of the fleet of it"
    assert re.search(within, out), out
    if server == "given":
        with psycopg.connect(TEST_DATABASE_URL) as conn:
            left = conn.execute(
                "select count(*) from pg_namespace where nspname like %s", (match.group(1) + "%",)
            ).fetchone()
            left2 = conn.execute(
                "select count(*) from pg_namespace where nspname like %s", (match.group(2) + "%",)
            ).fetchone()
        assert (left, left2) == ((0,), (0,)), "a schema was left behind"
    else:
        assert not _up(match.group(4)), "its PostgreSQL still runs"
    assert not _up(match.group(3)), "its Redis still runs"
