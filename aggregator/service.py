"""The aggregator service: the job (job.py) every minute, ``grace_s`` after the minute ends (an
APScheduler cron tick; a tick that comes while a job still runs is coalesced into the next job), one
job at start-up to catch up, or one job and return (``--once``). The worker processes that decode the
snapshots (memory.py) and the metrics endpoint live as long as the service.

With ``ENERLINK_AGGREGATE_SHARDS`` > 1 a tick runs one job per shard this process holds a lease on
(leases.py; a task renews them), and a shard taken over starts a job at once. ``--once`` then runs
every shard in turn: one process alone still does everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from enerlink.aggregator import memory, store
from enerlink.aggregator.job import AggregateError, Aggregator
from enerlink.aggregator.leases import LayoutBusy, LayoutError, Leases, ensure_layout
from enerlink.aggregator.metrics import Metrics
from enerlink.aggregator.report import JobReport
from enerlink.aggregator.settings import Settings
from enerlink.backoff import Backoff
from enerlink.db import connect, migrate
from enerlink.metrics_server import metrics_server
from enerlink.redis_client import async_client, lazily
from enerlink.runtime import describe
from enerlink.shards import Shard

log = logging.getLogger(__name__)


def compute_pool(settings: Settings) -> memory.ComputePool:
    """The worker processes (``ENERLINK_AGGREGATE_WORKERS``), renewed every
    ``ENERLINK_AGGREGATE_RENEW_JOBS`` jobs."""
    return memory.ComputePool(settings.workers, renew_after=settings.renew_jobs)


async def run(settings: Settings, *, once: bool = False) -> JobReport | None:
    """Aggregate every minute until cancelled; with ``once``, every complete minute now, then return
    (every shard's, one after the other)."""
    await migrate(settings.common.database_url)
    await settle_layout(settings)
    metrics = Metrics()
    async with (
        lazily(async_client(settings.common.redis_url)) as redis,
        metrics_server(metrics.registry, port=settings.metrics_port, host="0.0.0.0"),
        compute_pool(settings) as pool,
    ):
        aggregator = Aggregator(settings, redis, metrics=metrics, executor=pool)
        if once:
            report = JobReport()
            for index in range(settings.shards):
                report.add(
                    await _once(aggregator, Shard(index, settings.shards), attempts=int(settings.lease_s * 4))
                )
            return report
        await _scheduled(aggregator, settings, pool)
    return None


async def settle_layout(settings: Settings) -> None:
    """Make ``ENERLINK_AGGREGATE_SHARDS`` the deployment's number of shards before the first job
    (leases.ensure_layout), waiting while a job of the previous number still runs."""
    backoff = Backoff(initial=0.5, cap=settings.lease_s)
    while True:
        try:
            async with (
                await connect(settings.common.database_url, autocommit=True) as conn,
                conn.transaction(),
            ):
                await ensure_layout(conn, settings.shards)
            return
        except LayoutBusy as exc:
            delay = backoff.next_delay()
            log.warning("aggregate: %s (attempt %d, next in %.1f s)", exc, backoff.attempt, delay)
            await asyncio.sleep(delay)


async def _once(aggregator: Aggregator, shard: Shard, *, attempts: int) -> JobReport:
    """One shard's job for ``--once``, tried again each second (at most ``attempts`` times) while
    the shard is in a job elsewhere."""
    report = await aggregator.run_job(shard)
    for _ in range(attempts):
        if report.skipped != "busy":
            break
        await asyncio.sleep(1.0)
        report = await aggregator.run_job(shard)
    if report.skipped:
        raise AggregateError(f"{shard}: {report.skipped} (another aggregator is in its job)")
    return report


async def _scheduled(aggregator: Aggregator, settings: Settings, pool: memory.ComputePool) -> None:
    ticks: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

    def _tick() -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a job still running: coalesce
            ticks.put_nowait(None)

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(_tick, CronTrigger(second=int(settings.grace_s), timezone=UTC), id="aggregate")
    scheduler.start()
    _tick()  # catch up at start-up
    try:
        running = asyncio.get_running_loop()
        later: asyncio.TimerHandle | None = None

        def _retry() -> None:  # one retry pending at a time, however many shards were busy
            nonlocal later
            if later is None or later.when() <= running.time():
                later = running.call_later(settings.lease_s / 3, _tick)

        leases = Leases(owner=member_name(settings), shards=settings.shards, lease_s=settings.lease_s)

        def _shards() -> list[Shard]:
            if settings.shards == 1:
                return [Shard.WHOLE]
            return [Shard(index, settings.shards) for index in sorted(leases.held)]

        async with asyncio.TaskGroup() as tg:
            if settings.shards > 1:
                tg.create_task(_hold(leases, settings, aggregator.metrics, _tick), name="aggregate-leases")
            tg.create_task(_loop(aggregator, ticks, pool, _shards, retry=_retry), name="aggregate-loop")
    finally:
        scheduler.shutdown(wait=False)


def member_name(settings: Settings) -> str:
    """This process among the aggregators: ``ENERLINK_AGGREGATE_NAME``, else host, pid and a random
    suffix (a restarted process is a new member; its old leases expire)."""
    return settings.name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


async def _hold(leases: Leases, settings: Settings, metrics: Metrics, wake: Callable[[], None]) -> None:
    """Renew the leases every third of a lease until cancelled, then give them up. A shard taken
    wakes the job loop; leases not renewed for a whole lease (PostgreSQL unreachable) are dropped
    here too, so this process stops working on shards another may have taken."""
    url, interval = settings.common.database_url, settings.lease_s / 3
    backoff = Backoff(initial=0.5, cap=interval)
    renewed = time.monotonic()
    try:
        while True:
            try:
                async with await connect(url, autocommit=True) as conn:
                    # a renewal is milliseconds: never wait long for another process's, never stay
                    # inside one (a frozen process's table lock would stop every renewal)
                    await store.guard(conn, idle_in_transaction_s=5.0, lock_wait_s=interval)
                    while True:
                        before = leases.held
                        if await leases.renew(conn) - before:
                            wake()
                        metrics.shards_held.set(len(leases.held))
                        renewed = time.monotonic()
                        backoff.reset()
                        await asyncio.sleep(interval)
            except LayoutError:
                raise
            except Exception as exc:
                if time.monotonic() - renewed > settings.lease_s and leases.held:
                    log.error(
                        "aggregate: leases not renewed for %.0f s; giving up %s",
                        settings.lease_s,
                        sorted(leases.held),
                    )
                    leases.held = frozenset()
                    metrics.shards_held.set(0)
                delay = backoff.next_delay()
                log.warning(
                    "aggregate: renewing the shard leases failed (attempt %d, next in %.1f s): %s",
                    backoff.attempt,
                    delay,
                    describe(exc),
                )
                await asyncio.sleep(delay)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5), await connect(url, autocommit=True) as conn:
                await leases.release(conn)


