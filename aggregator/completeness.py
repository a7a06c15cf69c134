"""Completeness of each closed hour (enerlink/completeness.py): events and fleet gauges.

An hour is evaluated once, when the aggregator's watermark has passed its end by
``ENERLINK_COMPLETENESS_EVAL_DELAY_S`` (time for the edge to re-send what the pipeline missed): every
meter with a ``seq`` whose share of expected readings received is below
``ENERLINK_COMPLETENESS_THRESHOLD`` gets a ``completeness_low`` event stamped with the hour's start.
The last hour evaluated is kept in ``aggregator_watermark`` (row ``completeness_hour``), written in
the events' transaction, and an event is stored once per (meter, kind, time): re-aggregating the
hour's minutes later, or a restart, never raises it again. After a pause, at most
:data:`MAX_HOURS` hours are caught up. The fleet's figures of the last evaluated hour are exported
as gauges (no per-meter label).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from enerlink import completeness
from enerlink.aggregator import store
from enerlink.aggregator.compute import MINUTE_MS, ms_to_dt
from enerlink.aggregator.metrics import Metrics
from enerlink.db import quote
from enerlink.events import Event, insert_events
from enerlink.schemas.wire import Tables

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MAX_HOURS = 24
STATE = "completeness_hour"  # aggregator_watermark row: start of the last hour evaluated


async def _last_done(conn: store.Conn) -> int | None:
    cur = await conn.execute(
        f"select minute from {quote(Tables.AGGREGATOR_WATERMARK)} where name = %s".encode(), (STATE,)
    )
    row = await cur.fetchone()
    return int(row[0].timestamp() * 1000) if row and row[0] is not None else None


async def _mark_done(conn: store.Conn, hour_ms: int) -> None:
    table = quote(Tables.AGGREGATOR_WATERMARK)
    await conn.execute(
        f"insert into {table} (name, minute) values (%s, %s) on conflict (name) do update"
        f" set minute = greatest({table}.minute, excluded.minute), updated_at = now()".encode(),
        (STATE, ms_to_dt(hour_ms)),
    )


def low_events(parts: list[completeness.Completeness], *, hour: datetime, threshold: float) -> list[Event]:
    out = []
    for part in parts:
        ratio = part.ratio
        if part.meter_id is None or ratio is None or ratio >= threshold:
            continue
        details = {"hour": hour.isoformat(), "threshold": threshold, **part.to_dict()}
        out.append(Event(part.meter_id, hour, completeness.LOW_EVENT, "warning", details))
    return out


class HourlyCompleteness:
    """The aggregator's completeness step, run after each job's minutes and late minutes."""

    def __init__(self, *, threshold: float, delay_s: float, metrics: Metrics) -> None:
        self.threshold = threshold
        self.delay_ms = int(delay_s * 1000)
        self.metrics = metrics
        self._gauged: int | None = None

    def closed_hour(self, watermark: datetime) -> int:
        """Start of the newest hour whose end is ``delay`` before the end of the watermark's minute."""
        done_until = int(watermark.timestamp() * 1000) + MINUTE_MS
        return (done_until - self.delay_ms) // HOUR_MS * HOUR_MS - HOUR_MS

    async def run(self, conn: store.Conn, watermark: datetime | None) -> int:
        """Evaluate the hours closed since the last run; returns the events inserted."""
        if watermark is None:
            return 0
        latest = self.closed_hour(watermark)
        done = await _last_done(conn)
        first = latest if done is None else max(done + HOUR_MS, latest - (MAX_HOURS - 1) * HOUR_MS)
        inserted = 0
        for hour_ms in range(first, latest + HOUR_MS, HOUR_MS):
            began = time.monotonic()
            hour = ms_to_dt(hour_ms)
            async with conn.transaction():
                parts = await completeness.of_fleet(conn, start=hour, end=ms_to_dt(hour_ms + HOUR_MS))
                found = low_events(parts, hour=hour, threshold=self.threshold)
                n = await insert_events(conn, found)
                await _mark_done(conn, hour_ms)
            inserted += n
            self._gauge(parts, hour_ms)
            log.info(
                "completeness: hour %s: %d meters, %d below %.3f, %d events in %.2f s",
                hour.isoformat(),
                len(parts),
                len(found),
                self.threshold,
                n,
                time.monotonic() - began,
            )
        if self._gauged != latest and first > latest:  # a restart: the gauges of the hour done before
            parts = await completeness.of_fleet(conn, start=ms_to_dt(latest), end=ms_to_dt(latest + HOUR_MS))
            self._gauge(parts, latest)
        return inserted

    def _gauge(self, parts: list[completeness.Completeness], hour_ms: int) -> None:
        fleet = completeness.total(parts)
        m = self.metrics
        m.completeness_hour.set(hour_ms / 1000)
        m.completeness_expected.set(fleet.expected or 0)
        m.completeness_received.set(sum(p.received for p in parts if p.expected is not None))
        m.completeness_repaired.set(fleet.repaired or 0)
        m.completeness_missing.set(fleet.missing or 0)
        m.completeness_meters.set(sum(1 for p in parts if p.expected is not None))
        m.completeness_below.set(sum(1 for p in parts if (r := p.ratio) is not None and r < self.threshold))
        self._gauged = hour_ms
