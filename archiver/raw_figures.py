"""Archive footprint figures, from the manifests: what a reading costs as raw Parquet, and what a
meter-month of minute rows costs as the archived CSV.gz months.

    from enerlink.archiver.raw_figures import raw_bytes_per_reading, csv_bytes_per_meter_month
"""

from __future__ import annotations

import calendar
from datetime import date

from psycopg import sql

from enerlink.archiver.months import Conn
from enerlink.schemas.wire import Tables


def raw_bytes_per_reading(conn: Conn, *, first: date | None = None, last: date | None = None) -> float | None:
    """Bytes of the raw objects per reading they hold (days ``first``..``last``, inclusive; None: all);
    None when nothing is archived."""
    row = conn.execute(
        sql.SQL(
            "select sum(size_bytes), sum(row_count) from {}"
            " where (%s::date is null or day >= %s) and (%s::date is null or day <= %s)"
        ).format(sql.Identifier(Tables.RAW_MANIFEST)),
        (first, first, last, last),
    ).fetchone()
    if row is None or not row[1]:
        return None
    size: int = int(row[0])  # type: ignore[call-overload]
    count: int = int(row[1])  # type: ignore[call-overload]
    return size / count


def csv_bytes_per_meter_month(conn: Conn, *, table: str = Tables.TELEMETRY_AGGREGATES) -> float | None:
    """Bytes of the archived CSV.gz months of ``table`` (one row per meter-minute) per meter-month:
    their bytes per row times the minutes of their months (a meter reporting every minute of a
    month). None when no month is archived."""
    rows = conn.execute(
        sql.SQL("select year, month, row_count, size_bytes from {} where table_name = %s").format(
            sql.Identifier(Tables.ARCHIVE_MANIFEST)
        ),
        (table,),
    ).fetchall()
    size = sum(int(r[3]) for r in rows)  # type: ignore[call-overload]
    meter_months = sum(
        int(r[2]) / (calendar.monthrange(int(r[0]), int(r[1]))[1] * 1440)  # type: ignore[call-overload]
        for r in rows
    )
    return size / meter_months if meter_months else None