def _stop_if_cancelled() -> None:
    """Stop when this task was cancelled (a stop) and the cancellation got lost inside a job: a
    library that catches it and goes on (a database or Redis call interrupted at the wrong moment)
    would otherwise leave the loop waiting for the next tick while the service drains."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _loop(
    aggregator: Aggregator,
    ticks: asyncio.Queue[None],
    pool: memory.ComputePool,
    shards: Callable[[], list[Shard]],
    *,
    retry: Callable[[], object],
) -> None:
    """A job per shard held at each tick: those held when the tick comes, and those taken meanwhile
    (a shard given up meanwhile is left to its new owner). A shard still in a job elsewhere is
    tried again after a third of a lease (``retry`` schedules a tick)."""
    failed = 0  # jobs failed in a row (Redis or PostgreSQL down: each tick, once a minute, tries again)
    while True:
        await ticks.get()
        aggregator.forget(shards())
        done: set[Shard] = set()
        while todo := [shard for shard in shards() if shard not in done]:
            shard = todo[0]
            done.add(shard)
            try:
                if (await aggregator.run_job(shard)).skipped == "busy":
                    retry()
            except Exception as exc:
                failed += 1
                aggregator.metrics.failures.inc()
                log.error(  # the traceback once a streak: the same error every minute says nothing new
                    "aggregate%s: job failed (attempt %d): %s; the next tick retries",
                    shard.label,
                    failed,
                    describe(exc),
                    exc_info=exc if failed == 1 else None,
                )
            else:
                if failed:
                    log.info("aggregate: job succeeded after %d failed attempt(s)", failed)
                failed = 0
            _stop_if_cancelled()
        await pool.job_done()
