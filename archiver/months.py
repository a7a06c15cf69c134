"""Which tables are archived, calendar months, and finding the months that are due."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

import psycopg
from psycopg import sql

from enerlink.schemas.wire import Tables

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class ArchivedTable:
    name: str
    time_column: str  # rows belong to the UTC month of this column


ARCHIVED_TABLES: tuple[ArchivedTable, ...] = (
    ArchivedTable(Tables.TELEMETRY_AGGREGATES, "bucket"),
    ArchivedTable(Tables.EVENTS, "at"),
    # the rollups, each with a retention of its own (kept for ever by default): the complete 5-minute
    # buckets and the folded hours and days (the open buckets and the unfolded rows are recent)
    ArchivedTable(Tables.TELEMETRY_5M_CLOSED, "bucket"),
    ArchivedTable(Tables.TELEMETRY_1H_FOLDED, "bucket"),
    ArchivedTable(Tables.TELEMETRY_1D_FOLDED, "bucket"),
)


def archived_table(name: str) -> ArchivedTable:
    for table in ARCHIVED_TABLES:
        if table.name == name:
            return table
    raise KeyError(name)


@dataclass(frozen=True, slots=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Self:
        match = re.fullmatch(r"(\d{4})-(\d{1,2})", text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"{text!r} is not a month like 2025-10")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, moment: datetime) -> Self:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def cutoff(now: datetime, retention_days: int) -> datetime:
    """Rows older than this may be archived; a month is due when it ends at or before it."""
    return now - timedelta(days=retention_days)


def table_exists(conn: Conn, name: str) -> bool:
    row = conn.execute("select to_regclass(format('%%I', %s::text)) is not null", (name,)).fetchone()
    return bool(row and row[0])


def is_partitioned(conn: Conn, name: str) -> bool:
    row = conn.execute(
        "select exists(select 1 from pg_partitioned_table"
        " where partrelid = to_regclass(format('%%I', %s::text)))",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def partitions(conn: Conn, name: str) -> dict[Month, str]:
    """Monthly partitions of ``name`` by month, recognised by ``Tables.month_partition`` naming."""
    rows = conn.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = to_regclass(format('%%I', %s::text))",
        (name,),
    ).fetchall()
    found: dict[Month, str] = {}
    pattern = re.compile(re.escape(name) + r"_p(\d{4})(\d{2})")
    for (relname,) in rows:
        match = pattern.fullmatch(str(relname))
        if match:
            month = Month(int(match.group(1)), int(match.group(2)))
            if relname == Tables.month_partition(name, month.year, month.month):
                found[month] = str(relname)
    return found


def months_due(conn: Conn, table: ArchivedTable, *, before: datetime) -> list[Month]:
    """Every month of ``table`` that ends at or before ``before`` and still has a partition or rows."""
    if not table_exists(conn, table.name):
        return []
    limit = Month.of(before).start  # a month ends at or before ``before`` iff it ends by this
    due: set[Month] = set()
    if is_partitioned(conn, table.name):
        due.update(m for m in partitions(conn, table.name) if m.end <= limit)
    else:
        query = sql.SQL(
            "select distinct date_trunc('month', {t} at time zone 'UTC') from {table} where {t} < %s"
        ).format(t=sql.Identifier(table.time_column), table=sql.Identifier(table.name))
        for (start,) in conn.execute(query, (limit,)).fetchall():
            assert isinstance(start, datetime)
            due.add(Month(start.year, start.month))
    return sorted(due)
