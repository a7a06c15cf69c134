"""Gap repair on real Mosquitto + Redis: resend requests for exactly the holes after the grace period,
backoff, the per-worker limit, acks (not held, refused, malformed), and readings resent by meters."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis

from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.redis_store import RedisStore
from enerlink.ingest.validate import Measurement, ResendAck
from enerlink.schemas.delivery import ResendCommand
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_delivery_support import holds, listening, readings, record, retained
from tests.support.ingest_support import (
    ago,
    data_message,
    epoch_ms,
    ingest_settings,
    iso,
    publisher,
    running,
    wait_until,
)
from tests.support.services import Broker


def _ack(
    meter: str, command_id: str | None, *, resent: int = 0, not_held: list[list[int]] | None = None
) -> bytes:
    body = {
        "meterId": meter,
        "datetime": iso(datetime.now(UTC)),
        "cmd": "resend",
        "id": command_id,
        "ok": True,
        "result": {"resent": resent, "not_held": not_held or []},
    }
    return orjson.dumps(body)


async def test_hole_is_asked_for_after_grace_with_backoff_until_not_held(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    grace = 1.0
    settings = ingest_settings(
        environ, confirm_interval_s=0.2, gap_grace_s=grace, resend_backoff_s=0.5, resend_backoff_max_s=2.0
    )
    meter = "REPAIR1"
    start = ago(minutes=4)
    async with (
        running(settings, metrics),
        publisher(broker.url) as pub,
        listening(broker.url, [topics.command(meter)]) as heard,
    ):
        for payload in readings(meter, [1, 2, 3], start=start):
            await pub.one(topics.data, payload)
        await wait_until(lambda: holds(redis_client, keys, meter, 3))
        await asyncio.sleep(0.6)
        assert heard.messages == []  # no hole, no request
        for payload in readings(meter, [6, 7], start=start):
            await pub.one(topics.data, payload)
        hole_seen = time.monotonic()
        await wait_until(lambda: holds(redis_client, keys, meter, 5))
        requests = await heard.wait_for(topics.command(meter), 4)
        commands = [ResendCommand.model_validate(m.body) for m in requests]
        assert all(c.ranges == [(4, 5)] for c in commands), commands  # exactly the hole
        assert len({c.id for c in commands}) == len(commands)
        assert all(m.expiry is not None and m.expiry >= 1 for m in requests)  # stale requests expire
        assert requests[0].at - hole_seen >= 0.9 * grace
        gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
        # attempt n waits uniform(c/2, c), c = min(2.0, 0.5 * 2**(n-1)): 0.25-0.5, 0.5-1, 1-2 s
        assert gaps[0] >= 0.2 and gaps[1] >= 0.45 and gaps[2] >= 0.9, gaps
        rec = await record(redis_client, keys, meter)
        assert rec is not None and rec.attempts >= 4

        # the meter no longer holds 4-5: recorded as lost, never asked again, confirmed through 7
        await pub.one(topics.command_ack(meter), _ack(meter, commands[-1].id, not_held=[[4, 5]]))
        await wait_until(lambda: _through(redis_client, keys, meter, 7), what="through 7")
        asked = len(heard.on(topics.command(meter)))
        await asyncio.sleep(2.5)  # longer than the backoff's cap
        assert len(heard.on(topics.command(meter))) <= asked + 1  # at most one already on its way
        settled = len(heard.on(topics.command(meter)))
        await asyncio.sleep(2.5)
        assert len(heard.on(topics.command(meter))) == settled
    assert await redis_client.zscore(keys.resend_due, meter) is None
    assert metrics.not_held._value.get() == 2
    assert metrics.resend_acks.labels(outcome="ok")._value.get() == 1
    assert metrics.resend_requests._value.get() == settled
    confirmation = await retained(broker.url, topics.confirm(meter))
    assert confirmation is not None and confirmation["through"] == 7 and confirmation["ranges"] == []


async def test_a_single_reading_not_held_is_recorded_as_lost(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """``not_held`` ``[[2, 2]]`` (what an edge answers for one reading it no longer has) is written ``2``
    to the store script, which takes it like a range: the hole is closed, the record confirmed through 3."""
    keys = Keys(key_prefix)
    store = RedisStore(client=redis_client, keys=keys, retention_ms=10**13, confirm_interval_ms=1000)
    at = epoch_ms(ago(minutes=1))
    data = [
        Measurement("data", "ONE", at + s, s, data_message("ONE", at=ago(minutes=1), seq=s)) for s in (1, 3)
    ]
    await store.write(data)
    rec = await record(redis_client, keys, "ONE")
    assert rec is not None and (rec.through, rec.ranges) == (1, [(3, 3)])
    result = await store.write([ResendAck("ONE", "c1", ok=True, not_held=[(2, 2)], error="")])
    assert result.flags == [1]  # one seq newly recorded as not held
    rec = await record(redis_client, keys, "ONE")
    assert rec is not None and (rec.through, rec.ranges) == (3, [])


async def _through(client: aioredis.Redis, keys: Keys, meter: str, through: int) -> bool:
    rec = await record(client, keys, meter)
    return rec is not None and rec.through == through


async def test_outstanding_requests_are_limited_per_worker(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    settings = ingest_settings(
        environ, confirm_interval_s=0.2, gap_grace_s=0.3, resend_concurrency=2, resend_backoff_s=60.0
    )
    meters = [f"LIMIT{i}" for i in range(5)]
    start = ago(minutes=4)
    async with (
        running(settings, metrics),
        publisher(broker.url) as pub,
        listening(broker.url, [topics.command(m) for m in meters]) as heard,
    ):
        for meter in meters:
            await pub.many((topics.data, p) for p in readings(meter, [1, 2, 5], start=start))
        for meter in meters:
            await wait_until(lambda m=meter: holds(redis_client, keys, m, 3))  # type: ignore[misc]
        await wait_until(lambda: _count(heard, 2), what="two requests")
        await asyncio.sleep(1.5)  # every meter is due by now; only two slots
        assert len(heard.messages) == 2
        assert metrics.resend_outstanding._value.get() == 2
        # one meter answers by resending its readings: its slot frees, a third meter is asked
        first = heard.messages[0]
        meter = first.topic.split("/")[-2]
        assert first.body["ranges"] == [[3, 4]]
        for payload in readings(meter, [3, 4], start=start):
            await pub.one(topics.resent, payload)
        await pub.one(topics.command_ack(meter), _ack(meter, first.body["id"], resent=2))
        await wait_until(lambda: _count(heard, 3), what="a third request")
        await asyncio.sleep(0.5)
        assert len(heard.messages) == 3
        assert len({m.topic for m in heard.messages}) == 3
    rec = await record(redis_client, keys, meter)
    assert rec is not None and rec.through == 5 and rec.holes() == []
    repaired = await redis_client.zrange(keys.repaired(meter), 0, -1, withscores=True)
    assert repaired == [(b"3", epoch_ms(start) + 15_000.0), (b"4", epoch_ms(start) + 20_000.0)]


async def _count(heard: object, n: int) -> bool:
    return len(heard.messages) >= n  # type: ignore[attr-defined]


async def test_resent_readings_store_once_and_are_marked_repaired(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    settings = ingest_settings(environ, confirm_interval_s=0.2, gap_grace_s=60.0)
    meter = "RESENT1"
    start = ago(minutes=3)
    payloads = dict(zip([1, 2, 3, 4, 5], readings(meter, [1, 2, 3, 4, 5], start=start), strict=True))
    async with running(settings, metrics), publisher(broker.url) as pub:
        for seq in (1, 2, 3, 5):
            await pub.one(topics.data, payloads[seq])
        await wait_until(lambda: holds(redis_client, keys, meter, 4))
        await redis_client.delete(keys.late_minutes)
        # a resend of a reading already stored: nothing new
        await pub.one(topics.resent, payloads[2])
        # the missing one, resent twice
        await pub.one(topics.resent, payloads[4])
        await pub.one(topics.resent, payloads[4])
        await wait_until(lambda: _through(redis_client, keys, meter, 5), what="through 5")
        await asyncio.sleep(0.3)
    stored = [encode_snapshot(payloads[s]) for s in (1, 2, 3, 4, 5)]
    assert await redis_client.zrange(keys.timeseries(meter), 0, -1) == stored
    at4 = epoch_ms(start) + 20_000
    assert await redis_client.zrange(keys.repaired(meter), 0, -1, withscores=True) == [(b"4", float(at4))]
    assert 0 < await redis_client.pttl(keys.repaired(meter)) <= settings.retention_ms
    minute = at4 - at4 % 60_000
    assert await redis_client.zrange(keys.late_minutes, 0, -1) == [Keys.late_member(meter, minute).encode()]
    assert metrics.repaired._value.get() == 1
    assert metrics.duplicates._value.get() == 2
    assert metrics.stored.labels(kind="data")._value.get() == 5


async def test_bad_acks_and_bad_resent_messages_are_rejected_with_a_reason(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    metrics = IngestMetrics()
    settings = ingest_settings(environ, confirm_interval_s=0.2, gap_grace_s=60.0)
    meter = "BADACK1"
    ack_topic = topics.command_ack(meter)
    good = {"cmd": "resend", "ok": True, "result": {"resent": 0, "not_held": []}}
    malformed = [
        b"not json",
        orjson.dumps({**good, "meterId": "OTHER1"}),  # another meter's ack on this meter's topic
        orjson.dumps({"meterId": meter, "cmd": "resend", "ok": True}),  # no result
        orjson.dumps({**good, "meterId": meter, "result": {"resent": 0, "not_held": [[5, 3]]}}),
        orjson.dumps({**good, "meterId": meter, "ok": "yes"}),
    ]
    refused = orjson.dumps({"meterId": meter, "cmd": "resend", "ok": False, "error": "too many ranges"})
    other_command = orjson.dumps({"meterId": meter, "cmd": "settle", "ok": True, "result": {}})
    bad_resent = [data_message(meter, seq=9, datetime="yesterday"), b"{"]
    start = ago(minutes=2)
    async with running(settings, metrics), publisher(broker.url) as pub:
        for payload in malformed:
            await pub.one(ack_topic, payload)
        await pub.one(ack_topic, refused)
        await pub.one(ack_topic, other_command)
        for payload in bad_resent:
            await pub.one(topics.resent, payload)
        for payload in readings(meter, [1, 2, 3], start=start):
            await pub.one(topics.data, payload)
        await pub.one(topics.resent, readings(meter, [4], start=start)[0])
        await wait_until(lambda: _through(redis_client, keys, meter, 4), what="good data stored")
        await asyncio.sleep(0.3)
    raw_counts: dict[bytes, bytes] = await redis_client.hgetall(keys.rejected_counts)  # type: ignore[assignment]
    counts = {k.decode(): int(v) for k, v in raw_counts.items()}
    assert counts == {"invalid_ack": len(malformed), "bad_datetime": 1, "not_json": 1}
    letters: list[tuple[bytes, dict[bytes, bytes]]] = await redis_client.xrange(keys.rejected)  # type: ignore[assignment]
    by_reason: dict[str, list[dict[bytes, bytes]]] = {}
    for _, fields in letters:
        by_reason.setdefault(fields[b"reason"].decode(), []).append(fields)
    assert {f[b"topic"].decode() for f in by_reason["invalid_ack"]} == {ack_topic}
    assert any(b"OTHER1" in f[b"detail"] for f in by_reason["invalid_ack"])
    resent_letters = by_reason["bad_datetime"] + by_reason["not_json"]
    assert {f[b"topic"].decode() for f in resent_letters} == {topics.resent}
    assert metrics.resend_acks.labels(outcome="malformed")._value.get() == len(malformed)
    assert metrics.resend_acks.labels(outcome="refused")._value.get() == 1
    assert metrics.resend_acks.labels(outcome="ok")._value.get() == 0
    assert int(await redis_client.zcard(keys.timeseries(meter))) == 4
    assert metrics.repaired._value.get() == 1


async def test_two_workers_do_not_ask_the_same_meter_at_once(
    broker: Broker, environ: dict[str, str], redis_client: aioredis.Redis, topic_prefix: str, key_prefix: str
) -> None:
    topics, keys = Topics(topic_prefix), Keys(key_prefix)
    common = {
        "confirm_interval_s": 0.2,
        "gap_grace_s": 0.3,
        "resend_backoff_s": 60.0,
        "share_group": f"g{key_prefix[1:11]}",
    }
    first = ingest_settings(environ, client_id=f"r1-{key_prefix}", **common)
    second = ingest_settings(environ, client_id=f"r2-{key_prefix}", **common)
    meters = [f"TWICE{i}" for i in range(6)]
    async with (
        running(first),
        running(second),
        publisher(broker.url) as pub,
        listening(broker.url, [topics.command(m) for m in meters]) as heard,
    ):
        for meter in meters:
            await pub.many((topics.data, p) for p in readings(meter, [1, 2, 4], start=ago(minutes=3)))
        await wait_until(lambda: _count(heard, len(meters)), what="every meter asked")
        await asyncio.sleep(2.0)  # both workers run many rounds meanwhile
    assert sorted(m.topic for m in heard.messages) == sorted(topics.command(m) for m in meters)
    assert all(m.body["ranges"] == [[3, 3]] for m in heard.messages)
    for meter in meters:
        rec = await record(redis_client, keys, meter)
        assert rec is not None and rec.attempts == 1
