"""The aggregation job: one run over every closed minute (the service that schedules it is service.py).

A job, under a PostgreSQL advisory lock (so two aggregator processes never work on the same
minute; the second waits, then finds the watermark advanced and nothing left to do):

1. ``T0`` = Redis ``TIME``; the last closed minute is the one that ended at least ``grace_s`` ago;
2. every minute after the watermark up to it, oldest first (catch-up; never further back than the
   Redis retention), one pass for the whole fleet: in one transaction, a fifth of the fleet folds
   its complete 5-minute rows into the hourly and daily rollups (fold.py) while the worker
   processes read and compute, then part by part COPY into a staging table, one insert (an upsert if
   a row was already stored), the 5-minute rollup; events and the watermark;
3. late minutes flagged by the ingest with score <= T0 (plus each one's next minute with data,
   whose counter baseline changed) re-aggregated the same way; then those flags are removed unless
   raised again since T0. A pair step 2 of this job has just written is not written again: a flag
   scored <= T0 means its reading was stored before T0, so step 2 (which reads after T0) already
   counted it (a backfill after an outage, when the aggregator was behind too, is written once);
4. clean-up: late data of re-aggregated minutes after a hold period, live snapshots older than
   both the retention and the watermark (each meter's newest is kept as the next baseline); when the
   raw export runs (``Keys.raw_export``), neither before the archive holds them;
5. device health: status messages of the closed minutes into ``device_health_aggregates`` and
   technician events (healthjob.py, health.py; a watermark of its own);
6. the ingest's online/offline stream is copied into ``events`` (position kept in PostgreSQL), and
   sensors reported disconnected in the newest status messages of meters without a status series
   raise events (see events.py);
7. completeness of the hours closed meanwhile: ``completeness_low`` events and fleet gauges
   (completeness.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime

from enerlink.aggregator import events, late, leases, memory, reader, rollups, store
from enerlink.aggregator.completeness import HourlyCompleteness
from enerlink.aggregator.compute import MINUTE_MS, Result, Thresholds, compute, ms_to_dt
from enerlink.aggregator.healthjob import HealthReport, HealthStep
from enerlink.aggregator.metrics import Metrics
from enerlink.aggregator.part import write_part
from enerlink.aggregator.report import CaughtUp, JobReport
from enerlink.aggregator.settings import Settings
from enerlink.aggregator.task import read_and_compute
from enerlink.db import connect
from enerlink.events import insert_events
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.wire import Keys
from enerlink.shards import Shard
from enerlink.watermark import read_watermark

log = logging.getLogger(__name__)

LATE_CHUNK = 5000
#: A job's connections are closed by PostgreSQL when their client stops this long inside a
#: transaction (a frozen process: its locks and rows are freed for the shard's next owner). A minute's
#: longest pause, waiting for a worker's part, is a few seconds.
IDLE_IN_TRANSACTION_S = 120.0


class AggregateError(RuntimeError):
    """A job failed; the message says which step."""


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        redis: AsyncRedis,
        *,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._rollup_s = 0.0
        self._wait_s = 0.0
        self._caught_up = CaughtUp()
        self._shard = Shard.WHOLE  # the shard of the job running
        self._clocks: dict[str, int] = {}  # each Redis part's T0 in the job running (reader.part_clocks)
        self._fleet: list[str] = []  # the job's shard's meters, as the job began
        self._lags: dict[Shard, float] = {}  # seconds behind, per shard
        self._last_in_at = 0.0
        self.settings = settings
        self.redis = redis
        self.keys: Keys = settings.common.keys
        self.metrics = metrics or Metrics()
        self.executor = executor  # the worker processes; None: a thread of this process (tests)
        self.partitions = store.Partitions()
        self.thresholds = Thresholds(settings.thermal_warn_c, settings.thermal_crit_c)
        self.health = HealthStep(settings, redis)
        self.completeness = HourlyCompleteness(
            threshold=settings.completeness.threshold,
            delay_s=settings.completeness_delay_s,
            metrics=self.metrics,
        )

    async def run_job(self, shard: Shard = Shard.WHOLE) -> JobReport:
        """One job over ``shard``'s meters (the whole fleet by default). Shard 0 also does the
        fleet's duties: the ingest's event stream, completeness, the late data's clean-up."""
        started = time.monotonic()
        report = JobReport()
        self._caught_up = CaughtUp()
        self._shard = shard
        t0 = await reader.redis_time_ms(self.redis)
        self._clocks = await reader.part_clocks(self.redis, self.keys, t0)
        closed_end = (t0 - int(self.settings.grace_s * 1000)) // MINUTE_MS * MINUTE_MS
        async with await connect(self.settings.common.database_url, autocommit=True) as conn:
            await store.guard(conn, idle_in_transaction_s=IDLE_IN_TRANSACTION_S)
            taken = await store.lock(conn, shard)
            if taken is None:
                log.info("aggregate%s: still in a job elsewhere; trying again shortly", shard.label)
                report.skipped = "busy"
                return report
            if not shard.whole and not await leases.layout_is(conn, shard.count):
                await store.unlock(conn, taken)
                log.warning("aggregate%s: the number of shards has changed; skipped", shard.label)
                report.skipped = "layout"
                return report
            try:
                await store.create_staging(conn)
                await self.partitions.ensure_ahead(conn, datetime.now(UTC))
                await rollups.set_timezone(conn, self.settings.common.timezone)
                async with asyncio.TaskGroup() as tg:  # device health on a connection of its own
                    health = tg.create_task(self._health(t0, closed_end), name="aggregate-health")
                    await self._minutes(conn, t0, closed_end, report)
                    await self._late(conn, t0, closed_end, report)
                report.events, report.bad_status = report.events + health.result().events, health.result().bad
                await self._cleanup(report)
                report.events += await self._sensor_events(conn)
                if shard.first:
                    report.events += await events.copy_stream(conn, self.redis, self.keys)
                    report.events += await self._completeness(conn)
            finally:
                await store.unlock(conn, taken)
        if report.watermark is not None:
            self._lag((t0 - (int(report.watermark.timestamp() * 1000) + MINUTE_MS)) / 1000)
        log.info(
            "aggregate%s: %d minutes, %d late pairs, %d rows, %d bad snapshots, %d events in %.2f s"
            " (watermark %s)",
            shard.label,
            report.minutes,
            report.late_pairs,
            report.rows,
            report.bad,
            report.events,
            time.monotonic() - started,
            report.watermark.isoformat() if report.watermark else "none",
        )
        memory.release_free_memory()
        return report

    async def _minutes(self, conn: store.Conn, t0: int, closed_end: int, report: JobReport) -> None:
        watermark = await read_watermark(conn, self._shard)
        report.watermark = watermark
        fleet = {
            m: seen for m, seen in (await reader.meters(self.redis, self.keys)).items() if self._shard.owns(m)
        }
        self._fleet = sorted(fleet)  # the live trim's meters too: the fleet is read once a job
        oldest = (t0 - self.settings.retention_s * 1000 + MINUTE_MS - 1) // MINUTE_MS * MINUTE_MS
        if watermark is not None:
            start = int(watermark.timestamp() * 1000) + MINUTE_MS
            if start < oldest:
                log.warning(
                    "aggregate: %d minutes after the watermark are beyond the Redis retention and lost",
                    (oldest - start) // MINUTE_MS,
                )
        else:
            earliest = await reader.earliest_ms(self.redis, self.keys, sorted(fleet))
            if earliest is None:
                if not self._shard.whole and closed_end > oldest:
                    # none of this shard's meters has readings yet: done up to now (a reading of a
                    # closed minute stored later is flagged late), so the fleet's watermark moves on
                    async with conn.transaction():
                        await store.write_watermark(conn, ms_to_dt(closed_end - MINUTE_MS), self._shard)
                return
            start = earliest // MINUTE_MS * MINUTE_MS
        start = max(start, oldest)
        todo = list(range(start, closed_end, MINUTE_MS))
        report.behind_minutes = len(todo)
        if len(todo) > 1:
            log.info(
                "aggregate: %d minutes behind (oldest %s), catching up oldest first",
                len(todo),
                ms_to_dt(start).isoformat(),
            )

        late = frozenset(m for m in await reader.late_meters(self.redis, self.keys) if self._shard.owns(m))
        repaired = await reader.repaired_meters(self.redis, self.keys, sorted(fleet)) if todo else frozenset()

        def _start(minute: int) -> list[asyncio.Future[Result]]:
            pairs = [(meter, minute) for meter, seen in fleet.items() if seen >= minute]
            return self._submit(pairs, late=late, repaired=repaired)

        caught_up = CaughtUp(start=todo[0], end=todo[-1] + MINUTE_MS, fleet=fleet) if todo else CaughtUp()
        # Each minute's parts are written as they come (one transaction per minute); once the last
        # one is in, the next minute is read and computed meanwhile (catch-up).
        upcoming = _start(todo[0]) if todo else []
        try:
            for i, minute in enumerate(todo):
                began = time.monotonic()
                current, upcoming = upcoming, []

                def _last_in(i: int = i) -> None:
                    nonlocal upcoming
                    upcoming = _start(todo[i + 1]) if i + 1 < len(todo) else []

                await self._write_minute(
                    conn, current, minute=minute, t0=t0, report=report, began=began, last_in=_last_in
                )
            self._caught_up = caught_up
        finally:
            for future in upcoming:
                future.cancel()
            if upcoming:  # wait for them, but let a cancellation of this job through (a stop)
                await asyncio.wait(upcoming)
                for future in upcoming:
                    if not future.cancelled():
                        future.exception()  # retrieved: a failed read of a minute not written

    async def _write_minute(
        self,
        conn: store.Conn,
        parts: list[asyncio.Future[Result]],
        *,
        minute: int,
        t0: int,
        report: JobReport,
        began: float,
        last_in: Callable[[], None],
    ) -> None:
        self._rollup_s = 0.0
        bucket = ms_to_dt(minute)
        result = await self._write(conn, parts, watermark=bucket, last_in=last_in)
        log.debug(
            "aggregate: minute %s: %d meters in %.2f s (waiting for parts %.2f s, rollups %.2f s,"
            " after the last part %.2f s)",
            bucket.isoformat(),
            len(result.keys),
            time.monotonic() - began,
            self._wait_s,
            self._rollup_s,
            time.monotonic() - self._last_in_at,
        )
        report.minutes += 1
        report.rows += len(result.keys)
        report.bad += result.bad
        report.events += len(result.events)
        report.watermark = bucket
        self.metrics.minute_duration.observe(time.monotonic() - began)
        self._lag((t0 - minute - MINUTE_MS) / 1000)

    def _lag(self, seconds: float) -> None:
        """The lag gauge: the job's shard's, or the largest of the shards this process held lately."""
        self._lags[self._shard] = seconds
        self.metrics.lag.set(max(self._lags.values()))

    def forget(self, shards: Collection[Shard]) -> None:
        """Leave shards this process no longer holds out of the lag gauge."""
        for shard in [s for s in self._lags if s not in shards]:
            del self._lags[shard]

    async def _late(self, conn: store.Conn, t0: int, closed_end: int, report: JobReport) -> None:
        flags = await reader.late_flags(self.redis, self.keys, self._clocks)
        if not flags:
            return
        handled: list[str] = []
        redo: set[tuple[str, int]] = set()
        written = self._caught_up.wrote
        for member in flags:
            meter, minute = Keys.parse_late_member(member)
            if minute >= closed_end or not self._shard.owns(meter):
                continue  # not closed yet (the regular pass will take it), or another shard's
            handled.append(member)
            if not written(meter, minute):
                redo.add((meter, minute))
        horizon = t0 - self.settings.retention_s * 1000
        kept = await late.kept_as_stored(conn, self.redis, self.keys, redo, horizon=horizon)
        redo -= kept
        self.metrics.late_kept.inc(len(kept))
        firsts = sorted(redo)
        for (meter, _), following in zip(
            firsts, await reader.next_minutes(self.redis, self.keys, firsts), strict=True
        ):
            if following is not None and following < closed_end and not written(meter, following):
                redo.add((meter, following))
        pairs = sorted(redo, key=lambda p: (p[1], p[0]))
        for i in range(0, len(pairs), LATE_CHUNK):
            chunk = self._submit(pairs[i : i + LATE_CHUNK], late=None, repaired=None)
            result = await self._write(conn, chunk, watermark=None)
            report.rows += len(result.keys)
            report.bad += result.bad
            report.events += len(result.events)
        report.late_pairs += len(pairs)
        self.metrics.late.inc(len(pairs))
        await reader.mark_late_done(self.redis, self.keys, handled, self._clocks)
        await reader.clear_late_flags(self.redis, self.keys, handled, self._clocks)

    async def _health(self, t0: int, closed_end: int) -> HealthReport:
        async with await connect(self.settings.common.database_url, autocommit=True) as conn:
            await store.guard(conn, idle_in_transaction_s=IDLE_IN_TRANSACTION_S)
            found = await self.health.run(conn, t0=t0, closed_end=closed_end, shard=self._shard)
        self.metrics.bad_status.inc(found.bad)
        return found

    async def _cleanup(self, report: JobReport) -> None:
        archived = await reader.raw_horizon(self.redis, self.keys)  # None: no raw export runs
        if self._shard.first:  # the hold on each part's clock, which scored its late_done entries
            hold = self.settings.late_hold_s * 1000
            held_after = {prefix: clock - hold for prefix, clock in self._clocks.items()}
            await reader.drop_done_late(self.redis, self.keys, held_after, archived=archived)
        if report.watermark is None:
            return
        done_until = int(report.watermark.timestamp() * 1000) + MINUTE_MS
        # each part's window by its own master's clock, as the ingest decides what is live there
        window = self.settings.retention_s * 1000
        cutoffs = {prefix: min(done_until, clock - window) for prefix, clock in self._clocks.items()}
        await reader.trim_live(self.redis, self.keys, self._fleet, cutoffs, archived=archived)

    def _submit(
        self,
        pairs: Sequence[tuple[str, int]],
        *,
        late: frozenset[str] | None,
        repaired: frozenset[str] | None,
    ) -> list[asyncio.Future[Result]]:
        """Start reading and computing a batch, split over the worker processes, each reading its
        part from Redis itself (reads and validation in parallel; the main process's heap never
        holds the decoded snapshots: aggregator/memory.py). Without worker processes (tests), in a
        thread of this process. One future per part, in no particular order of completion.
        ``late``: the meters that may hold late data (:func:`reader.late_meters`; None: any),
        ``repaired``: those with repaired readings (:func:`reader.repaired_meters`; None: any)."""
        if self.executor is None or not pairs:
            return [asyncio.ensure_future(self._read_compute_here(pairs))]
        loop = asyncio.get_running_loop()
        parts = 4 * self.settings.workers  # small parts: PostgreSQL starts early, and the last one is short
        size = -(-len(pairs) // parts)
        return [
            loop.run_in_executor(
                self.executor,
                functools.partial(
                    read_and_compute,
                    late=None if late is None else late.intersection(m for m, _ in pairs[i : i + size]),
                    repaired=None
                    if repaired is None
                    else repaired.intersection(m for m, _ in pairs[i : i + size]),
                ),
                self.settings.common.redis_url,
                self.keys,
                list(pairs[i : i + size]),
                self.thresholds,
            )
            for i in range(0, len(pairs), size)
        ]

    async def _read_compute_here(self, pairs: Sequence[tuple[str, int]]) -> Result:
        items = await reader.read_items(self.redis, self.keys, pairs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, functools.partial(compute, encode=True), items, self.thresholds
        )

    async def _write(
        self,
        conn: store.Conn,
        parts: list[asyncio.Future[Result]],
        *,
        watermark: datetime | None,
        last_in: Callable[[], None] | None = None,
    ) -> Result:
        """Write a batch's parts in one transaction, each as soon as it is computed (PostgreSQL
        works on one while the workers compute the next): COPY to staging, one upsert, rollups.
        Then the events and the watermark. ``last_in`` is called once every part is in."""
        merged = Result()
        self._wait_s = 0.0
        try:
            async with conn.transaction():
                maybe_folded, bucket_open = True, False
                if watermark is not None:  # a minute pass: fold while the first part is computed
                    await rollups.fold_minute(
                        conn,
                        minute_ms=int(watermark.timestamp() * 1000),
                        timezone=self.settings.common.timezone,
                        shard=self._shard,
                    )
                    maybe_folded = await rollups.folded_after(conn, watermark)
                    bucket_open = await rollups.bucket_open(conn, watermark, self._shard)
                waiting = asyncio.as_completed(parts)
                for n, next_part in enumerate(waiting, start=1):
                    began = time.monotonic()
                    part = await next_part
                    self._wait_s += time.monotonic() - began
                    if n == len(parts):
                        self._last_in_at = time.monotonic()
                        if last_in is not None:
                            last_in()
                    merged.merge(part)
                    self._rollup_s += await write_part(
                        conn,
                        part,
                        partitions=self.partitions,
                        timezone=self.settings.common.timezone,
                        maybe_folded=maybe_folded,
                        new_minute=watermark is not None,
                        bucket_open=bucket_open,
                    )
                inserted = await insert_events(conn, merged.events)
                if watermark is not None:
                    minute_ms = int(watermark.timestamp() * 1000)
                    await rollups.note_closed_moves(conn, minute_ms=minute_ms, shard=self._shard)
                    await store.write_watermark(conn, watermark, self._shard)
        except Exception as exc:
            self.partitions.forget()  # a partition made in the rolled-back transaction is gone again
            raise AggregateError(f"writing {len(merged.keys)} rows failed: {exc}") from exc
        finally:
            for future in parts:  # the parts not written yet when a write failed
                future.cancel()
        self.metrics.rows.inc(len(merged.keys))
        self.metrics.bad.inc(merged.bad)
        self.metrics.events.inc(inserted)
        return merged

    async def _completeness(self, conn: store.Conn) -> int:
        inserted = await self.completeness.run(conn, await read_watermark(conn))
        self.metrics.events.inc(inserted)
        return inserted

    async def _sensor_events(self, conn: store.Conn) -> int:
        async with conn.transaction():
            found = await events.sensor_events(conn, self.redis, self.keys, self._shard)
            inserted = await insert_events(conn, found)
        self.metrics.events.inc(inserted)
        return inserted
