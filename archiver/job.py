"""Archiving one (table, month): COPY -> gzip -> upload -> verify -> manifest + drop (restoring: restore.py).

Safety argument: rows leave PostgreSQL only in the transaction that records the verified object in
the manifest. A crash before that commit leaves the rows (and at worst an unreferenced object that
the re-run overwrites with the same rows); a crash after it leaves a verified object and its
manifest row. Before dropping, the month's rows are counted again under an exclusive lock and
must equal the rows written, so rows that arrived meanwhile are never dropped unarchived.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql

from enerlink.archiver.months import ArchivedTable, Conn, Month, is_partitioned, partitions
from enerlink.archiver.progress import Progress
from enerlink.archiver.storage import ObjectStore
from enerlink.schemas.wire import Buckets, Tables

log = logging.getLogger(__name__)

#: Which row versions a month holds: a tuple's location and the transaction that wrote it change
#: whenever a row is inserted, updated or deleted (and survive VACUUM FREEZE), so equal sums before
#: the export and under the drop's lock mean nothing was written in between.
_FINGERPRINT = sql.SQL("coalesce(sum(hashtextextended(ctid::text || '/' || xmin::text, 0)::numeric), 0)")

CONTENT_TYPE = "application/gzip"
GZIP_LEVEL = 6
_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


class ArchiveError(RuntimeError):
    """A month could not be archived or restored; nothing was deleted."""


class Stopped(ArchiveError):
    """The service is stopping; the month was left as it was."""


@dataclass(slots=True)
class Hooks:
    """Fault injection for tests: called at the named step with (table, month)."""

    after_verify: Callable[[str, Month], None] | None = None
    on_chunk: Callable[[int], None] | None = None  # raw bytes so far


@dataclass(frozen=True, slots=True)
class MonthResult:
    table: str
    month: Month
    rows: int
    raw_bytes: int
    size: int
    sha256: str
    seconds: float


class _GzipCopyReader:
    """A file-like ``read(n)`` over COPY chunks, gzip-compressed on the fly (bounded memory)."""

    def __init__(
        self,
        chunks: Iterator[Any],
        *,
        stop: threading.Event,
        progress: Progress,
        hooks: Hooks,
    ) -> None:
        self._chunks = chunks
        self._gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # gzip header, mtime 0
        self._buffer = bytearray()
        self._eof = False
        self._stop = stop
        self._progress = progress
        self._hooks = hooks
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.raw_bytes = 0

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buffer) < n):
            if self._stop.is_set():
                raise Stopped("stopping")
            try:
                chunk = bytes(next(self._chunks))
            except StopIteration:
                self._buffer += self._gz.flush()
                self._eof = True
                break
            self.raw_bytes += len(chunk)
            self._progress.update(raw_bytes=self.raw_bytes, rows=chunk.count(b"\n"))
            if self._hooks.on_chunk:
                self._hooks.on_chunk(self.raw_bytes)
            self._buffer += self._gz.compress(chunk)
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.sha256.update(out)
        self.size += len(out)
        return out


def _columns(conn: Conn, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = current_schema() and table_name = %s order by ordinal_position",
        (table,),
    ).fetchall()
    return [(str(name), str(kind)) for name, kind in rows]


def _select_list(columns: list[tuple[str, str]]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for name, kind in columns:
        ident = sql.Identifier(name)
        if kind == "timestamp with time zone":
            parts.append(
                sql.SQL("to_char({} at time zone 'UTC', {}) as {}").format(ident, sql.Literal(_ISO), ident)
            )
        else:
            parts.append(ident)
    return sql.SQL(", ").join(parts)


def schema_version(conn: Conn) -> int:
    row = conn.execute(
        sql.SQL("select coalesce(max(version), 0) from {}").format(sql.Identifier(Tables.MIGRATIONS))
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def manifest_row(conn: Conn, table: str, month: Month) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        sql.SQL("select * from {} where table_name = %s and year = %s and month = %s").format(
            sql.Identifier(Tables.ARCHIVE_MANIFEST)
        ),
        (table, month.year, month.month),
    ).fetchone()


def _iso(moment: object) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(moment, datetime) else ""


def verify_object(store: ObjectStore, key: str, *, size: int, sha256: str, rows: int) -> None:
    info = store.stat(key)
    if info is None:
        raise ArchiveError(f"{key}: object missing after upload")
    if info.size != size:
        raise ArchiveError(f"{key}: stored size {info.size} != written {size}")
    if info.metadata.get("row-count") != str(rows) or info.metadata.get("sha256") != sha256:
        raise ArchiveError(f"{key}: stored metadata {info.metadata} does not match what was written")
    digest, total = hashlib.sha256(), 0
    for chunk in store.iter_chunks(key):
        digest.update(chunk)
        total += len(chunk)
    if total != size or digest.hexdigest() != sha256:
        raise ArchiveError(f"{key}: read back {total} bytes sha256 {digest.hexdigest()}, expected {sha256}")


@dataclass(slots=True)
class MonthArchiver:
    """Archives months of tables on one synchronous autocommit connection (run it in a worker thread)."""

    conn: Conn
    store: ObjectStore
    stop: threading.Event = field(default_factory=threading.Event)
    hooks: Hooks = field(default_factory=Hooks)
    interactive: bool = False

    def archive(self, table: ArchivedTable, month: Month) -> MonthResult | None:
        started = time.monotonic()
        conn = self.conn
        key = Buckets.month_object(table.name, month.year, month.month)
        partition = partitions(conn, table.name).get(month) if is_partitioned(conn, table.name) else None
        source = sql.Identifier(partition or table.name)
        when = sql.SQL("{t} >= %s and {t} < %s").format(t=sql.Identifier(table.time_column))
        bounds = (month.start, month.end)
        if manifest_row(conn, table.name, month) is not None:
            with conn.transaction():  # checked and dropped under one lock: no row slips in between
                if partition:
                    conn.execute(sql.SQL("lock table {} in access exclusive mode").format(source))
                row = conn.execute(
                    sql.SQL("select exists(select 1 from {src} where {when})").format(src=source, when=when),
                    bounds,
                ).fetchone()
                if row is not None and not row[0]:  # an empty partition re-created after archiving
                    if partition:
                        conn.execute(sql.SQL("drop table {}").format(source))
                    return None
            raise ArchiveError(
                f"{table.name} {month}: already archived but rows are back in PostgreSQL; leaving both"
                " (restore with --restore first, or remove the stray rows)"
            )
        columns = _columns(conn, table.name)
        version = schema_version(conn)

        # 1. One snapshot for statistics and COPY, streamed through gzip into the store.
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        progress = Progress(f"{table.name} {month}", interactive=self.interactive)
        try:
            with conn.transaction():
                stats = conn.execute(
                    sql.SQL("select count(*), min({t}), max({t}), {fp} from {src} where {when}").format(
                        t=sql.Identifier(table.time_column), fp=_FINGERPRINT, src=source, when=when
                    ),
                    bounds,
                ).fetchone()
                assert stats is not None
                expected, first_at, last_at = int(stats[0]), stats[1], stats[2]  # type: ignore[call-overload]
                exported = (expected, stats[3])
                copy_sql = sql.SQL(
                    "copy (select {cols} from {src} where {when}) to stdout (format csv, header)"
                )
                cur = conn.cursor()
                with cur.copy(
                    copy_sql.format(cols=_select_list(columns), src=source, when=when), bounds
                ) as copy:
                    reader = _GzipCopyReader(iter(copy), stop=self.stop, progress=progress, hooks=self.hooks)
                    self.store.put_stream(key, reader, content_type=CONTENT_TYPE)  # type: ignore[arg-type]
                rows = cur.rowcount
        finally:
            conn.isolation_level = IsolationLevel.READ_COMMITTED
            progress.close()
        if rows != expected:
            raise ArchiveError(f"{table.name} {month}: COPY gave {rows} rows, snapshot counted {expected}")
        sha256 = reader.sha256.hexdigest()

        # 2. Metadata, then verify what the store holds against what was written.
        self.store.set_metadata(
            key,
            {
                "row-count": str(rows),
                "sha256": sha256,
                "first-at": _iso(first_at),
                "last-at": _iso(last_at),
                "schema-version": str(version),
                "table": table.name,
                "month": str(month),
                "columns": ",".join(name for name, _ in columns),
            },
            content_type=CONTENT_TYPE,
        )
        verify_object(self.store, key, size=reader.size, sha256=sha256, rows=rows)
        if self.hooks.after_verify:
            self.hooks.after_verify(table.name, month)

        # 3. Manifest row and the drop, in one transaction, after checking under lock that no row was
        # written since the export's snapshot (same count and the same row versions: an update in
        # between, say a late minute re-aggregated, gives its row a new version).
        with conn.transaction():
            mode = "access exclusive" if partition else "share row exclusive"  # the latter: writers wait
            conn.execute(sql.SQL("lock table {} in {} mode").format(source, sql.SQL(mode)))
            row = conn.execute(
                sql.SQL("select count(*), {fp} from {src} where {when}").format(
                    fp=_FINGERPRINT, src=source, when=when
                ),
                bounds,
            ).fetchone()
            now = (int(row[0]), row[1]) if row else (-1, None)  # type: ignore[call-overload]
            if now != exported:
                raise ArchiveError(
                    f"{table.name} {month}: {now[0]} rows now, {rows} archived, or rows rewritten since the"
                    " export; rows changed, retry later"
                )
            if not partition:
                conn.execute(sql.SQL("delete from {src} where {when}").format(src=source, when=when), bounds)
            conn.execute(
                sql.SQL(
                    "insert into {} (table_name, year, month, object_key, backend, location, row_count,"
                    " size_bytes, sha256, first_at, last_at, schema_version, columns)"
                    " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(sql.Identifier(Tables.ARCHIVE_MANIFEST)),
                (
                    table.name,
                    month.year,
                    month.month,
                    key,
                    self.store.backend,
                    self.store.location(key),
                    rows,
                    reader.size,
                    sha256,
                    first_at,
                    last_at,
                    version,
                    [name for name, _ in columns],
                ),
            )
            if partition:
                conn.execute(sql.SQL("drop table {}").format(source))
        seconds = time.monotonic() - started
        log.info(
            "archived %s %s: %d rows, %.1f MB csv -> %.1f MB gz in %.1f s (%.0f rows/s, %.1f MB/s) -> %s",
            table.name,
            month,
            rows,
            reader.raw_bytes / 1e6,
            reader.size / 1e6,
            seconds,
            rows / seconds if seconds else 0.0,
            reader.raw_bytes / 1e6 / seconds if seconds else 0.0,
            self.store.location(key),
        )
        return MonthResult(table.name, month, rows, reader.raw_bytes, reader.size, sha256, seconds)
