"""Bytes a meter-minute costs in PostgreSQL: the minute row with its share of the primary key, and the
5-minute rollup row, after the real aggregator has written N meters x M minutes (default 100 x 60).

Loads the fixture's data message (12 snapshots a minute, with ``seq``, values moving as in
``bench/aggregate.py``) into Redis under a fresh key prefix and a fresh PostgreSQL schema, then runs
the aggregator once: it catches up minute by minute from the watermark, as a service does after a
pause. Prints, for the minute table and the 5-minute table:

* rows, ``pg_total_relation_size`` (heap, indexes, free space map, visibility map; all partitions)
  and that divided by the rows;
* ``avg(pg_column_size(t.*))``, the row alone.

    .venv/bin/python bench/rowsize.py                       # 100 meters x 60 minutes
    .venv/bin/python bench/rowsize.py --meters 500 --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import reader  # noqa: E402
from aggregator.compute import MINUTE_MS  # noqa: E402
from aggregator.service import run  # noqa: E402
from aggregator.settings import Settings  # noqa: E402
from bench.aggregate import _load  # noqa: E402
from enerlink.config import Env  # noqa: E402
from enerlink.db import migrate  # noqa: E402
from schemas.wire import Tables  # noqa: E402

DEFAULT_DB = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS = os.environ.get("ENERLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _partitions(table: str) -> str:
    """SQL: the table and, when partitioned, its partitions (regclass values)."""
    return (
        f"select to_regclass('{table}') as c union all select i.inhrelid::regclass"
        f" from pg_inherits i where i.inhparent = to_regclass('{table}')"
    )


def measure(url: str, table: str) -> tuple[int, int, float]:
    """Rows, total bytes (every partition, with indexes and maps), average row size."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"select (select count(*) from {table}),"
            f" (select sum(pg_total_relation_size(c)) from ({_partitions(table)}) p),"
            f" (select avg(pg_column_size(t.*)) from {table} t)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2] or 0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args()
    uid = uuid.uuid4().hex[:8]
    schema = f"bench_rows_{uid}"
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
    environ = {
        "ENERLINK_DATABASE_URL": url,
        "ENERLINK_REDIS_URL": args.redis_url,
        "ENERLINK_KEY_PREFIX": f"benchrows{uid}:telemetry",
        "ENERLINK_AGGREGATOR_METRICS_PORT": "0",
        "ENERLINK_AGGREGATE_WORKERS": "1",
    }
    settings = Settings.from_env(Env(environ))
    keys = settings.common.keys
    meters = [f"METER{i:04d}" for i in range(args.meters)]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    r = aioredis.Redis.from_url(args.redis_url)
    try:
        await migrate(url)
        now = await reader.redis_time_ms(r)
        first = now // MINUTE_MS * MINUTE_MS - (args.minutes + 1) * MINUTE_MS
        for k in range(args.minutes):
            await _load(r, keys, meters, minute=first + k * MINUTE_MS, per_meter=12, statuses=0, seq=True)
        with psycopg.connect(url) as conn:  # the aggregator catches up from the minute before
            conn.execute(
                f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
                (datetime.fromtimestamp((first - MINUTE_MS) / 1000, UTC),),
            )
        await run(settings, once=True)
        print(f"{args.meters} meters x {args.minutes} minutes through the aggregator")
        for table in (Tables.TELEMETRY_AGGREGATES, Tables.TELEMETRY_5M):
            rows, size, avg = measure(url, table)
            print(
                f"  {table:26s} {rows:7d} rows  {size:10d} bytes  {size / max(rows, 1):7.1f} bytes/row"
                f"  (row alone: avg(pg_column_size) {avg:.1f})"
            )
    finally:
        await r.delete(*[k async for k in r.scan_iter(match=f"benchrows{uid}:*")] or ["-"])
        await r.aclose()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')


if __name__ == "__main__":
    asyncio.run(main())
