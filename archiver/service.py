"""The archiver service: a nightly run (APScheduler cron, time-zone aware) or one run now.

The database and object-store work is synchronous (psycopg COPY streams into the minio client)
and runs in a worker thread; cancelling the service sets a stop flag that aborts the month in
progress (the multipart upload is aborted, nothing is deleted) and waits for the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from prometheus_client import CollectorRegistry, Counter

from enerlink.archiver.job import ArchiveError, Hooks, MonthArchiver, MonthResult, Stopped
from enerlink.archiver.months import ARCHIVED_TABLES, Month, cutoff, months_due
from enerlink.archiver.packing import PackResult, pack_after, pack_months
from enerlink.archiver.raw_export import RawHooks
from enerlink.archiver.raw_service import RawMetrics, raw_loop, raw_now, raw_off
from enerlink.archiver.restore import PROBLEMS, RestoreError, restore_month
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import ObjectStore, open_store
from enerlink.db import advisory_lock_id, migrate
from enerlink.metrics_server import metrics_server
from enerlink.redis_client import REDIS_ERRORS
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class RunSummary:
    archived: list[MonthResult] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    packed: list[PackResult] = field(default_factory=list)  # months whose primary key was packed
    seconds: float = 0.0
    skipped: bool = False  # another archiver (or a restore) held the database's turn

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.archived)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.months = Counter("enerlink_archive_months", "Months archived", ["table"], registry=registry)
        self.rows = Counter("enerlink_archive_rows", "Rows archived", ["table"], registry=registry)
        self.failures = Counter(
            "enerlink_archive_failures", "Months that failed", ["table"], registry=registry
        )
        self.packed = Counter(
            "enerlink_archive_keys_packed",
            "Month partitions whose primary key was packed",
            ["table"],
            registry=registry,
        )
        self.packed_bytes = Counter(
            "enerlink_archive_key_bytes_freed",
            "Bytes the packed primary keys gave back",
            ["table"],
            registry=registry,
        )
        self.restore_failures = Counter(
            "enerlink_archive_restore_failures",
            "Restores refused or failed, by problem (missing_object, not_gzip, truncated, bad_header,"
            " bad_row, bad_value, conflict, sha256_mismatch, row_count, size_mismatch, ...)",
            ["problem"],
            registry=registry,
        )
        for problem in PROBLEMS:
            self.restore_failures.labels(problem)


async def _in_thread(fn: Callable[[threading.Event], T]) -> T:
    """Run ``fn(stop)`` in a thread; on cancellation set ``stop`` and wait for it to return."""
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(fn, stop))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Stopped):
            await future
        raise


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    # autocommit: every ``conn.transaction()`` is a real transaction, reads outside it commit at once
    return psycopg.connect(settings.common.database_url, autocommit=True)


def _take_turn(conn: psycopg.Connection[Any]) -> bool:
    """The month archiver's advisory lock (one per schema), held until the connection closes: month
    runs and restores of one database never overlap (say a manual ``--once`` and the nightly run)."""
    row = conn.execute("select current_schema()").fetchone()
    lock = advisory_lock_id("archive-months", row[0] if row else None)
    taken = conn.execute("select pg_try_advisory_lock(%s)", (lock,)).fetchone()
    return bool(taken and taken[0])


def archive_now(
    settings: Settings,
    store: ObjectStore,
    stop: threading.Event,
    *,
    now: datetime | None = None,
    hooks: Hooks | None = None,
    metrics: _Metrics | None = None,
) -> RunSummary:
    """Archive every due month of every archived table (synchronous; one failure does not stop the rest)."""
    started = time.monotonic()
    moment = now or datetime.now(UTC)
    before = cutoff(moment, settings.retention_days)
    summary = RunSummary()
    with _connect(settings) as conn:
        if not _take_turn(conn):
            log.warning("archive run: another archiver (or a restore) is at work on this database; skipped")
            summary.skipped = True
            return summary
        archiver = MonthArchiver(
            conn=conn, store=store, stop=stop, hooks=hooks or Hooks(), interactive=sys.stderr.isatty()
        )
        for table in ARCHIVED_TABLES:
            days = settings.retention_for(table.name)
            if days is None:  # kept for ever
                continue
            due = months_due(conn, table, before=cutoff(moment, days))
            for month in due:
                if stop.is_set():
                    raise Stopped("stopping")
                try:
                    result = archiver.archive(table, month)
                except Stopped:
                    raise
                except Exception as exc:  # one month's failure is logged once and retried next run
                    log.error(
                        "archive %s %s failed: %s",
                        table.name,
                        month,
                        exc,
                        exc_info=not isinstance(exc, ArchiveError),
                    )
                    summary.failed.append(f"{table.name} {month}")
                    if metrics:
                        metrics.failures.labels(table.name).inc()
                    continue
                if result is not None:
                    summary.archived.append(result)
                    if metrics:
                        metrics.months.labels(table.name).inc()
                        metrics.rows.labels(table.name).inc(result.rows)
        ended_by = pack_after(now or datetime.now(UTC), settings.pack_after_days)
        packing = pack_months(conn, Tables.MONTHLY_PARTITIONED, ended_by=ended_by, stop=stop)
        summary.packed = packing.packed
        summary.failed += [f"pack {failed}" for failed in packing.failed]
        for packed in packing.packed:
            if metrics:
                metrics.packed.labels(packed.table).inc()
                freed = max(0, packed.bytes_before - packed.bytes_after)
                metrics.packed_bytes.labels(packed.table).inc(freed)
    summary.seconds = time.monotonic() - started
    log.info(
        "archive run: %d months, %d rows archived, %d failed, %d keys packed, rows older than %s, %.1f s",
        len(summary.archived),
        summary.rows,
        len(summary.failed),
        len(summary.packed),
        before.isoformat(timespec="seconds"),
        summary.seconds,
    )
    return summary


def restore_now(
    settings: Settings, store: ObjectStore, stop: threading.Event, month: Month
) -> dict[str, int]:
    """Load every archived table's ``month`` back into PostgreSQL in one transaction (all tables or
    none); returns rows per table. A damaged or missing object raises :class:`RestoreError`."""
    restored: dict[str, int] = {}
    with _connect(settings) as conn, conn.transaction():
        if not _take_turn(conn):
            raise RestoreError("busy", str(month), "an archive run is at work on this database; try again")
        for table in ARCHIVED_TABLES:
            rows = restore_month(conn, store, table, month, stop=stop)
            if rows is not None:
                restored[table.name] = rows
        if not restored:
            raise RestoreError("not_archived", str(month), "not in the archive manifest")
    return restored


async def run(
    settings: Settings,
    *,
    once: bool = False,
    restore: Month | None = None,
    hooks: Hooks | None = None,
    now: datetime | None = None,
    registry: CollectorRegistry | None = None,
    raw_hooks: RawHooks | None = None,
) -> RunSummary | None:
    """Run nightly until cancelled, with the raw export every ``raw_interval_s`` beside it; ``once``:
    one run of each now; ``restore``: load a month back and return (a refused restore raises
    :class:`RestoreError`, counted in ``registry``)."""
    await migrate(settings.common.database_url)
    store = open_store(settings.storage)
    await asyncio.to_thread(store.ensure)
    registry = CollectorRegistry() if registry is None else registry
    metrics = _Metrics(registry)
    raw_metrics = RawMetrics(registry)
    if restore is not None:
        try:
            result = await _in_thread(lambda stop: restore_now(settings, store, stop, restore))
        except RestoreError as exc:
            metrics.restore_failures.labels(exc.problem).inc()
            log.error("restore %s refused (%s): %s; the database is unchanged", restore, exc.problem, exc)
            raise
        log.info("restore %s: %s", restore, ", ".join(f"{t} {n} rows" for t, n in result.items()))
        return None
    # every interface, as before: a scraper in another container reaches it
    async with metrics_server(registry, port=settings.metrics_port, host="0.0.0.0"):
        if settings.raw_interval_s == 0:
            await asyncio.to_thread(raw_off, settings)
        if once:
            if settings.raw_interval_s > 0:
                with contextlib.suppress(ArchiveError, psycopg.Error, *REDIS_ERRORS):  # logged
                    await _in_thread(
                        lambda stop: raw_now(settings, store, stop, hooks=raw_hooks, metrics=raw_metrics)
                    )
            return await _in_thread(
                lambda stop: archive_now(settings, store, stop, now=now, hooks=hooks, metrics=metrics)
            )
        if settings.raw_interval_s > 0:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(raw_loop(settings, store, raw_metrics), name="archive-raw")
                tg.create_task(_nightly(settings, store, hooks, metrics), name="archive-nightly")
            return None
        await _nightly(settings, store, hooks, metrics)
        return None


async def _nightly(settings: Settings, store: ObjectStore, hooks: Hooks | None, metrics: _Metrics) -> None:
    trigger = settings.trigger()
    log.info(
        "archiver: %s backend, retention %d days, schedule %r (%s)",
        settings.storage.backend,
        settings.retention_days,
        settings.cron,
        settings.common.timezone,
    )
    previous: datetime | None = None
    while True:
        current = datetime.now(UTC)
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            return
        log.info("archiver: next run at %s", fire.isoformat())
        await asyncio.sleep(max(0.0, (fire - datetime.now(UTC)).total_seconds()))
        previous = fire
        try:
            await _in_thread(lambda stop: archive_now(settings, store, stop, hooks=hooks, metrics=metrics))
        except (ArchiveError, psycopg.Error, OSError) as exc:  # the run is retried at the next fire time
            log.error("archive run failed: %s", exc)
