"""Rows for ``telemetry_aggregates`` (and the events table) in tests and benches: written with plain
SQL into the real tables the migrations create, partitions made by the project's own function."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from enerlink.aggregator.columns import KEY_COLUMNS, MINUTE_KEY_COLUMNS, SEQ_COLUMNS, STAT_COLUMNS
from enerlink.archiver.months import is_partitioned
from enerlink.schemas.fields import ENERGY_CHANNELS
from enerlink.schemas.wire import Tables

#: the minute table's columns that are not statistics
NOT_STATISTICS = frozenset(
    name for name, _ in (*KEY_COLUMNS, *MINUTE_KEY_COLUMNS, *SEQ_COLUMNS, ("seq_last", ""))
)
_REAL = {c.name for c in STAT_COLUMNS if c.sql_type == "real"}
#: relative error of a value rounded to float4 a few times over (a minute, then each rollup level)
REAL_REL = 4 * 2.0**-24


def resolution(column: str) -> float:
    """The relative tolerance a stored statistic is compared with: a few float4 roundings for a
    ``real`` column, none to speak of for the others (double precision: exact sums and copies)."""
    return REAL_REL if column in _REAL else 1e-9


def with_served(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` plus what the API serves computed from it: each bool's share ``*_ratio`` (its count
    over ``sample_count``), each channel's energy in Wh ``*_energy_wh`` (its 10 uWh units) and
    current (its power over its voltage), and a minute row's times and last ``seq`` (from their
    offsets)."""
    out = dict(row)
    for name, offset in Tables.MINUTE_OFFSETS.items():
        if offset in row:
            out[name] = row["bucket"] + timedelta(milliseconds=row[offset])
    if "seq_span" in row:
        out["seq_last"] = None if row["seq_span"] is None else row["seq_first"] + row["seq_span"]
    for sub in ENERGY_CHANNELS:
        power, volts, current = (f"{sub}_{quantity}_avg" for quantity in ("power", "voltage", "current"))
        if current not in row and power in row and volts in row:
            p, v = row[power], row[volts]
            out[current] = None if p is None or v is None else p / v if v else (0.0 if p == 0 else None)
    for name, value in row.items():
        if name.endswith("_count") and name not in NOT_STATISTICS and value is not None:
            out[name.removesuffix("_count") + "_ratio"] = (
                value / row["sample_count"] if row["sample_count"] else None
            )
        elif name.endswith("_energy_10uwh") and value is not None:
            out[name.removesuffix("_energy_10uwh") + "_energy_wh"] = value / Tables.ENERGY_UNITS_PER_WH
    return out


def as_before_minute18(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of today's tables as the release before migration 0014 stored it: the minute row's
    times and last ``seq`` as they are, a channel's current average (its power over its voltage
    stands in), the SOC's and charge rate's extremes (their average stands in)."""
    served = with_served(dict(row))
    out = {k: v for k, v in served.items() if k not in (*Tables.MINUTE_OFFSETS.values(), "seq_span")}
    out = {k: v for k, v in out.items() if not k.endswith(("_ratio", "_energy_wh"))}
    if "seq_span" not in row:
        out.pop("seq_last", None)
    for name in ("battery_soc", "battery_charge_rate"):
        if f"{name}_avg" in out:
            out[f"{name}_min"] = out[f"{name}_max"] = out[f"{name}_avg"]
    return out


def as_before_compact(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of today's tables as the release before migration 0012 stored it: shares instead of
    counts, Wh instead of 10 uWh units, a channel's current extremes (gone since: its average stands
    in)."""
    out: dict[str, Any] = {}
    for name, value in with_served(as_before_minute18(row)).items():
        if (name.endswith("_count") and name not in NOT_STATISTICS) or name.endswith("_energy_10uwh"):
            continue
        out[name] = value
        if name.endswith("_current_avg"):
            out[name.replace("_avg", "_min")] = out[name.replace("_avg", "_max")] = value
    return out


def columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = current_schema() and table_name = %s order by ordinal_position",
        (table,),
    ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def ensure_partition(conn: psycopg.Connection[Any], table: str, at: datetime) -> str:
    row = conn.execute(
        sql.SQL("select {}(%s, %s)").format(sql.Identifier(Tables.ENSURE_MONTH_PARTITION)), (table, at)
    ).fetchone()
    assert row is not None
    return str(row[0])


