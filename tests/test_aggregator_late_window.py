"""Late readings for a minute that is stored and older than the live window (say the meter re-sends a
reading whose confirmation it never got, hours later): Redis no longer holds that minute's other readings,
so the minute (and the one after it) are left as stored instead of being recomputed from the one late
reading. Real Redis and PostgreSQL."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from enerlink.aggregator.service import run
from enerlink.schemas.wire import Keys
from tests.test_aggregator import MIN, minute_dt, now_ms, put, rows, settings_for, snapshot


def _reading(at: int, wh: float) -> tuple[int, bytes]:
    counters = {"import__total_energy": wh, "import__daily_energy": wh, "import__settlement_energy": wh}
    return at, snapshot("W", at, import__power=float(wh), **counters)


async def test_a_late_reading_does_not_replace_a_stored_minute_older_than_the_window(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ, ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    keys = settings.common.keys
    url = settings.common.database_url
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    m = last_closed - 3 * MIN
    readings = [_reading(m - 5000, 10.0)] + [_reading(m + 5000 * i, 10.0 + 0.05 * (i + 1)) for i in range(12)]
    readings.append(_reading(m + MIN + 5000, 11.0))
    await put(redis_client, keys, "W", readings)
    await run(settings, once=True)
    before = rows(url)
    assert before[("W", minute_dt(m))]["sample_count"] == 12
    assert before[("W", minute_dt(m))]["import_energy_wh"] == pytest.approx(0.6)

    # the window passed over the minute: its readings are trimmed, all but the newest one
    await redis_client.zremrangebyscore(keys.timeseries("W"), "-inf", m + MIN)
    # one of them comes again, late (as the ingest stores a re-sent reading older than the window)
    at, raw = readings[3]
    await put(redis_client, keys, "W", [(at, raw)], late=True)
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("W", m): await now_ms(redis_client)})
    window_60 = settings_for(environ, ENERLINK_RETENTION_S="60", ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    report = await run(window_60, once=True)
    assert report is not None and report.late_pairs == 0
    after = rows(url)
    assert after == before  # neither the minute nor the next one replaced by less
    assert await redis_client.zcard(keys.late_minutes) == 0  # handled

    # the whole minute re-sent, but not the reading before it (its baseline; one ten minutes earlier
    # is not it): kept as well
    await put(redis_client, keys, "W", [_reading(m - 10 * MIN, 9.0), *readings[1:13]], late=True)
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("W", m): await now_ms(redis_client)})
    report = await run(window_60, once=True)
    assert report is not None and report.late_pairs == 0 and rows(url) == before

    # within the window the same late reading is aggregated again (the minute's readings are there)
    await put(redis_client, keys, "W", readings[:13])
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("W", m): await now_ms(redis_client)})
    report = await run(settings, once=True)
    assert report is not None and report.late_pairs >= 1
    assert rows(url) == before
