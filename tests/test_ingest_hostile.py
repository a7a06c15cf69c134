"""Hostile input on the real broker and Redis: every case rejected with its reason, counted, dead-lettered,
and the good messages next to them stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from enerlink.ingest.settings import Settings
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import (
    ago,
    data_message,
    ingest_settings,
    iso,
    publisher,
    running,
    wait_until,
)
from tests.support.services import Broker


def _mutated(path: str, value: Any = None, *, delete: bool = False, meter: str = "H") -> bytes:
    body = json.loads(data_message(meter, at=ago(seconds=30)))
    node = body
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return json.dumps(body).encode()


def _raw_number(path_value: str, literal: str) -> bytes:
    """The fixture with one number replaced by a non-JSON literal (NaN, Infinity)."""
    text = data_message("H", at=ago(seconds=30)).decode()
    assert path_value in text
    return text.replace(path_value, literal, 1).encode()


HOSTILE: list[tuple[str, bytes, str]] = [
    ("not json", b"hello, world", "not_json"),
    ("binary", bytes(range(256)), "not_json"),
    ("empty", b"", "not_json"),
    ("array", b"[1, 2, 3]", "not_object"),
    ("string", b'"METER001"', "not_object"),
    ("number", b"42", "not_object"),
    ("missing soc", _mutated("data.battery.soc", delete=True), "missing_field"),
    ("missing data", _mutated("data", delete=True), "missing_field"),
    ("missing datetime", _mutated("datetime", delete=True), "missing_field"),
    ("soc as string", _mutated("data.battery.soc", "86.6"), "wrong_type"),
    ("bool as int", _mutated("data.battery.is_charging", 1), "wrong_type"),
    ("subsystem as list", _mutated("data.import", [1]), "wrong_type"),
    ("NaN", _raw_number('"soc":86.63281', '"soc":NaN'), "not_finite"),
    ("Infinity", _raw_number('"power":480.2', '"power":Infinity'), "not_finite"),
    ("-Infinity", _raw_number('"power":480.2', '"power":-Infinity'), "not_finite"),
    ("negative counter", _mutated("data.import.total_energy", -1.0), "out_of_range"),
    ("negative daily", _mutated("data.solar_input.daily_energy", -0.5), "out_of_range"),
    ("soc above 100", _mutated("data.battery.soc", 100.5), "out_of_range"),
    ("soc below 0", _mutated("data.battery.soc", -3.0), "out_of_range"),
    ("bad enum", _mutated("data.net_grid.status", "exploding"), "invalid_value"),
    ("datetime garbage", _mutated("datetime", "yesterday at noon"), "bad_datetime"),
    ("datetime naive", _mutated("datetime", "2025-10-26T04:27:10"), "bad_datetime"),
    ("datetime number", _mutated("datetime", 1761452830), "bad_datetime"),
    ("datetime 2 days ahead", _mutated("datetime", iso(ago(days=-2))), "future_datetime"),
    # what pydantic alone would accept but a reader of the stored message could not use
    ("datetime lowercase z", _mutated("datetime", "2025-10-26T04:27:10z"), "bad_datetime"),
    ("datetime year 1, no UTC value", _mutated("datetime", "0001-01-01T00:30:00+01:00"), "bad_datetime"),
    ("datetime before 1970", _mutated("datetime", "1969-12-31T23:59:59Z"), "bad_datetime"),
    ("seq beyond 10^14", _mutated("seq", 10**14), "out_of_range"),
    (
        "seq 10^309",
        data_message("H", at=ago(seconds=30), seq=1).replace(b'"seq":1', b'"seq":1' + b"0" * 309),
        "out_of_range",
    ),
    ("meterId colon", _mutated("meterId", "METER:001"), "invalid_meter_id"),
    ("meterId star", _mutated("meterId", "METER*"), "invalid_meter_id"),
    ("meterId space", _mutated("meterId", "METER 001"), "invalid_meter_id"),
    ("meterId 1 KB", _mutated("meterId", "M" * 1024), "invalid_meter_id"),
    ("meterId empty", _mutated("meterId", ""), "invalid_meter_id"),
    ("meterId number", _mutated("meterId", 1), "invalid_meter_id"),
    ("over 256 KB", _mutated("padding", "x" * 300_000), "payload_too_large"),
]


@pytest.fixture
def settings(environ: dict[str, str], uid: str) -> Settings:
    return ingest_settings(environ, client_id=f"ingest-{uid}")


async def test_every_hostile_case_rejected_with_reason_and_neighbours_stored(
    *,
    broker: Broker,
    settings: Settings,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    good = [data_message(f"GOOD{i}", at=ago(seconds=60 - i)) for i in range(len(HOSTILE) + 1)]
    async with running(settings), publisher(broker.url) as pub:
        await pub.one(topics.data, good[0])
        for i, (_, payload, _) in enumerate(HOSTILE, start=1):
            await pub.one(topics.data, payload)
            await pub.one(topics.data, good[i])
        await wait_until(lambda: _xlen(redis_client, keys.rejected, len(HOSTILE)), what="rejections")
        await wait_until(lambda: _hlen(redis_client, keys.latest_data, len(good)), what="good ones")

    entries = [fields for _, fields in await redis_client.xrange(keys.rejected)]
    got = [(e[b"reason"].decode(), e[b"payload"]) for e in entries]
    expected = [(reason, payload[:1024]) for _, payload, reason in HOSTILE]
    for (name, _, _), seen, want in zip(HOSTILE, got, expected, strict=True):
        assert seen == want, name
    assert all(e[b"topic"] == topics.data.encode() for e in entries)
    counts = {k.decode(): int(v) for k, v in (await redis_client.hgetall(keys.rejected_counts)).items()}
    want_counts: dict[str, int] = {}
    for _, _, reason in HOSTILE:
        want_counts[reason] = want_counts.get(reason, 0) + 1
    assert counts == want_counts
    for i, payload in enumerate(good):
        assert await redis_client.hget(keys.latest_data, f"GOOD{i}") == payload
    # nothing of the hostile messages reached any meter's data
    assert set(await redis_client.hkeys(keys.latest_data)) == {f"GOOD{i}".encode() for i in range(len(good))}


async def test_accepted_edge_cases_are_stored_unchanged(
    *,
    broker: Broker,
    settings: Settings,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    """Unknown fields at every level are kept, a slightly-ahead clock and the limits themselves pass."""
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    body = json.loads(data_message("EXTRA", at=ago(seconds=20)))
    body["firmware"] = {"version": "3.1.0", "features": ["ota"]}
    body["data"]["battery"]["temperature"] = 31.5
    body["data"]["new_subsystem"] = {"x": 1}
    extra = json.dumps(body).encode()
    accepted = {
        "EXTRA": extra,
        "AHEAD": data_message("AHEAD", at=ago(hours=-2)),  # clock 2 h ahead: within a day
        "M" * 64: data_message("M" * 64, at=ago(seconds=5)),  # the longest id
        "a.b_c-9": data_message("a.b_c-9", at=ago(seconds=5)),
        "SOC100": _mutated("data.battery.soc", 100, meter="SOC100"),  # an int for a float, at the limit
    }
    async with running(settings), publisher(broker.url) as pub:
        for payload in accepted.values():
            await pub.one(topics.data, payload)
        await wait_until(lambda: _hlen(redis_client, keys.latest_data, len(accepted)), what="all stored")
    for meter, payload in accepted.items():
        assert await redis_client.hget(keys.latest_data, meter) == payload
        assert await redis_client.zcard(keys.timeseries(meter)) == 1
    assert await redis_client.xlen(keys.rejected) == 0


async def test_payload_limit_is_configurable_and_presence_checked(
    *,
    broker: Broker,
    environ: dict[str, str],
    uid: str,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    settings = ingest_settings({**environ, "ENERLINK_INGEST_MAX_PAYLOAD": "2048"}, client_id=f"i-{uid}")
    big = data_message("BIG", at=ago(seconds=5), padding="y" * 2048)
    small = data_message("SMALL", at=ago(seconds=5))
    assert len(small) <= 2048 < len(big)
    async with running(settings), publisher(broker.url) as pub:
        await pub.one(topics.data, big)
        await pub.one(topics.presence("P1"), b"offline")  # not JSON
        await pub.one(topics.presence("P1"), b'{"online": "yes"}')
        await pub.one(topics.presence("P1"), b"{}")
        await pub.one(topics.status, small)  # a data message on the status topic
        await pub.one(topics.data, small)
        await wait_until(lambda: redis_client.hexists(keys.latest_data, "SMALL"), what="small")
        await wait_until(lambda: _xlen(redis_client, keys.rejected, 5), what="5 rejections")
    reasons = [f[b"reason"] for _, f in await redis_client.xrange(keys.rejected)]
    assert reasons == [b"payload_too_large", b"not_json", b"wrong_type", b"missing_field", b"missing_field"]
    assert not await redis_client.hexists(keys.presence, "P1")
    assert not await redis_client.hexists(keys.latest_status, "SMALL")


async def test_a_message_the_store_script_refuses_is_a_dead_letter_and_its_batch_goes_on(
    *,
    broker: Broker,
    settings: Settings,
    key_prefix: str,
    topic_prefix: str,
    redis_client: aioredis.Redis,
) -> None:
    """A meter's series key of the wrong type (damaged by hand): the store script fails on that meter's
    reading. The worker writes the batch apart, keeps that one reading as a dead letter and stores the
    others, instead of retrying the same batch for ever."""
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    await redis_client.set(keys.timeseries("BROKEN"), "not a sorted set")
    good = [data_message(f"FINE{i}", at=ago(seconds=30 - i)) for i in range(20)]
    bad = data_message("BROKEN", at=ago(seconds=20))
    items = (
        [(topics.data, p) for p in good[:10]] + [(topics.data, bad)] + [(topics.data, p) for p in good[10:]]
    )
    async with running(settings), publisher(broker.url) as pub:
        await pub.many(items)
        await wait_until(lambda: _xlen(redis_client, keys.rejected, 1), what="the dead letter")
        await wait_until(lambda: _hlen(redis_client, keys.latest_data, len(good)), what="the good ones")
        after = data_message("AFTER", at=ago(seconds=1))
        await pub.one(topics.data, after)  # the worker is still there
        await wait_until(lambda: redis_client.hexists(keys.latest_data, "AFTER"), what="a later message")
    [(_, letter)] = await redis_client.xrange(keys.rejected)
    assert letter[b"reason"] == b"store_refused" and letter[b"payload"] == bad[:1024]
    assert b"BROKEN" in letter[b"detail"] and b"WRONGTYPE" in letter[b"detail"]
    assert await redis_client.hgetall(keys.rejected_counts) == {b"store_refused": b"1"}
    for i in range(len(good)):
        assert await redis_client.zcard(keys.timeseries(f"FINE{i}")) == 1
    assert await redis_client.get(keys.timeseries("BROKEN")) == b"not a sorted set"


async def _xlen(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.xlen(key)) >= n


async def _hlen(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.hlen(key)) >= n