def month_partitions(url: str, table: str) -> dict[str, list[str] | None]:
    """``table``'s partitions by name, with their storage options."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select c.relname, c.reloptions from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = to_regclass(format('%%I', %s::text))",
            (table,),
        ).fetchall()
    return {str(name): options for name, options in rows}


def insert_rows(
    url: str, table: str, rows: Iterable[Mapping[str, Any]], *, time_column: str = "bucket"
) -> int:
    count = 0
    with psycopg.connect(url) as conn:
        offsets = "first_ms" in dict(columns(conn, table))
        for given in rows:
            row = as_minute_row(given) if offsets else given
            if table in Tables.MONTHLY_PARTITIONED and is_partitioned(conn, table):
                ensure_partition(conn, table, row[time_column])
            names = list(row)
            conn.execute(
                sql.SQL("insert into {} ({}) values ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, names)),
                    sql.SQL(", ").join(sql.Placeholder() * len(names)),
                ),
                [row[n] for n in names],
            )
            count += 1
    return count


def as_minute_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its times and last ``seq`` as the minute table stores them (migration 0014)."""
    out = {k: v for k, v in row.items() if k not in ("first_at", "last_at", "seq_last")}
    for name, offset in Tables.MINUTE_OFFSETS.items():
        if name in row:
            out[offset] = round((row[name] - row["bucket"]).total_seconds() * 1000)
    if row.get("seq_last") is not None:
        out["seq_span"] = row["seq_last"] - row["seq_first"]
    return out


def aggregate_row(meter_id: str, bucket: datetime, **stats: Any) -> dict[str, Any]:
    return {
        "meter_id": meter_id,
        "bucket": bucket,
        "sample_count": stats.pop("sample_count", 12),
        "first_at": bucket,
        "last_at": bucket + timedelta(seconds=55),
        **stats,
    }


def fill_month(url: str, *, start: datetime, rows: int, meters: int | None = None) -> int:
    """``rows`` random aggregate rows (every statistic column filled) in ``start``'s month, generated
    server-side; returns the rows inserted."""
    meters = meters or max(10, rows // 40_000 + 1)  # one row per meter-minute within the month
    with psycopg.connect(url) as conn:
        ensure_partition(conn, Tables.TELEMETRY_AGGREGATES, start)
        select: list[sql.Composable] = []
        for name, kind in columns(conn, Tables.TELEMETRY_AGGREGATES):
            if name == "meter_id":
                select.append(sql.SQL("'M' || lpad(mod(g, {})::text, 4, '0')").format(sql.Literal(meters)))
            elif name == "bucket":
                select.append(
                    sql.SQL("%(start)s::timestamptz + (g / {}) * interval '1 minute'").format(
                        sql.Literal(meters)
                    )
                )
            elif name in ("first_at", "last_at"):
                select.append(
                    sql.SQL(
                        "%(start)s::timestamptz + (g / {}) * interval '1 minute' + interval '5 s'"
                    ).format(sql.Literal(meters))
                )
            elif name in ("first_ms", "last_ms"):
                select.append(sql.SQL("5000"))
            elif name == "sample_count":
                select.append(sql.SQL("12"))
            elif kind == "text":
                select.append(sql.SQL("'importing'"))
            elif kind == "USER-DEFINED":  # a state's enum (migration 0012): its first label
                enum = sql.Identifier(name.removesuffix("_last"))
                select.append(sql.SQL("(enum_range(null::{}))[1]").format(enum))
            elif kind in ("integer", "bigint"):
                select.append(sql.SQL("(random() * 100)::int"))
            else:
                select.append(sql.SQL("round((random() * 1000)::numeric, 3)::float8"))  # meter-like digits
        query = sql.SQL("insert into {} select {} from generate_series(0, %(n)s - 1) as g").format(
            sql.Identifier(Tables.TELEMETRY_AGGREGATES), sql.SQL(", ").join(select)
        )
        cur = conn.execute(query, {"start": start, "n": rows})
        return cur.rowcount
