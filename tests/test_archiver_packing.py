"""The nightly run packs the primary key of every month that is over, on real PostgreSQL: the rows
stay as they were, the key keeps refusing duplicates, and an interrupted rebuild is finished later."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from enerlink.archiver.job import Stopped
from enerlink.archiver.months import Month
from enerlink.archiver.service import archive_now
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.config import ConfigError, Env
from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import ensure_partition
from tests.support.services import ServiceProcess

NOW = datetime.now(UTC)
CLOSED = Month.of(NOW - timedelta(days=40))  # over for more than the two days' wait
CURRENT = Month.of(NOW)
METERS = 40
MINUTES = 300


def _fill(url: str, month: Month, table: str = Tables.TELEMETRY_AGGREGATES, step: int = 1) -> None:
    """Rows as the aggregator writes them: every meter's row of a bucket, bucket after bucket."""
    with psycopg.connect(url) as conn:
        ensure_partition(conn, table, month.start)
        minute = table == Tables.TELEMETRY_AGGREGATES  # its times are offsets into the bucket
        times = (
            ("first_ms, last_ms", "0, 55000") if minute else ("first_at, last_at", "b, b + interval '55 s'")
        )
        conn.execute(
            sql.SQL(
                "insert into {} (meter_id, bucket, sample_count, {}, import_energy_10uwh)"
                " select 'METER' || lpad(m::text, 3, '0'), b, 12, {}, m * 1000 + i"
                " from generate_series(0, %s - 1) as i,"
                " lateral (select %s::timestamptz + i * %s * interval '1 minute' as b) t,"
                " generate_series(1, %s) as m order by i, m"
            ).format(sql.Identifier(table), sql.SQL(times[0]), sql.SQL(times[1])),
            (MINUTES, month.start, step, METERS),
        )


def _key(url: str, month: Month, table: str = Tables.TELEMETRY_AGGREGATES) -> dict[str, Any]:
    partition = Tables.month_partition(table, month.year, month.month)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select pg_relation_size(i.indexrelid), c.reloptions, i.indisvalid,"
            " (select count(*) from pg_index x where x.indrelid = i.indrelid) as indexes,"
            " (select h.inhparent::regclass::text from pg_inherits h where h.inhrelid = i.indexrelid)"
            " from pg_index i join pg_class c on c.oid = i.indexrelid"
            " where i.indrelid = to_regclass(%s) and i.indisprimary",
            (partition,),
        ).fetchone()
    assert row is not None
    size, options, valid, indexes, parent = row
    return {"size": size, "options": options, "valid": valid, "indexes": indexes, "parent": parent}


