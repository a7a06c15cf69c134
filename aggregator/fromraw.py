"""Minute rows of a day recomputed from raw readings (the raw archive), with the aggregator's own
compute and write path: each reading becomes the member it was in Redis
(``enerlink.schemas.snapshot.encode_snapshot`` of its message), each (meter, minute) an ``Item`` with the
reading before the minute as its baseline (for the day's first minute, the last reading of the
day before, which the caller passes) and its count of re-sent readings; the rows are upserted
into ``telemetry_aggregates`` and the rollups refreshed as a late minute would be. Events are not
raised again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enerlink.aggregator import store
from enerlink.aggregator.compute import MINUTE_MS, Item, Result, Thresholds, compute
from enerlink.aggregator.part import write_part
from enerlink.aggregator.settings import Settings
from enerlink.db import connect, migrate
from enerlink.schemas.snapshot import encode_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawReading:
    meter_id: str
    at_ms: int
    message: bytes  # JSON of the data message
    resent: bool = False


def items(readings: Sequence[RawReading], baselines: Mapping[str, bytes] | None = None) -> list[Item]:
    """One ``Item`` per (meter, minute) holding readings, as the aggregator would have read them."""
    by_meter: dict[str, list[RawReading]] = {}
    for reading in readings:
        by_meter.setdefault(reading.meter_id, []).append(reading)
    out: list[Item] = []
    for meter, own in sorted(by_meter.items()):
        own.sort(key=lambda r: (r.at_ms, encode_snapshot(r.message)))
        baseline = (baselines or {}).get(meter)
        i = 0
        while i < len(own):
            minute = own[i].at_ms // MINUTE_MS * MINUTE_MS
            j = i
            while j < len(own) and own[j].at_ms < minute + MINUTE_MS:
                j += 1
            chosen = own[i:j]
            snapshots = [encode_snapshot(r.message) for r in chosen]
            out.append(Item(meter, minute, snapshots, baseline, sum(r.resent for r in chosen)))
            baseline = snapshots[-1]
            i = j
    return out


async def recompute(
    settings: Settings, readings: Sequence[RawReading], baselines: Mapping[str, bytes] | None = None
) -> Result:
    """Compute and write the minute rows of ``readings``; returns what was written."""
    await migrate(settings.common.database_url)
    thresholds = Thresholds(settings.thermal_warn_c, settings.thermal_crit_c)
    todo = items(readings, baselines)
    result = await asyncio.to_thread(compute, todo, thresholds, encode=True)
    if not result.keys:
        return result
    async with await connect(settings.common.database_url, autocommit=True) as conn:
        key = await store.lock_key(conn)
        await conn.execute("select pg_advisory_lock(%s)", (key,))  # never beside a running job
        try:
            await store.create_staging(conn)
            async with conn.transaction():
                await write_part(
                    conn,
                    result,
                    partitions=store.Partitions(),
                    timezone=settings.common.timezone,
                    maybe_folded=True,
                )
        finally:
            await conn.execute("select pg_advisory_unlock(%s)", (key,))
    log.info(
        "aggregate from raw: %d readings -> %d minute rows, %d bad",
        len(readings),
        len(result.keys),
        result.bad,
    )
    return result
