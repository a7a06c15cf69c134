"""Packing the primary key of a month that is over (the nightly run, after the months it archives).

The minute table's key is ``(meter_id, bucket)`` (the complete 5-minute buckets' too): every minute
adds one entry at the end of each meter's part of the index, in the middle of the index, and a full
page there splits in halves of which the left one never receives another entry. Such an index
settles at about half full (71 bytes a row for a 36-byte entry; ``bench/key_growth.py``). Once a month
is over its rows seldom change, so its partition's key is rebuilt full (``fillfactor = 100``,
``REINDEX CONCURRENTLY``: reads and writes go on meanwhile, but for an upsert into the month that
PostgreSQL may refuse while the indexes are swapped, which its writer retries) and costs what its
entries do.

A rebuild is recorded in ``Tables.PACKED_KEYS`` with the index's file node right after it: a
partition re-created (a restore) or rebuilt since is packed again. A rebuild interrupted (a stop, a
cancelled or killed query) leaves PostgreSQL's invalid ``*_ccnew`` / ``*_ccold`` copy behind: the
next run drops it first.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from enerlink.archiver.job import Stopped
from enerlink.archiver.months import Conn, Month, partitions
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)

PACKED_FILLFACTOR = 100
#: Names PostgreSQL gives the copies of an index that ``REINDEX CONCURRENTLY`` builds and retires.
_LEFTOVER = re.compile(r".*_cc(new|old)\d*")


@dataclass(frozen=True, slots=True)
class PackResult:
    table: str
    month: Month
    partition: str
    bytes_before: int
    bytes_after: int
    seconds: float


@dataclass(frozen=True, slots=True)
class _Key:
    name: str  # qualified as ``regclass`` prints it
    filenode: int
    size: int


def _key(conn: Conn, partition: str) -> _Key | None:
    row = conn.execute(
        "select i.indexrelid::regclass::text, pg_relation_filenode(i.indexrelid),"
        " pg_relation_size(i.indexrelid) from pg_index i"
        " where i.indrelid = to_regclass(format('%%I', %s::text)) and i.indisprimary and i.indisvalid",
        (partition,),
    ).fetchone()
    if row is None:
        return None
    return _Key(str(row[0]), int(row[1]), int(row[2]))  # type: ignore[call-overload]


def _is_packed(conn: Conn, partition: str, key: _Key) -> bool:
    row = conn.execute(
        sql.SQL("select 1 from {} where partition = %s and filenode = %s").format(
            sql.Identifier(Tables.PACKED_KEYS)
        ),
        (partition, key.filenode),
    ).fetchone()
    return row is not None


def _is_empty(conn: Conn, partition: str) -> bool:
    row = conn.execute(sql.SQL("select exists(select from {})").format(sql.Identifier(partition))).fetchone()
    return not (row and row[0])


def _drop_leftovers(conn: Conn, partition: str) -> None:
    rows = conn.execute(
        "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
        " where i.indrelid = to_regclass(format('%%I', %s::text)) and not i.indisvalid",
        (partition,),
    ).fetchall()
    for (name,) in rows:
        if _LEFTOVER.fullmatch(str(name)):
            log.info("pack %s: dropping %s, left by an interrupted rebuild", partition, name)
            conn.execute(sql.SQL("drop index concurrently if exists {}").format(sql.Identifier(str(name))))


def _run_stoppable(conn: Conn, query: sql.Composed, stop: threading.Event) -> None:
    """Run ``query``; a stop cancels it (PostgreSQL rolls the rebuild back but for its invalid copy)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if stop.is_set():
                conn.cancel_safe()
                return

    watcher = threading.Thread(target=watch, name="pack-stop", daemon=True)
    watcher.start()
    try:
        conn.execute(query)
    except psycopg.errors.QueryCanceled as exc:
        if stop.is_set():
            raise Stopped("stopping") from exc
        raise
    finally:
        done.set()
        watcher.join()


def pack_partition(
    conn: Conn, *, table: str, month: Month, partition: str, stop: threading.Event
) -> PackResult | None:
    """Rebuild ``partition``'s primary key full unless it is already; None when it was (or is gone)."""
    _drop_leftovers(conn, partition)
    key = _key(conn, partition)
    if key is None or _is_packed(conn, partition, key) or _is_empty(conn, partition):
        return None  # an empty month is packed once rows come (a late meter's log)
    started = time.monotonic()
    index = sql.SQL(key.name)  # regclass text: already quoted and qualified as needed
    fillfactor = sql.Literal(PACKED_FILLFACTOR)
    conn.execute(sql.SQL("alter index {} set (fillfactor = {})").format(index, fillfactor))
    _run_stoppable(conn, sql.SQL("reindex index concurrently {}").format(index), stop)
    after = _key(conn, partition)
    if after is None:  # dropped meanwhile (archived by another process): nothing to record
        return None
    conn.execute(
        sql.SQL(
            "insert into {} (partition, filenode, bytes_before, bytes_after) values (%s, %s, %s, %s)"
            " on conflict (partition) do update set filenode = excluded.filenode,"
            " bytes_before = excluded.bytes_before, bytes_after = excluded.bytes_after, packed_at = now()"
        ).format(sql.Identifier(Tables.PACKED_KEYS)),
        (partition, after.filenode, key.size, after.size),
    )
    return PackResult(table, month, partition, key.size, after.size, time.monotonic() - started)


def months_to_pack(conn: Conn, table: str, *, ended_by: datetime) -> list[tuple[Month, str]]:
    """``table``'s month partitions that ended at or before ``ended_by``, oldest first."""
    return sorted((m, name) for m, name in partitions(conn, table).items() if m.end <= ended_by)


def forget_gone(conn: Conn) -> None:
    """Drop the records of partitions that are gone (archived months)."""
    conn.execute(
        sql.SQL("delete from {} where to_regclass(quote_ident(partition)) is null").format(
            sql.Identifier(Tables.PACKED_KEYS)
        )
    )


def pack_after(now: datetime, days: int) -> datetime:
    """Months that ended at or before this are packed: ``days`` after their end, so that late
    readings (a meter's log sent after an outage) have come in."""
    return now - timedelta(days=days)


@dataclass(slots=True)
class PackRun:
    packed: list[PackResult]
    failed: list[str]


def pack_months(conn: Conn, tables: Iterable[str], *, ended_by: datetime, stop: threading.Event) -> PackRun:
    """Pack every month of ``tables`` (a table not partitioned has none) that ended by ``ended_by`` and
    is not packed yet; one month's failure is logged once and retried next run."""
    run = PackRun([], [])
    forget_gone(conn)
    for table in tables:
        for month, partition in months_to_pack(conn, table, ended_by=ended_by):
            if stop.is_set():
                raise Stopped("stopping")
            try:
                result = pack_partition(conn, table=table, month=month, partition=partition, stop=stop)
            except Stopped:
                raise
            except Exception as exc:  # one month's failure is logged once and retried next run
                log.error(
                    "pack %s %s failed: %s", table, month, exc, exc_info=not isinstance(exc, psycopg.Error)
                )
                run.failed.append(f"{table} {month}")
                if conn.closed:
                    return run
                continue
            if result is not None:
                run.packed.append(result)
                log.info(
                    "pack %s %s: primary key %d -> %d bytes in %.1f s",
                    table,
                    month,
                    result.bytes_before,
                    result.bytes_after,
                    result.seconds,
                )
    return run
