"""What the minute table's primary key costs a row on a long-lived month, as written and packed.

    .venv/bin/python bench/key_growth.py [--meters 200] [--minutes 3000]

Writes ``--meters`` rows a minute for ``--minutes`` minutes, minute after minute in meter order as the
aggregator does, into the real minute table of a scratch schema (only the columns the key needs are
filled: the key does not depend on the others), then packs the month's key with the archiver's own
code (:func:`enerlink.archiver.packing.pack_partition`) and prints the key's bytes per row before and
after, against the floor: the entries themselves (an 8-byte index tuple header, the meter id and the
bucket, 8-byte aligned, and a 4-byte line pointer) on full 8 kB pages. ``bench/footprint.py`` loads
an hour only: a key that young is still about three quarters full, this one shows where it settles.
The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.archiver.months import Month  # noqa: E402
from enerlink.archiver.packing import pack_partition  # noqa: E402
from enerlink.db import migrate  # noqa: E402
from enerlink.schemas.wire import Tables  # noqa: E402

DEFAULT_DB = os.environ.get("ENERLINK_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PAGE, USABLE = 8192, 8192 - 24 - 16  # a btree leaf page and what its header and special space leave


def _key_bytes(conn: psycopg.Connection[tuple[object, ...]], partition: str) -> int:
    row = conn.execute(
        "select pg_relation_size(indexrelid) from pg_index where indrelid = to_regclass(%s) and indisprimary",
        (partition,),
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def _floor(conn: psycopg.Connection[tuple[object, ...]], table: str) -> float:
    """The entries' own bytes a row on full pages (short text header of 1 byte, 8-byte alignment)."""
    row = conn.execute(
        sql.SQL(
            "select avg(((8 + ((1 + octet_length(meter_id) + 7) / 8) * 8 + 8 + 7) / 8) * 8 + 4) from {}"
        ).format(sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return float(row[0]) * PAGE / USABLE  # type: ignore[arg-type]


def run(url: str, *, meters: int, minutes: int) -> None:
    month = Month.of(datetime.now(UTC))
    table = Tables.TELEMETRY_AGGREGATES
    partition = Tables.month_partition(table, month.year, month.month)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("select {}(%s, %s)").format(sql.Identifier(Tables.ENSURE_MONTH_PARTITION)),
            (table, month.start),
        )
        began = time.monotonic()
        insert = sql.SQL(
            "insert into {} (meter_id, bucket, sample_count, first_ms, last_ms)"
            " select 'METER' || lpad(m::text, 5, '0'), b, 12, 0, 55000"
            " from generate_series(1, %s) as m, (select %s::timestamptz as b) t order by m"
        ).format(sql.Identifier(table))
        for minute in range(minutes):
            conn.execute(insert, (meters, month.start + timedelta(minutes=minute)))
        rows = meters * minutes
        written = _key_bytes(conn, partition)
        took = time.monotonic() - began
        print(f"{rows:,} rows ({meters:,} meters x {minutes:,} minutes) written in {took:.1f} s")
        floor = _floor(conn, table)
        result = pack_partition(conn, table=table, month=month, partition=partition, stop=threading.Event())
        assert result is not None
        packed = _key_bytes(conn, partition)
    print(f"{'floor: the entries on full pages':<40} {floor:6.1f} B a row")
    for label, size in (
        ("key as written (minute after minute)", written),
        ("key packed (the nightly run)", packed),
    ):
        print(f"{label:<40} {size / rows:6.1f} B a row   {size / rows / floor:4.2f}x floor")
    print(f"packing: {result.seconds:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=3000, help="at most a month (44,640)")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    args = parser.parse_args()
    schema = f"bench_keys_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
    try:
        asyncio.run(migrate(url))
        run(url, meters=args.meters, minutes=min(args.minutes, 28 * 1440))
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