def _checksum(url: str, month: Month) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL(
                "select count(*), sum(hashtextextended(meter_id || bucket::text"
                " || import_energy_10uwh::text, 0)) from {} where bucket >= %s and bucket < %s"
            ).format(sql.Identifier(Tables.TELEMETRY_AGGREGATES)),
            (month.start, month.end),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_for_a_waiting_rebuild(url: str, *, timeout_s: float, fail: bool = True) -> bool:
    """Wait until a ``REINDEX CONCURRENTLY`` waits for a lock (an older transaction still reads)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "select count(*) from pg_stat_activity where query ilike 'reindex index concurrently%%'"
                " and wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return True
            time.sleep(0.05)
    if fail:
        pytest.fail("the rebuild never waited for the open transaction")
    return False


@pytest.fixture
def settings(environ: dict[str, str]) -> Settings:
    return Settings.from_env(Env({**environ, "ENERLINK_ARCHIVE_RETENTION_DAYS": "3650"}))


async def test_a_closed_month_gets_a_full_key_and_keeps_its_rows(
    settings: Settings, database_url: str
) -> None:
    await migrate(database_url)
    _fill(database_url, CLOSED)
    _fill(database_url, CURRENT)
    rows_before = _checksum(database_url, CLOSED)
    closed_before, current_before = _key(database_url, CLOSED), _key(database_url, CURRENT)
    store = open_store(settings.storage)

    summary = archive_now(settings, store, threading.Event())

    assert summary.failed == [] and summary.archived == []
    closed = Tables.month_partition(Tables.TELEMETRY_AGGREGATES, CLOSED.year, CLOSED.month)
    assert [(p.partition, p.bytes_before) for p in summary.packed] == [(closed, closed_before["size"])]
    after = _key(database_url, CLOSED)
    assert after["options"] == ["fillfactor=100"] and after["valid"] and after["indexes"] == 1
    assert after["parent"] == f"{Tables.TELEMETRY_AGGREGATES}_pkey"  # still the table's primary key
    assert after["size"] == summary.packed[0].bytes_after
    assert after["size"] < 0.7 * closed_before["size"]  # a key written minute by minute is half empty
    assert _key(database_url, CURRENT) == current_before  # the month in progress is left alone
    assert _checksum(database_url, CLOSED) == rows_before

    # the key still refuses a second row for a minute
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            sql.SQL(
                "insert into {} (meter_id, bucket, sample_count, first_ms, last_ms)"
                " values ('METER001', %s, 1, 0, 0)"
            ).format(sql.Identifier(Tables.TELEMETRY_AGGREGATES)),
            (CLOSED.start,),
        )

    again = archive_now(settings, store, threading.Event())  # packed once
    assert again.packed == [] and again.failed == []
    assert _key(database_url, CLOSED) == after


async def test_a_month_over_for_less_than_the_wait_is_not_packed_yet(
    environ: dict[str, str], database_url: str
) -> None:
    await migrate(database_url)
    _fill(database_url, CLOSED)
    settings = Settings.from_env(
        Env({**environ, "ENERLINK_ARCHIVE_RETENTION_DAYS": "3650", "ENERLINK_ARCHIVE_PACK_AFTER_DAYS": "2"})
    )
    store = open_store(settings.storage)
    just_after = CLOSED.end + timedelta(days=1)
    assert archive_now(settings, store, threading.Event(), now=just_after).packed == []
    later = archive_now(settings, store, threading.Event(), now=CLOSED.end + timedelta(days=2))
    assert [p.month for p in later.packed] == [CLOSED]
    with pytest.raises(ConfigError, match="PACK_AFTER_DAYS"):
        Settings.from_env(Env({**environ, "ENERLINK_ARCHIVE_PACK_AFTER_DAYS": "-1"}))


def test_a_stopped_rebuild_leaves_nothing_behind_after_the_next_run(
    settings: Settings, database_url: str
) -> None:
    """A stop while the rebuild waits (an older transaction still reads the month) cancels it at once;
    PostgreSQL leaves its invalid copy of the index, which the next run drops before packing."""
    asyncio.run(migrate(database_url))
    _fill(database_url, CLOSED)
    store = open_store(settings.storage)
    stop = threading.Event()
    outcome: list[BaseException | object] = []

    def archive() -> None:
        try:
            outcome.append(archive_now(settings, store, stop))
        except BaseException as exc:
            outcome.append(exc)

    with psycopg.connect(database_url) as reader:
        reader.execute("begin isolation level repeatable read")
        reader.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(Tables.TELEMETRY_AGGREGATES)))
        worker = threading.Thread(target=archive)
        worker.start()
        _wait_for_a_waiting_rebuild(database_url, timeout_s=30)
        started = time.monotonic()
        stop.set()
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - started < 5
        reader.execute("rollback")
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid"
            " where i.indrelid = to_regclass(%s) and not i.indisvalid",
            (Tables.month_partition(Tables.TELEMETRY_AGGREGATES, CLOSED.year, CLOSED.month),),
        ).fetchall()
    assert [name for (name,) in left] and all("_ccnew" in name for (name,) in left)

    rows_before = _checksum(database_url, CLOSED)
    summary = archive_now(settings, store, threading.Event())
    assert [p.month for p in summary.packed] == [CLOSED] and summary.failed == []
    key = _key(database_url, CLOSED)
    assert key["indexes"] == 1 and key["valid"] and key["options"] == ["fillfactor=100"]
    assert _checksum(database_url, CLOSED) == rows_before


async def test_a_restored_partition_is_packed_again(settings: Settings, database_url: str) -> None:
    """The record of a packed key names the index's file node: a partition made anew (as a restore
    does) is not taken for packed."""
    await migrate(database_url)
    _fill(database_url, CLOSED)
    store = open_store(settings.storage)
    assert len(archive_now(settings, store, threading.Event()).packed) == 1
    partition = Tables.month_partition(Tables.TELEMETRY_AGGREGATES, CLOSED.year, CLOSED.month)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop table {}").format(sql.Identifier(partition)))
    _fill(database_url, CLOSED)
    summary = archive_now(settings, store, threading.Event())
    assert [p.partition for p in summary.packed] == [partition]
    with psycopg.connect(database_url) as conn:
        records = conn.execute(
            sql.SQL("select partition from {}").format(sql.Identifier(Tables.PACKED_KEYS))
        ).fetchall()
    assert records == [(partition,)]


async def test_the_closed_five_minute_buckets_are_packed_by_month_too(
    settings: Settings, database_url: str
) -> None:
    await migrate(database_url)
    _fill(database_url, CLOSED, Tables.TELEMETRY_5M_CLOSED, step=5)
    before = _key(database_url, CLOSED, Tables.TELEMETRY_5M_CLOSED)
    summary = archive_now(settings, open_store(settings.storage), threading.Event())
    assert [(p.table, p.month) for p in summary.packed] == [(Tables.TELEMETRY_5M_CLOSED, CLOSED)]
    after = _key(database_url, CLOSED, Tables.TELEMETRY_5M_CLOSED)
    assert after["options"] == ["fillfactor=100"] and after["parent"] == f"{Tables.TELEMETRY_5M_CLOSED}_pkey"
    assert after["size"] < 0.7 * before["size"]


def test_sigterm_while_a_key_is_rebuilt_ends_the_run_cleanly(
    environ: dict[str, str], database_url: str
) -> None:
    """``enerlink archive --once`` as a process, stopped by SIGTERM while its rebuild waits: it exits 0
    at once with no traceback; the next run packs the month."""
    asyncio.run(migrate(database_url))
    _fill(database_url, CLOSED)
    env = {**environ, "ENERLINK_ARCHIVE_RETENTION_DAYS": "3650"}
    with psycopg.connect(database_url) as reader:
        reader.execute("begin isolation level repeatable read")
        reader.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(Tables.TELEMETRY_AGGREGATES)))
        proc = ServiceProcess(args=["archive", "--once"], env=env).start()
        if not _wait_for_a_waiting_rebuild(database_url, timeout_s=60, fail=False):
            pytest.fail("the rebuild never waited for the open transaction:\n" + proc.output())
        started = time.monotonic()
        assert proc.terminate(timeout=15) == 0, proc.output()
        assert time.monotonic() - started < 10
        reader.execute("rollback")
    assert "Traceback" not in proc.output(), proc.output()
    settings = Settings.from_env(Env(env))
    summary = archive_now(settings, open_store(settings.storage), threading.Event())
    assert [p.month for p in summary.packed] == [CLOSED] and summary.failed == []
