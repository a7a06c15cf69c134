"""Both ways of reading a batch from Redis (a script in-process, plain commands in worker
processes) return the same snapshots and baselines, late data included."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from enerlink.aggregator.reader import read_items, read_items_sync
from tests.conftest import TEST_REDIS_URL
from tests.test_aggregator import MIN, now_ms, put, settings_for, snapshot, stored


async def test_script_and_plain_reads_agree(environ: dict[str, str], redis_client: aioredis.Redis) -> None:
    keys = settings_for(environ).common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 5 * MIN
    await put(
        redis_client,
        keys,
        "A",
        [(m - 20_000, snapshot("A", m - 20_000)), (m + 5_000, snapshot("A", m + 5_000))],
    )
    # B: its newest point before the minute is late data; a late snapshot inside the minute too
    await put(
        redis_client,
        keys,
        "B",
        [(m - 30_000, snapshot("B", m - 30_000)), (m + 1_000, snapshot("B", m + 1_000))],
    )
    await put(
        redis_client,
        keys,
        "B",
        [(m - 10_000, snapshot("B", m - 10_000, import__power=1.0)), (m + 9_000, snapshot("B", m + 9_000))],
        late=True,
    )
    # C: a tie between live and late baselines (the live one wins); D: nothing at all
    await put(redis_client, keys, "C", [(m - 7_000, snapshot("C", m - 7_000, import__power=2.0))])
    await put(redis_client, keys, "C", [(m - 7_000, snapshot("C", m - 7_000, import__power=3.0))], late=True)
    pairs = [("A", m), ("B", m), ("C", m), ("D", m)]
    scripted = await read_items(redis_client, keys, pairs)
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        plain = read_items_sync(client, keys, pairs)
    finally:
        client.close()
    assert [(i.meter_id, sorted(i.snapshots), i.baseline) for i in scripted] == [
        (i.meter_id, sorted(i.snapshots), i.baseline) for i in plain
    ]
    by_meter = {i.meter_id: i for i in plain}
    assert len(by_meter["A"].snapshots) == 1 and by_meter["A"].baseline == stored(snapshot("A", m - 20_000))
    assert len(by_meter["B"].snapshots) == 2
    assert by_meter["B"].baseline == stored(snapshot("B", m - 10_000, import__power=1.0))
    assert by_meter["C"].baseline == stored(snapshot("C", m - 7_000, import__power=2.0))
    assert by_meter["D"].snapshots == [] and by_meter["D"].baseline is None


async def test_plain_read_error_leaves_the_client_usable(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """An error reply in the middle of a packed batch raises; the connection it left mid-reply is
    not reused, so the next read on the same client gets its own replies, not the leftovers."""
    keys = settings_for(environ).common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 5 * MIN
    await put(redis_client, keys, "A", [(m + 5_000, snapshot("A", m + 5_000))])
    await redis_client.set(keys.timeseries("WRONG"), b"not a sorted set")
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            read_items_sync(client, keys, [("A", m), ("WRONG", m), ("A", m)])
        again = read_items_sync(client, keys, [("A", m), ("D", m)])
    finally:
        client.close()
    assert [len(i.snapshots) for i in again] == [1, 0]
    assert again[0].snapshots == [stored(snapshot("A", m + 5_000))]


async def test_late_keys_are_read_only_for_meters_that_may_hold_late_data(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """The regular pass reads a meter's late key only when the meter has a minute flagged in
    ``late_minutes`` or ``late_done`` (every late message's minute is flagged when stored)."""
    from enerlink.aggregator.reader import late_meters

    keys = settings_for(environ).common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 5 * MIN
    for meter in ("B", "E"):
        await put(redis_client, keys, meter, [(m + 1_000, snapshot(meter, m + 1_000))])
        await put(
            redis_client,
            keys,
            meter,
            [(m - 10_000, snapshot(meter, m - 10_000)), (m + 9_000, snapshot(meter, m + 9_000))],
            late=True,
        )
    assert await late_meters(redis_client, keys) == frozenset()
    await redis_client.zadd(keys.late_minutes, {keys.late_member("B", m - MIN): 1})
    await redis_client.zadd(keys.late_done, {keys.late_member("E|x", m): 1})  # a meter id with "|"
    assert await late_meters(redis_client, keys) == {"B", "E|x"}
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        pairs = [("B", m), ("E", m)]
        everything = read_items_sync(client, keys, pairs)
        flagged = read_items_sync(client, keys, pairs, late=frozenset({"B"}))
        none = read_items_sync(client, keys, pairs, late=frozenset())
    finally:
        client.close()
    assert [(len(i.snapshots), i.baseline) for i in everything] == [
        (2, stored(snapshot("B", m - 10_000))),
        (2, stored(snapshot("E", m - 10_000))),
    ]
    assert [(len(i.snapshots), i.baseline) for i in flagged] == [
        (2, stored(snapshot("B", m - 10_000))),
        (1, None),
    ]
    assert [(len(i.snapshots), i.baseline) for i in none] == [(1, None), (1, None)]
