"""A late reading of a closed minute that arrives just inside the live window (a meter back after
nearly the window's length offline) would be trimmed from the live series by the meter's next write,
maybe before the aggregator read it; with the ingest's late margin it goes to late data, which only
the aggregator's handling drops. Real Redis, the real store script."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from enerlink.config import Env
from enerlink.ingest.redis_store import LATE_DATA, LATE_MINUTE, NEW, RedisStore
from enerlink.ingest.settings import LATE_MARGIN_MS, Settings
from enerlink.ingest.validate import Measurement
from enerlink.schemas.telemetry import epoch_ms
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import (
    ago,
    data_message,
    ingest_settings,
    publisher,
    running,
    wait_until,
)
from tests.support.services import Broker

WINDOW_MS = 120_000
MARGIN_MS = 30_000


def _reading(meter: str, *, ms_ago: int, seq: int) -> Measurement:
    at = ago(seconds=ms_ago / 1000)
    return Measurement(
        kind="data", meter_id=meter, at_ms=epoch_ms(at), seq=seq, payload=data_message(meter, at=at, seq=seq)
    )


async def _edge_then_trimmed(
    redis_client: aioredis.Redis, keys: Keys, meter: str, *, margin_ms: int
) -> tuple[int, int]:
    """Store a reading 110 s old: 10 s inside the 120 s window, in its oldest 30 s, of a closed
    minute. Then a new reading through a store with a 100 s window, whose write trims the series as
    the meter's next writes would once the window has passed the reading. Returns the first write's
    flags and the old reading's score."""
    store = RedisStore(client=redis_client, keys=keys, retention_ms=WINDOW_MS, late_margin_ms=margin_ms)
    old = _reading(meter, ms_ago=110_000, seq=1)
    first = await store.write([old])
    later = RedisStore(client=redis_client, keys=keys, retention_ms=100_000)
    await later.write([_reading(meter, ms_ago=0, seq=2)])
    return first.flags[0], old.at_ms


async def test_without_a_margin_the_next_write_trims_it(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    flags, at = await _edge_then_trimmed(redis_client, keys, "EDGE0", margin_ms=0)
    assert flags & NEW and flags & LATE_MINUTE and not flags & LATE_DATA
    live = [int(s) for _, s in await redis_client.zrange(keys.timeseries("EDGE0"), 0, -1, withscores=True)]
    assert at not in live  # gone, whether or not the aggregator had read it
    assert await redis_client.zcard(keys.late_data("EDGE0")) == 0


async def test_with_the_margin_it_waits_in_late_data(redis_client: aioredis.Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    flags, at = await _edge_then_trimmed(redis_client, keys, "EDGE1", margin_ms=MARGIN_MS)
    assert flags & NEW and flags & LATE_MINUTE and flags & LATE_DATA
    late = [int(s) for _, s in await redis_client.zrange(keys.late_data("EDGE1"), 0, -1, withscores=True)]
    assert late == [at]  # still held after the next write, for the aggregator's late pass
    member = Keys.late_member("EDGE1", at - at % 60_000)
    assert await redis_client.zscore(keys.late_minutes, member) is not None
    live = [int(s) for _, s in await redis_client.zrange(keys.timeseries("EDGE1"), 0, -1, withscores=True)]
    assert at not in live and len(live) == 1  # the new reading is live


async def test_a_reading_of_the_margin_whose_minute_is_open_stays_live(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    # a window shorter than a minute: a reading near its start may belong to the open minute, which
    # the aggregator's regular pass reads from the live series
    keys = Keys(key_prefix)
    store = RedisStore(client=redis_client, keys=keys, retention_ms=2_000, late_margin_ms=1_900)
    into_minute = epoch_ms(ago()) % 60_000
    if not 1_000 <= into_minute <= 55_000:  # half a second back and the write: all in one minute
        await asyncio.sleep((61_500 - into_minute) % 60_000 / 1000)
    reading = _reading("EDGE2", ms_ago=500, seq=1)
    flags = (await store.write([reading])).flags[0]
    assert flags & NEW and not flags & LATE_DATA and not flags & LATE_MINUTE
    assert await redis_client.zcard(keys.timeseries("EDGE2")) == 1
    assert await redis_client.zcard(keys.late_data("EDGE2")) == 0


def test_the_service_margin_is_ten_minutes_or_the_whole_of_a_shorter_window() -> None:
    assert Settings.from_env(Env({})).late_margin_ms == LATE_MARGIN_MS == 600_000
    assert Settings.from_env(Env({"ENERLINK_RETENTION_S": "300"})).late_margin_ms == 300_000


async def test_the_ingest_stores_such_a_reading_as_late_data(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    settings = ingest_settings(environ)
    assert settings.retention_ms == 7_200_000
    message = data_message("EDGE3", at=ago(seconds=7200 - 300))  # five minutes inside the window
    async with running(settings), publisher(broker.url) as pub:
        await pub.one(topics.data, message)
        await wait_until(lambda: _count(redis_client, keys.late_data("EDGE3")))
    assert await redis_client.zcard(keys.timeseries("EDGE3")) == 0
    assert await redis_client.zcard(keys.late_minutes) == 1


async def _count(client: aioredis.Redis, key: str) -> bool:
    return int(await client.zcard(key)) > 0
