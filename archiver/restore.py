"""Restoring an archived (table, month) into PostgreSQL, refusing a damaged object with a clear reason.

The object is checked against its manifest row before anything is written (it exists, it has the
recorded size, its CSV header is the recorded column list), then streamed through gunzip into COPY
inside the caller's transaction while its sha256 is computed; the digest and the row count are
compared with the manifest before the manifest row is deleted. Any problem raises
:class:`RestoreError` naming the object and the problem (``problem`` is a short label for the
counter); the transaction then rolls back, so the database is as it was. When loading fails, the
rest of the object is still hashed, so a damaged object is reported as such (sha256 mismatch)
rather than by the first bad line it happens to contain.

A month of ``telemetry_aggregates`` archived before migration 0010 (narrow rows), 0012 (compact
rows) or 0014 (minute rows of 18 a page) has columns of the minute table's past (those migrations
0001 and 0012 created, which the table no longer has): it is loaded through a temporary table, each
column the table still has cast to its type, the settings' last values, the counts, the energies,
the times' and the last ``seq``'s offsets computed as the migrations compute them, and the columns
they dropped left out (copies, sums and differences of channels, statistics of counters, the
current, the SOC's and charge rate's extremes: docs/data-model.md).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors, sql

from enerlink.archiver.job import ArchiveError, Stopped
from enerlink.archiver.months import ArchivedTable, Conn, Month, is_partitioned
from enerlink.archiver.storage import ObjectStore
from enerlink.db import discover
from enerlink.schemas.fields import BOOL_FIELDS, ENERGY_CHANNELS
from enerlink.schemas.wire import Tables

#: every ``RestoreError.problem`` (the label values of the failure counter)
PROBLEMS = (
    "not_archived",
    "missing_object",
    "size_mismatch",
    "read_failed",
    "not_gzip",
    "truncated",
    "bad_header",
    "bad_row",
    "bad_value",
    "conflict",
    "sha256_mismatch",
    "row_count",
    "busy",
)
_MAX_HEADER = 64 * 1024


class RestoreError(ArchiveError):
    """A month could not be restored; the message names the object and the problem."""

    def __init__(self, problem: str, where: str, detail: str) -> None:
        assert problem in PROBLEMS, problem
        super().__init__(f"{where}: {detail}")
        self.problem = problem
        self.detail = detail


class _Reader:
    """The object's chunks, gunzipped, with the sha256 of the raw bytes read so far."""

    def __init__(self, chunks: Iterator[bytes], where: str) -> None:
        self._chunks = chunks
        self._where = where
        self._inflate = zlib.decompressobj(31)  # gzip only
        self.digest = hashlib.sha256()
        self.raw = 0

    def _next_raw(self) -> bytes | None:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return None
        except Exception as exc:  # the store's own errors (S3, file system) at this one boundary
            raise RestoreError(
                "read_failed", self._where, f"reading failed after {self.raw} bytes: {exc}"
            ) from exc
        self.digest.update(chunk)
        self.raw += len(chunk)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._next_raw()) is not None:
            try:
                data = self._inflate.decompress(chunk)
            except zlib.error as exc:
                if self.raw == len(chunk) and not chunk.startswith(b"\x1f\x8b"):
                    raise RestoreError("not_gzip", self._where, f"not a gzip file ({exc})") from exc
                raise RestoreError("truncated", self._where, f"corrupt gzip data ({exc})") from exc
            if self._inflate.unused_data:
                raise RestoreError("truncated", self._where, "data after the end of the gzip stream")
            if data:
                yield data
        if self.raw == 0:
            raise RestoreError("truncated", self._where, "the object is empty")
        if not self._inflate.eof:
            raise RestoreError(
                "truncated", self._where, f"truncated gzip ({self.raw} bytes, stream not ended)"
            )

    def finish_digest(self) -> str:
        """Hash the rest of the object (after a failed load) and return the hex digest."""
        try:
            while self._next_raw() is not None:
                pass
        except RestoreError:
            pass
        return self.digest.hexdigest()


def _header(stream: Iterator[bytes], where: str) -> tuple[list[str], bytes]:
    """The CSV header line and the data after it."""
    pending = b""
    for data in stream:
        pending += data
        if b"\n" in pending:
            line, _, rest = pending.partition(b"\n")
            try:
                return next(csv.reader([line.decode()])), rest
            except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
                raise RestoreError("bad_header", where, f"unreadable CSV header ({exc})") from exc
        if len(pending) > _MAX_HEADER:
            break
    raise RestoreError("bad_header", where, "no CSV header line")


