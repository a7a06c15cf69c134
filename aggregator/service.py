"""The aggregator service: the job (job.py) every minute, ``grace_s`` after the minute ends (an
APScheduler cron tick; a tick that comes while a job still runs is coalesced into the next job), one
job at start-up to catch up, or one job and return (``--once``). The worker processes that decode the
snapshots (memory.py) and the metrics endpoint live as long as the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC

import redis.asyncio as aioredis
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from enerlink.aggregator import memory
from enerlink.aggregator.job import Aggregator, JobReport
from enerlink.aggregator.metrics import Metrics
from enerlink.aggregator.settings import Settings
from enerlink.db import migrate
from enerlink.metrics_server import metrics_server
from enerlink.runtime import describe

log = logging.getLogger(__name__)


def compute_pool(settings: Settings) -> memory.ComputePool:
    """The worker processes (``ENERLINK_AGGREGATE_WORKERS``), renewed every
    ``ENERLINK_AGGREGATE_RENEW_JOBS`` jobs."""
    return memory.ComputePool(settings.workers, renew_after=settings.renew_jobs)


async def run(settings: Settings, *, once: bool = False) -> JobReport | None:
    """Aggregate every minute until cancelled; with ``once``, every complete minute now, then return."""
    await migrate(settings.common.database_url)
    metrics = Metrics()
    async with (
        aioredis.Redis.from_url(settings.common.redis_url) as redis,
        metrics_server(metrics.registry, port=settings.metrics_port, host="0.0.0.0"),
        compute_pool(settings) as pool,
    ):
        aggregator = Aggregator(settings, redis, metrics=metrics, executor=pool)
        if once:
            return await aggregator.run_job()
        await _scheduled(aggregator, settings, pool)
    return None


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
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_loop(aggregator, ticks, pool), name="aggregate-loop")
    finally:
        scheduler.shutdown(wait=False)


async def _loop(aggregator: Aggregator, ticks: asyncio.Queue[None], pool: memory.ComputePool) -> None:
    failed = 0  # jobs failed in a row (Redis or PostgreSQL down: each tick, once a minute, tries again)
    while True:
        await ticks.get()
        try:
            await aggregator.run_job()
        except Exception as exc:
            failed += 1
            aggregator.metrics.failures.inc()
            log.error(  # the traceback once a streak: the same error every minute says nothing new
                "aggregate: job failed (attempt %d): %s; the next tick retries",
                failed,
                describe(exc),
                exc_info=exc if failed == 1 else None,
            )
        else:
            if failed:
                log.info("aggregate: job succeeded after %d failed attempt(s)", failed)
            failed = 0
        await pool.job_done()
