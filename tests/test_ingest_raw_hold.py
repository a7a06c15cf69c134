"""The ingest's own trim of the live window waits for the raw export: while the archiver's state
(``Keys.raw_export``) says a reading is not archived yet, the store script keeps it past the window, for
at most ``raw_hold_ms``; without a raw export it trims at the window as before. Real Redis, the real
store script."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from enerlink.ingest.redis_store import LATE_DATA, NEW, RedisStore
from enerlink.ingest.validate import Measurement
from enerlink.schemas.telemetry import epoch_ms
from enerlink.schemas.wire import Keys
from tests.support.ingest_support import ago, data_message

WINDOW_MS = 3000
HOUR_MS = 3_600_000


def _reading(meter: str, *, ms_ago: int, seq: int) -> Measurement:
    at = ago(seconds=ms_ago / 1000)
    payload = data_message(meter, at=at, seq=seq)
    return Measurement(kind="data", meter_id=meter, at_ms=epoch_ms(at), seq=seq, payload=payload)


async def _old_then_new(
    redis_client: aioredis.Redis, keys: Keys, *, hold_ms: int, archived_through: int | None
) -> tuple[list[int], int, int]:
    """Store a reading 2.5 s old; once it has left the 3 s window, store a new one. Returns the scores
    kept, the old reading's score and the series' TTL. ``archived_through``: the raw export's state,
    relative to the old reading (negative: it is not archived yet), None: no raw export."""
    store = RedisStore(client=redis_client, keys=keys, retention_ms=WINDOW_MS, raw_hold_ms=hold_ms)
    old = _reading("HOLD1", ms_ago=2500, seq=1)
    if archived_through is not None:
        await redis_client.hset(keys.raw_export, mapping={"through": old.at_ms + archived_through, "late": 0})
    await store.write([old])
    await asyncio.sleep(1.0)
    await store.write([_reading("HOLD1", ms_ago=0, seq=2)])
    key = keys.timeseries("HOLD1")
    scores = [int(s) for _, s in await redis_client.zrange(key, 0, -1, withscores=True)]
    return scores, old.at_ms, int(await redis_client.pttl(key))


async def test_without_a_raw_export_the_window_is_trimmed(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    scores, old, ttl = await _old_then_new(
        redis_client, Keys(key_prefix), hold_ms=HOUR_MS, archived_through=None
    )
    assert old not in scores and len(scores) == 1
    assert 0 < ttl <= WINDOW_MS


async def test_a_reading_the_export_lacks_stays_past_the_window(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    scores, old, ttl = await _old_then_new(
        redis_client, Keys(key_prefix), hold_ms=HOUR_MS, archived_through=-1
    )
    assert scores[0] == old and len(scores) == 2
    assert WINDOW_MS < ttl <= WINDOW_MS + HOUR_MS  # the key outlives the window by the hold


async def test_an_archived_reading_is_trimmed_at_the_window(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    scores, old, _ = await _old_then_new(redis_client, Keys(key_prefix), hold_ms=HOUR_MS, archived_through=1)
    assert old not in scores and len(scores) == 1


async def test_the_hold_is_bounded(redis_client: aioredis.Redis, key_prefix: str) -> None:
    # the export is far behind: past the hold (200 ms beyond the window) the reading goes anyway
    scores, old, _ = await _old_then_new(
        redis_client, Keys(key_prefix), hold_ms=200, archived_through=-HOUR_MS
    )
    assert old not in scores and len(scores) == 1


async def test_a_hold_of_zero_trims_at_the_window(redis_client: aioredis.Redis, key_prefix: str) -> None:
    scores, old, _ = await _old_then_new(redis_client, Keys(key_prefix), hold_ms=0, archived_through=-1)
    assert old not in scores and len(scores) == 1


async def test_a_held_reading_delivered_again_is_not_stored_twice(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """The same reading again (a broker redelivery, the meter's re-send) after it left the window
    while the raw export still holds it in the series: a duplicate, not a new late reading."""
    keys = Keys(key_prefix)
    store = RedisStore(client=redis_client, keys=keys, retention_ms=WINDOW_MS, raw_hold_ms=HOUR_MS)
    old = _reading("HOLD2", ms_ago=2500, seq=7)
    await redis_client.hset(keys.raw_export, mapping={"through": old.at_ms - 1, "late": 0})
    first = await store.write([old])
    await asyncio.sleep(1.0)
    again = await store.write([old])
    assert first.flags[0] & NEW and not again.flags[0] & (NEW | LATE_DATA)
    assert await redis_client.zcard(keys.timeseries("HOLD2")) == 1
    assert await redis_client.zcard(keys.late_data("HOLD2")) == 0