def _classify(exc: psycopg.Error) -> str:
    if isinstance(exc, errors.BadCopyFileFormat):
        return "bad_row"  # wrong number of columns, bad quoting
    if isinstance(exc, errors.UniqueViolation):
        return "conflict"
    if isinstance(exc, errors.DataError | errors.IntegrityError):
        return "bad_value"
    return "bad_value" if exc.sqlstate and exc.sqlstate.startswith("22") else "read_failed"


def _db_message(exc: psycopg.Error) -> str:
    """PostgreSQL's message and where in the file (COPY counts lines after the CSV header)."""
    diag = exc.diag
    context = diag.context.strip().splitlines()[-1] if diag.context else ""
    line = re.match(r"COPY [^,]+, line (\d+)(.*)", context)
    if line:
        context = f"CSV line {int(line.group(1)) + 1}{line.group(2)}"
    return f"{diag.message_primary or exc}" + (f" ({context})" if context else "")


def restore_month(
    conn: Conn, store: ObjectStore, table: ArchivedTable, month: Month, *, stop: threading.Event
) -> int | None:
    """Load one archived month of ``table`` in the current transaction (the caller opens it) and
    delete its manifest row; None when this (table, month) is not in the manifest."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    entry: dict[str, Any] | None = cur.execute(
        sql.SQL("select * from {} where table_name = %s and year = %s and month = %s").format(
            sql.Identifier(Tables.ARCHIVE_MANIFEST)
        ),
        (table.name, month.year, month.month),
    ).fetchone()
    if entry is None:
        return None
    key = str(entry["object_key"])
    where = f"{store.location(key)} ({table.name} {month})"
    try:
        info = store.stat(key)
    except Exception as exc:  # the store's own errors, at this one boundary
        raise RestoreError("read_failed", where, f"cannot stat the object: {exc}") from exc
    if info is None:
        raise RestoreError("missing_object", where, "the object is missing (the manifest lists it)")
    if info.size != int(entry["size_bytes"]):
        raise RestoreError(
            "size_mismatch",
            where,
            f"the object is {info.size} bytes, the manifest says {entry['size_bytes']}"
            " (truncated or replaced)",
        )
    expected_columns = list(entry["columns"] or [])
    known = {
        str(r[0])
        for r in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = current_schema() and table_name = %s",
            (table.name,),
        ).fetchall()
    }
    reader = _Reader(store.iter_chunks(key), where)
    try:
        rows = _load(
            conn,
            table=table,
            month=month,
            reader=reader,
            where=where,
            expected=expected_columns,
            known=known,
            stop=stop,
            old_columns=table.name == Tables.TELEMETRY_AGGREGATES,
        )
    except (RestoreError, psycopg.Error) as exc:
        detail = exc.detail if isinstance(exc, RestoreError) else _db_message(exc)
        digest = reader.finish_digest()
        if digest != entry["sha256"]:
            raise RestoreError(
                "sha256_mismatch",
                where,
                f"sha256 {digest} does not match the manifest's {entry['sha256']}: the object"
                f" is damaged or was replaced ({detail})",
            ) from exc
        if isinstance(exc, RestoreError):
            raise
        raise RestoreError(_classify(exc), where, detail) from exc
    if reader.digest.hexdigest() != entry["sha256"]:
        raise RestoreError(
            "sha256_mismatch",
            where,
            f"sha256 {reader.digest.hexdigest()} does not match the manifest's {entry['sha256']}",
        )
    if rows != int(entry["row_count"]):
        raise RestoreError("row_count", where, f"loaded {rows} rows, the manifest says {entry['row_count']}")
    conn.execute(
        sql.SQL("delete from {} where table_name = %s and year = %s and month = %s").format(
            sql.Identifier(Tables.ARCHIVE_MANIFEST)
        ),
        (table.name, month.year, month.month),
    )
    return rows


@functools.cache
def _earlier_minute_columns() -> frozenset[str]:
    """The minute table's columns as migrations 0001 and 0012 created them (their fixed DDL)."""
    out: set[str] = set()
    for migration in discover():
        if migration.version in (1, 12):
            ddl = migration.statements()[0]
            if migration.version == 12:  # its first table is the minute table
                ddl = ddl.split('create table "telemetry_aggregates" (', 1)[1].split(")", 1)[0]
            out.update(re.findall(r'^  "([a-z0-9_]+)" ', ddl, flags=re.MULTILINE))
    return frozenset(out)


