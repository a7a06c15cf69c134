"""The raw export inside the archiver service: one run now, or a run every ``raw_interval_s``.

Each run logs one line (readings, objects, bytes, duration) and counts itself in Prometheus; a
failed run is logged, counted and retried at the next interval (nothing of it was recorded). A
process killed at any moment leaves the manifest and the state as after the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge

from enerlink.archiver.raw_export import RawExporter, RawHooks, RawReport
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import ObjectStore
from enerlink.redis_client import sync_client

log = logging.getLogger(__name__)


class RawMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("enerlink_raw_export_runs", "Raw export runs that completed", registry=registry)
        self.failures = Counter(
            "enerlink_raw_export_failures", "Raw export runs that failed", registry=registry
        )
        self.readings = Counter(
            "enerlink_raw_export_readings", "Readings written to raw objects", registry=registry
        )
        self.objects = Counter("enerlink_raw_export_objects", "Raw objects written", registry=registry)
        self.bytes = Counter("enerlink_raw_export_bytes", "Bytes of raw objects written", registry=registry)
        self.bad = Counter(
            "enerlink_raw_export_bad",
            "Stored snapshots that are not data messages (left out)",
            registry=registry,
        )
        self.beyond_window = Counter(
            "enerlink_raw_export_hours_beyond_window",
            "Hours exported after they had left the Redis window (readings may be missing)",
            registry=registry,
        )
        self.through = Gauge(
            "enerlink_raw_export_through_seconds",
            "Epoch seconds before which every reading is in the raw archive",
            registry=registry,
        )


def raw_now(
    settings: Settings,
    store: ObjectStore,
    stop: threading.Event,
    *,
    hooks: RawHooks | None = None,
    metrics: RawMetrics | None = None,
) -> RawReport:
    """One raw export run (synchronous); raises on failure after counting it."""
    started = time.monotonic()
    try:
        with (
            psycopg.connect(settings.common.database_url, autocommit=True) as conn,
            sync_client(settings.common.redis_url) as client,
        ):
            exporter = RawExporter(
                conn=conn,
                redis=client,
                keys=settings.common.keys,
                store=store,
                grace_s=settings.raw_grace_s,
                retention_s=settings.redis_retention_s + settings.raw_hold_s,
                stop=stop,
                hooks=hooks or RawHooks(),
            )
            report = exporter.run()
    except Exception as exc:
        if metrics:
            metrics.failures.inc()
        log.error("raw export failed after %.1f s: %s", time.monotonic() - started, exc)
        raise
    seconds = time.monotonic() - started
    if metrics:
        metrics.runs.inc()
        metrics.readings.inc(report.readings)
        metrics.objects.inc(report.objects)
        metrics.bytes.inc(report.bytes)
        metrics.bad.inc(report.bad)
        metrics.beyond_window.inc(report.beyond_window)
        if report.through:
            metrics.through.set(report.through.timestamp())
    log.info(
        "raw export: %d readings (%d late) in %d objects, %.1f kB, %d hours, %d bad, through %s, %.2f s",
        report.readings,
        report.late,
        report.objects,
        report.bytes / 1e3,
        report.hours,
        report.bad,
        report.through.isoformat() if report.through else "-",
        seconds,
    )
    return report


def raw_off(settings: Settings) -> None:
    """The raw export is switched off: remove its Redis state, so the aggregator no longer holds
    readings back for it."""
    with sync_client(settings.common.redis_url) as client:
        names = [part.raw_export for part in settings.common.keys.each_part()]
        if sum(int(client.delete(name)) for name in names):
            log.warning(
                "raw export is off (ENERLINK_RAW_EXPORT_INTERVAL_S=0): the live window is trimmed freely"
            )


async def raw_loop(settings: Settings, store: ObjectStore, metrics: RawMetrics) -> None:
    """A run now and every ``raw_interval_s`` until cancelled (the run in flight is stopped first)."""
    while True:
        stop = threading.Event()
        future = asyncio.ensure_future(asyncio.to_thread(raw_now, settings, store, stop, metrics=metrics))
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.gather(future, return_exceptions=True)
            raise
        except Exception:  # logged and counted in raw_now; the next interval retries
            pass
        await asyncio.sleep(settings.raw_interval_s)
