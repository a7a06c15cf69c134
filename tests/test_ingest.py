"""The ingest worker on the real broker and Redis: what lands in which key."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
import redis.asyncio as aioredis

from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import (
    ago,
    data_message,
    epoch_ms,
    ingest_settings,
    publisher,
    running,
    settle,
    status_message,
    wait_until,
)
from tests.support.services import Broker


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return Topics(topic_prefix)


@pytest.fixture
def settings(environ: dict[str, str], uid: str):  # type: ignore[no-untyped-def]
    return ingest_settings(environ, client_id=f"ingest-{uid}")


async def test_fixture_message_reaches_every_key(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
    data_fixture_bytes: bytes,
    status_fixture_bytes: bytes,
) -> None:
    # the fixture is from 2025: older than the window, so it lands in late_data; a copy dated now
    # lands in the live time series
    fresh = data_message("METER001", at=ago(seconds=5))
    live = redis_client.pubsub()
    await live.subscribe(keys.live_channel)
    async with running(settings), publisher(broker.url) as pub:
        await pub.one(topics.data, data_fixture_bytes)
        await pub.one(topics.data, fresh)
        await pub.one(topics.status, status_fixture_bytes)
        await wait_until(lambda: redis_client.hexists(keys.latest_status, "METER001"), what="status")
        await wait_until(lambda: _zcard_is(redis_client, keys.timeseries("METER001"), 1), what="series")

    assert await redis_client.hget(keys.latest_data, "METER001") == fresh
    assert await redis_client.hget(keys.latest_status, "METER001") == status_fixture_bytes
    assert await redis_client.zrange(keys.timeseries("METER001"), 0, -1, withscores=True) == [
        (encode_snapshot(fresh), float(epoch_ms(_dt(fresh))))
    ]
    fixture_ms = 1761452830000  # 2025-10-26T04:27:10Z
    assert await redis_client.zrange(keys.late_data("METER001"), 0, -1, withscores=True) == [
        (encode_snapshot(data_fixture_bytes), float(fixture_ms))
    ]
    # the late message's minute is flagged for re-aggregation
    late = await redis_client.zrange(keys.late_minutes, 0, -1)
    assert Keys.late_member("METER001", fixture_ms - fixture_ms % 60_000).encode() in late
    assert 0 < await redis_client.pttl(keys.timeseries("METER001")) <= settings.retention_ms
    assert 0 < await redis_client.pttl(keys.late_data("METER001")) <= settings.retention_ms
    assert 0 < await redis_client.pttl(keys.latest_data) <= settings.retention_ms
    assert await redis_client.hexists(keys.meters, "METER001")
    # status is in its own series
    assert await redis_client.zcard(keys.status_timeseries("METER001")) == 0  # 2025: outside window
    announced = []
    for _ in range(3):
        message = await live.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            announced.append(message["data"])
            break
    assert announced == [fresh]
    await live.aclose()


def _dt(payload: bytes):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromisoformat(orjson.loads(payload)["datetime"].replace("Z", "+00:00"))


async def _zcard_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.zcard(key)) == n


async def test_malformed_rejected_and_counted_good_one_after_is_stored(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
) -> None:
    no_units = json.loads(data_message("M1"))
    del no_units["units"]
    bad = [
        b"{not json",
        json.dumps(no_units).encode(),
        data_message("bad:id"),
    ]
    good = data_message("GOOD1", at=ago(seconds=1))
    async with running(settings), publisher(broker.url) as pub:
        for payload in bad:
            await pub.one(topics.data, payload)
        await pub.one(topics.data, good)
        await wait_until(lambda: redis_client.hexists(keys.latest_data, "GOOD1"), what="good message")
        await wait_until(lambda: _xlen_is(redis_client, keys.rejected, 3), what="3 rejections")

    counts = {k.decode(): int(v) for k, v in (await redis_client.hgetall(keys.rejected_counts)).items()}
    assert counts == {"not_json": 1, "missing_field": 1, "invalid_meter_id": 1}
    entries = await redis_client.xrange(keys.rejected)
    assert [e[b"reason"] for _, e in entries] == [b"not_json", b"missing_field", b"invalid_meter_id"]
    assert all(e[b"topic"] == topics.data.encode() for _, e in entries)
    assert entries[0][1][b"payload"] == b"{not json"
    assert int(entries[0][1][b"received_at"]) > 0
    assert await redis_client.hget(keys.latest_data, "GOOD1") == good
    assert not await redis_client.hexists(keys.latest_data, "bad:id")


async def _xlen_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) == n


async def test_out_of_order_latest_is_newest_series_has_all(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
) -> None:
    newest = data_message("OOO", at=ago(seconds=10))
    older = [data_message("OOO", at=ago(seconds=10 + 5 * i)) for i in range(1, 6)]
    status_new = status_message("OOO", at=ago(seconds=10))
    status_old = status_message("OOO", at=ago(seconds=40))
    async with running(settings), publisher(broker.url) as pub:
        await pub.one(topics.data, newest)
        await pub.one(topics.status, status_new)
        for payload in older:  # edge backfill arriving after the newest
            await pub.one(topics.data, payload)
        await pub.one(topics.status, status_old)
        await wait_until(lambda: _zcard_is(redis_client, keys.timeseries("OOO"), 6), what="6 snapshots")
        await wait_until(lambda: _zcard_is(redis_client, keys.status_timeseries("OOO"), 2), what="status")
    assert await redis_client.hget(keys.latest_data, "OOO") == newest
    assert await redis_client.hget(keys.latest_status, "OOO") == status_new


async def test_seq_gaps_and_duplicates_counted(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
) -> None:
    base = ago(seconds=200)
    messages = {s: data_message("SEQ", at=base.replace(microsecond=0) + _sec(s), seq=s) for s in range(10)}
    order = [0, 1, 2, 5, 6, 3, 9]  # 3,4 then 7,8 skipped; 3 arrives late (fills one)
    order += [6]  # seq 6 sent again: a duplicate (same bytes)
    nosq = data_message("NOSEQ", at=ago(seconds=3))
    async with running(settings), publisher(broker.url) as pub:
        for s in order:
            await pub.one(topics.data, messages[s])
        await pub.one(topics.data, nosq)
        await wait_until(lambda: redis_client.hexists(keys.latest_data, "NOSEQ"), what="last message")
    gaps = json.loads(await redis_client.hget(keys.gaps, "SEQ"))
    assert gaps["last_seq"] == 9
    assert gaps["missed"] == 3  # 4, 7, 8 (3 came late)
    assert gaps["duplicates"] == 1
    assert await redis_client.zcard(keys.timeseries("SEQ")) == 7
    assert not await redis_client.hexists(keys.gaps, "NOSEQ")  # today's firmware: accepted, not tracked
    assert await redis_client.zcard(keys.timeseries("NOSEQ")) == 1


def _sec(n: int):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    return timedelta(seconds=5 * n)


async def test_late_minutes_index_for_every_message_of_an_ended_minute(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
) -> None:
    recent_old = ago(minutes=5)  # inside the window, minute long over: series + late index
    too_old = ago(hours=3)  # outside the 2 h window: late_data + late index
    payloads = [data_message("LATE", at=recent_old), data_message("LATE", at=too_old)]
    async with running(settings), publisher(broker.url) as pub:
        for payload in payloads:
            await pub.one(topics.data, payload)
        await wait_until(lambda: _zcard_is(redis_client, keys.late_data("LATE"), 1), what="late data")
        await wait_until(lambda: _zcard_is(redis_client, keys.late_minutes, 2), what="late index")
        await pub.one(topics.data, payloads[0])  # redelivered/re-sent: nothing new
        await settle(redis_client, [keys.timeseries("LATE"), keys.late_minutes, keys.late_data("LATE")])
    members = await redis_client.zrange(keys.late_minutes, 0, -1, withscores=True)
    minutes = {Keys.parse_late_member(m.decode()) for m, _ in members}
    expected = {("LATE", epoch_ms(t) - epoch_ms(t) % 60_000) for t in (recent_old, too_old)}
    assert minutes == expected
    assert all(score >= epoch_ms(recent_old) for _, score in members)  # score = receipt time
    assert await redis_client.zcard(keys.timeseries("LATE")) == 1
    assert await redis_client.zcard(keys.late_data("LATE")) == 1


async def test_presence_recorded_with_events(
    *,
    broker: Broker,
    settings,  # type: ignore[no-untyped-def]
    keys: Keys,
    topics: Topics,
    redis_client: aioredis.Redis,
    uid: str,
) -> None:

    port = broker.url.rsplit(":", 1)[1]
    will = ["--will-topic", topics.presence("EDGE1"), "--will-payload", '{"online": false}']
    will += ["--will-qos", "1", "--will-retain"]
    async with running(settings):
        # an edge: connected with a last will, then killed (the broker publishes the will)
        async with publisher(broker.url) as pub:
            await pub.one(f"{uid}/ping", b"ping", qos=1, retain=True)
            edge = await asyncio.create_subprocess_exec(
                *["mosquitto_sub", "-p", port, "-i", f"edge-{uid}", "-t", f"{uid}/ping", *will],
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert edge.stdout is not None
                assert await edge.stdout.readline() == b"ping\n"  # connected, will registered
                await pub.one(topics.presence("EDGE1"), b'{"online": true}', qos=1, retain=True)
                await wait_until(lambda: _xlen_is(redis_client, keys.events, 1), what="online event")
                online = json.loads(await redis_client.hget(keys.presence, "EDGE1"))
                assert online["online"] is True
            finally:
                edge.kill()
                await edge.wait()
            await pub.one(f"{uid}/ping", b"", qos=1, retain=True)
        await wait_until(lambda: _xlen_is(redis_client, keys.events, 2), what="offline event")
    events = [e for _, e in await redis_client.xrange(keys.events)]
    assert [e[b"kind"] for e in events] == [b"online", b"offline"]
    assert all(e[b"meter_id"] == b"EDGE1" for e in events)
    offline = json.loads(await redis_client.hget(keys.presence, "EDGE1"))
    assert offline["online"] is False and offline["since"] >= online["since"]
