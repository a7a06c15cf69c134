"""What the minute table would take in other layouts: bytes per meter-minute with the primary key.

    .venv/bin/python bench/footprint.py --keep        # says where it kept the archive folder
    .venv/bin/python bench/row_layouts.py --csv FOLDER/telemetry_aggregates/YYYY/MM.csv.gz

Loads the minute rows of a month file the archiver wrote (real rows of the simulated fleet, as
``bench/footprint.py`` leaves them) into a scratch schema, then builds the minute table in each layout
below from them, one minute at a time in meter order as the aggregator writes it (the primary key
built as it grows, so its pages are as full as on a live table), and prints per layout the average row
(``pg_column_size``), heap and index bytes per row and their sum, against the 500-byte target:

* today's layout (:func:`enerlink.aggregator.columns.table_columns`);
* with an integer meter key (a table of meters) in place of the meter id, in the row and the key;
* and with the energies as 4-byte integers (which would cap a bucket's energy at 21 kWh: the first
  minute after a gap in the readings carries the gap's energy, so the project keeps 8 bytes).

The layouts are what-ifs: nothing here changes the project's tables. The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.aggregator.columns import table_columns  # noqa: E402
from enerlink.db import quote  # noqa: E402
from enerlink.schemas.fields import ENUM_FIELDS  # noqa: E402
from enerlink.schemas.wire import Tables  # noqa: E402

DEFAULT_DB = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TARGET = 500
#: a column of a layout: name, type, the expression that computes it from today's row ``s``
Column = tuple[str, str, str]
_WIDTH = {"timestamptz": 0, "bigint": 0, "double precision": 0, "integer": 1, "real": 1, "smallint": 2}


def _today() -> list[Column]:
    return [(n, t.replace(" not null", ""), quote(n)) for n, t in table_columns("minute")]


def _meter_key(columns: list[Column]) -> list[Column]:
    return [
        ("meter_id", "integer", "k.key") if name == "meter_id" else (name, kind, expr)
        for name, kind, expr in columns
    ]


def _energies_4_bytes(columns: list[Column]) -> list[Column]:
    return [
        (name, "integer", f"{expr}::int") if name.endswith("_energy_10uwh") else (name, kind, expr)
        for name, kind, expr in columns
    ]


def _ordered(columns: list[Column]) -> list[Column]:
    """Widest types first (a 4-byte enum with the 4-byte ones), text last."""
    return sorted(columns, key=lambda c: _WIDTH.get(c[1], 1 if c[1] != "text" else 3))


LAYOUTS: dict[str, Callable[[], list[Column]]] = {
    "today": _today,
    "+ integer meter key": lambda: _meter_key(_today()),
    "+ 4-byte energies": lambda: _energies_4_bytes(_meter_key(_today())),
}


def measure(conn: psycopg.Connection[tuple[object, ...]], columns: list[Column]) -> tuple[float, ...]:
    columns = _ordered(columns)
    conn.execute("drop table if exists layout")
    ddl = ", ".join(f"{quote(n)} {t}" for n, t, _ in columns)
    conn.execute(f"create table layout ({ddl}, primary key (meter_id, bucket))".encode())
    select = ", ".join(expr if "." in expr or "(" in expr else f"s.{expr}" for _, _, expr in columns)
    insert = (
        f"insert into layout select {select} from src s join keys k on k.meter_id = s.meter_id"
        " where s.bucket = %s order by s.meter_id"
    )
    for (bucket,) in conn.execute("select distinct bucket from src order by 1").fetchall():
        conn.execute(insert.encode(), (bucket,))
    row = conn.execute(
        "select count(*), avg(pg_column_size(l.*)), pg_relation_size('layout'), pg_indexes_size('layout')"
        " from layout l"
    ).fetchone()
    assert row is not None
    n, avg, heap, index = (float(v) for v in row)
    return avg, heap / n, index / n, (heap + index) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True, help="a month file of telemetry_aggregates")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    args = parser.parse_args()
    schema = f"bench_layouts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}".encode())
        try:
            conn.execute(f"set search_path = {schema}, public".encode())
            for f in ENUM_FIELDS:  # today's enum types, as migration 0012 creates them
                labels = ", ".join(f"'{v}'" for v in f.values)
                conn.execute(f"create type {quote(Tables.enum_type(f.column))} as enum ({labels})".encode())
            ddl = ", ".join(f"{quote(n)} {t}" for n, t, _ in _today())
            conn.execute(f"create table src ({ddl})".encode())
            with gzip.open(args.csv, "rt") as handle:
                header = handle.readline().strip()
                with conn.cursor().copy(f"copy src ({header}) from stdin (format csv)".encode()) as copy:
                    for line in handle:
                        copy.write(line)
            conn.execute(
                "create table keys as select meter_id, (row_number() over (order by meter_id))::int as key"
                " from (select distinct meter_id from src) m"
            )
            (rows,) = conn.execute("select count(*) from src").fetchone() or (0,)
            print(f"{rows:,} minute rows from {args.csv}")
            print(
                f"{'layout':34s} {'row':>7s} {'heap':>7s} {'key':>7s} {'total':>7s}  (bytes per meter-minute)"
            )
            for name, layout in LAYOUTS.items():
                avg, heap, index, total = measure(conn, layout())
                verdict = "PASS" if total <= TARGET else "ABOVE TARGET"
                figures = f"{avg:7.1f} {heap:7.1f} {index:7.1f} {total:7.1f}"
                print(f"{name:34s} {figures}  target <= {TARGET}: {verdict}")
        finally:
            conn.execute(f"drop schema {schema} cascade".encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
