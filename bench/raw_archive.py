"""Raw-archive footprint: bytes per reading of the raw Parquet objects, bytes per meter-month of the
CSV.gz months, both written by the real code from a simulated fleet (edge/sim, 5 s interval).

In a fresh PostgreSQL schema and Redis key prefix: the fleet's readings of the last ``--hours`` closed
hours are stored in Redis as the ingest keeps them, the raw export runs once (the objects it writes
and lists), the minute rows are computed from the same readings with the aggregator's compute and
archived as a CSV.gz month by the archiver. The floor, measured in the same run: the same readings as
gzip-6 JSON lines (the messages as received). Prints:

    raw Parquet        : bytes/reading (aim <= 100), and its ratio to gzip JSON lines
    CSV.gz minute rows : bytes per meter-month

    .venv/bin/python bench/raw_archive.py                 # 64 meters, 1 hour
    .venv/bin/python bench/raw_archive.py --meters 16 --hours 2
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.aggregator.fromraw import RawReading, recompute  # noqa: E402
from enerlink.aggregator.settings import Settings as AggregatorSettings  # noqa: E402
from enerlink.archiver.job import MonthArchiver  # noqa: E402
from enerlink.archiver.months import Month, archived_table  # noqa: E402
from enerlink.archiver.raw_figures import csv_bytes_per_meter_month, raw_bytes_per_reading  # noqa: E402
from enerlink.archiver.raw_service import raw_now  # noqa: E402
from enerlink.archiver.settings import Settings  # noqa: E402
from enerlink.archiver.storage import open_store  # noqa: E402
from enerlink.config import Env  # noqa: E402
from enerlink.db import migrate  # noqa: E402
from enerlink.schemas.wire import Tables  # noqa: E402
from tests.support.rawdata import HOUR_MS, previous_hour, simulate, store  # noqa: E402

DEFAULT_URL = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ENERLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def bench(meters: int, hours: int, *, url: str) -> None:
    schema = f"bench_raw_{uuid.uuid4().hex[:8]}"
    prefix = f"benchraw{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    sep = "&" if "?" in url else "?"
    scoped = f"{url}{sep}options=-csearch_path%3D{schema}"
    folder = tempfile.mkdtemp(prefix="enerlink-raw-bench-")
    environ = {
        "ENERLINK_DATABASE_URL": scoped,
        "ENERLINK_REDIS_URL": REDIS_URL,
        "ENERLINK_KEY_PREFIX": prefix,
        "ENERLINK_ARCHIVE_DIR": folder,
        "ENERLINK_RAW_EXPORT_GRACE_S": "0",
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await migrate(scoped)
        settings = Settings.from_env(Env(environ))
        first = previous_hour(client) - (hours - 1) * HOUR_MS
        readings = simulate(meters, start_ms=first, seconds=hours * 3600, interval_s=5.0)
        store(client, settings.common.keys, readings)
        floor = len(gzip.compress(b"\n".join(r.message for r in readings), 6)) / len(readings)

        raw_now(settings, open_store(settings.storage), threading.Event())
        aggregator = AggregatorSettings.from_env(Env(environ))
        await recompute(aggregator, [RawReading(r.meter_id, r.at_ms, r.message) for r in readings])
        month = Month.of(datetime.fromtimestamp(first / 1000, UTC))
        with psycopg.connect(scoped, autocommit=True) as conn:
            MonthArchiver(conn=conn, store=open_store(settings.storage)).archive(
                archived_table(Tables.TELEMETRY_AGGREGATES), month
            )
            raw = raw_bytes_per_reading(conn)
            csv = csv_bytes_per_meter_month(conn)
        assert raw is not None and csv is not None
        print(f"{meters} meters x {hours} h at 5 s: {len(readings):,} readings")
        print(f"  raw Parquet          : {raw:6.1f} bytes/reading (aim <= 100)")
        print(f"  gzip-6 JSON lines    : {floor:6.1f} bytes/reading (floor), ratio {raw / floor:.2f}")
        print(f"  CSV.gz minute rows   : {csv / 1e6:6.2f} MB per meter-month")
        print(f"  raw Parquet, a month : {raw * 12 * 1440 * 30 / 1e6:6.2f} MB per meter-month at 5 s")
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=64)
    parser.add_argument("--hours", type=int, default=1, help="closed hours before now (at most 2: Redis)")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    asyncio.run(bench(args.meters, args.hours, url=args.database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