#: the settings' last values, absent from older rows: what migration 0010 takes instead; the counts
#: and energies from the shares and Wh of rows from before migration 0012, as it converts them
_STAND_INS: dict[str, tuple[str, str]] = {
    "battery_estimated_capacity_last": ("battery_estimated_capacity_avg", "{}::real"),
    "battery_alert_threshold_last": ("battery_alert_threshold_max", "round({}::float8)::smallint"),
    **{
        f"{f.column}_count": (f"{f.column}_ratio", 'round({}::float8 * "sample_count"::float8)::smallint')
        for f in BOOL_FIELDS
    },
    **{
        Tables.energy_column(sub): (
            f"{sub}_energy_wh",
            f"round({{}}::float8 * {Tables.ENERGY_UNITS_PER_WH})::bigint",
        )
        for sub in ENERGY_CHANNELS
    },
    # the times and the last seq as offsets (migration 0014)
    **{
        offset: (name, 'round(extract(epoch from {}::timestamptz - "bucket"::timestamptz) * 1000)::integer')
        for name, offset in Tables.MINUTE_OFFSETS.items()
    },
    "seq_span": (
        "seq_last",
        'case when {0}::bigint - "seq_first"::bigint between -2147483648 and 2147483647'
        ' then ({0}::bigint - "seq_first"::bigint)::integer end',
    ),
}
_OLD_ROWS = "_enerlink_restore_old_rows"


def _load(
    conn: Conn,
    *,
    table: ArchivedTable,
    month: Month,
    reader: _Reader,
    where: str,
    expected: list[str],
    known: set[str],
    stop: threading.Event,
    old_columns: bool = False,
) -> int:
    if is_partitioned(conn, table.name):
        conn.execute(
            sql.SQL("select {}(%s, %s)").format(sql.Identifier(Tables.ENSURE_MONTH_PARTITION)),
            (table.name, month.start),
        )
    stream = iter(reader)
    header, rest = _header(stream, where)
    if expected and header != expected:
        extra, missing = sorted(set(header) - set(expected)), sorted(set(expected) - set(header))
        raise RestoreError(
            "bad_header",
            where,
            f"the CSV header is not the archived column list: unexpected {extra}, missing {missing}"
            + ("" if extra or missing else ", order differs"),
        )
    if not set(header) <= known and not (old_columns and set(header) - known <= _earlier_minute_columns()):
        raise RestoreError("bad_header", where, f"columns {sorted(set(header) - known)} not in {table.name}")
    target = sql.Identifier(table.name) if set(header) <= known else sql.Identifier(_OLD_ROWS)
    if set(header) - known:
        columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in header)
        conn.execute(sql.SQL("create temp table {} ({}) on commit drop").format(target, columns))
    cur = conn.cursor()
    with cur.copy(
        sql.SQL("copy {} ({}) from stdin (format csv)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, header))
        )
    ) as copy:
        copy.write(rest)
        for data in stream:
            if stop.is_set():
                raise Stopped("stopping")
            copy.write(data)
    if set(header) <= known:
        return max(cur.rowcount, 0)
    return _from_old_rows(conn, table=table.name, header=header)


def _from_old_rows(conn: Conn, *, table: str, header: list[str]) -> int:
    """The rows of an archive with the minute table's columns from before migration 0010, from the
    temporary table into ``table``: see the module's docstring."""
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
        " where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped",
        (f'"{table}"',),
    ).fetchall()
    types: dict[str, str] = {str(name): str(kind) for name, kind in rows}
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    for column in header:
        if column in types:
            names.append(sql.Identifier(column))
            values.append(sql.SQL("{}::{}").format(sql.Identifier(column), sql.SQL(types[column])))
    for column, (source, expression) in _STAND_INS.items():
        if column in types and column not in header and source in header:
            names.append(sql.Identifier(column))
            values.append(sql.SQL(expression).format(sql.Identifier(source)))
    cur = conn.execute(
        sql.SQL("insert into {} ({}) select {} from {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(names),
            sql.SQL(", ").join(values),
            sql.Identifier(_OLD_ROWS),
        )
    )
    return max(cur.rowcount, 0)
