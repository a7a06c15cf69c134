"""The raw export on real Redis and PostgreSQL, into the local folder and moto's S3 server through the
real minio client: every reading archived once, verified, kept in Redis until then, served, and
enough to recompute the minute rows."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from enerlink.aggregator import reader
from enerlink.archiver import raw_objects
from enerlink.archiver.raw_export import CLOCK_MARGIN_MS, RawHooks, RawReport
from enerlink.archiver.raw_format import Reading, read_parquet, to_messages, to_table, write_parquet
from enerlink.archiver.raw_service import raw_now
from enerlink.archiver.service import run as archive_run
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Buckets, Keys
from tests.conftest import TEST_REDIS_URL
from tests.support.rawdata import (
    HOUR_MS,
    Stored,
    archived_readings,
    every_part,
    flag_late,
    previous_hour,
    raw_manifest,
    redis_now_ms,
    simulate,
    store,
)


@pytest.fixture
def sync_redis() -> Any:
    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        yield client


def _settings(environ: dict[str, str], **extra: str) -> Settings:
    return Settings.from_env(Env({**environ, "ENERLINK_RAW_EXPORT_GRACE_S": "0", **extra}))


async def _seeded(
    environ: dict[str, str], client: redis.Redis, *, meters: int, seconds: int
) -> tuple[Settings, int, list[Stored]]:
    """Settings, the previous closed hour and the readings of its first ``seconds``, stored in Redis."""
    settings = _settings(environ)
    await migrate(settings.common.database_url)
    hour = previous_hour(client)
    readings = simulate(meters, start_ms=hour, seconds=seconds)
    store(client, settings.common.keys, readings)
    return settings, hour, readings


def _export(settings: Settings, hooks: RawHooks | None = None) -> RawReport:
    return raw_now(settings, open_store(settings.storage), threading.Event(), hooks=hooks)


def _expected(readings: list[Stored]) -> list[tuple[str, int, Any]]:
    return [(r.meter_id, r.at_ms, orjson.loads(r.message)) for r in readings]


def _numbers(value: Any) -> Any:
    """``value`` with every -0.0 as 0.0: the same number (a drained battery's charge rate is -0.0 in
    the simulator's messages); the archive stores numbers, not their spelling."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return 0.0 if isinstance(value, float) and value == 0.0 else value


def _key(item: tuple[str, int, Any]) -> tuple[str, int, bytes]:
    return item[0], item[1], orjson.dumps(_numbers(item[2]), option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_every_reading_of_a_closed_hour_is_archived_once_exactly_as_sent(
    backend: str, request: pytest.FixtureRequest, sync_redis: redis.Redis
) -> None:
    environ = request.getfixturevalue("s3_environ" if backend == "s3" else "environ")
    settings, hour, readings = await _seeded(environ, sync_redis, meters=6, seconds=3600)
    keys = settings.common.keys
    store(sync_redis, keys, simulate(6, start_ms=hour + HOUR_MS, seconds=60))  # the open hour: not yet

    await archive_run(settings, once=True)
    rows = raw_manifest(settings.common.database_url)
    assert {(r["hour"], r["part"]) for r in rows} == {(datetime.fromtimestamp(hour / 1000, UTC).hour, 0)}
    assert {r["grp"] for r in rows} == {Buckets.raw_group(m) for m in {r.meter_id for r in readings}}
    assert sum(r["row_count"] for r in rows) == len(readings)
    archived = archived_readings(settings, rows)
    assert sorted(map(_key, archived)) == sorted(map(_key, _expected(readings)))  # every number, exactly

    # the bytes are a function of the readings: the same group written again is the same object
    object_store = open_store(settings.storage)
    for row in rows:
        group = [
            Reading(r.meter_id, r.message) for r in readings if Buckets.raw_group(r.meter_id) == row["grp"]
        ]
        again = write_parquet(to_table(group)[0])
        assert hashlib.sha256(again).hexdigest() == row["sha256"]
        assert b"".join(object_store.iter_chunks(row["object_key"])) == again

    await archive_run(settings, once=True)  # nothing new: nothing written again
    assert raw_manifest(settings.common.database_url) == rows
    state = sync_redis.hgetall(keys.raw_export)
    assert int(state[b"through"]) == hour + HOUR_MS
    size = sum(r["size_bytes"] for r in rows)
    print(f"{backend}: {len(readings)} readings, {size} bytes, {size / len(readings):.1f} bytes per reading")


async def test_crash_between_writing_objects_and_listing_them(
    environ: dict[str, str], sync_redis: redis.Redis
) -> None:
    settings, hour, readings = await _seeded(environ, sync_redis, meters=5, seconds=1800)
    keys = settings.common.keys
    written: dict[str, str] = {}

    def crash(objects: list[raw_objects.RawObject]) -> None:
        written.update({o.key: o.sha256 for o in objects})
        raise RuntimeError("killed after the objects were written")

    with pytest.raises(RuntimeError):
        _export(settings, RawHooks(before_record=crash))
    assert written and raw_manifest(settings.common.database_url) == []
    assert int(sync_redis.hget(keys.raw_export, "through") or 0) == hour  # nothing may be trimmed yet

    _export(settings)
    rows = raw_manifest(settings.common.database_url)
    assert {r["object_key"]: r["sha256"] for r in rows} == written  # the same objects, same bytes
    archived = archived_readings(settings, rows)
    assert len(archived) == len(readings)
    assert Counter(map(_key, archived)) == Counter(map(_key, _expected(readings)))  # none missing, none twice


async def test_trim_keeps_every_reading_until_the_archive_holds_it(
    environ: dict[str, str], sync_redis: redis.Redis, redis_client: Any
) -> None:
    settings, hour, readings = await _seeded(environ, sync_redis, meters=2, seconds=600)
    keys = settings.common.keys
    meters = sorted({r.meter_id for r in readings})
    now = redis_now_ms(sync_redis)
    hold = every_part(keys, now + HOUR_MS)  # every late datum re-aggregated so far

    # the export has run but the hour is not exported yet (a long grace): nothing of it may go
    _export(_settings(environ, ENERLINK_RAW_EXPORT_GRACE_S="36000"))
    archived = await reader.raw_horizon(redis_client, keys)
    assert archived is not None and archived.through == hour
    assert await reader.trim_live(redis_client, keys, meters, {keys.prefix: now}, archived=archived) == 0
    assert sum(sync_redis.zcard(keys.timeseries(m)) for m in meters) == len(readings)

    _export(settings)  # exported and verified
    # a repaired reading of the exported hour arrives late: kept until the next run archives it
    late = simulate(1, start_ms=hour + 1_234, seconds=10)[0]
    store(sync_redis, keys, [late])
    flag_late(sync_redis, keys, late, at_ms=redis_now_ms(sync_redis))
    archived = await reader.raw_horizon(redis_client, keys)
    assert archived is not None and archived.through == hour + HOUR_MS
    assert archived.keep_from == late.at_ms // 60_000 * 60_000
    await reader.trim_live(redis_client, keys, meters, {keys.prefix: now}, archived=archived)
    assert sync_redis.zscore(keys.timeseries(late.meter_id), encode_snapshot(late.message)) == late.at_ms

    # late data of a re-aggregated minute is not dropped before the archive holds it either
    old = simulate(1, start_ms=hour + 2_000, seconds=10)[0]
    old = Stored(old.meter_id, old.at_ms, old.message.replace(b'"seq":1', b'"seq":99'))
    store(sync_redis, keys, [old], late=True)
    flag_late(sync_redis, keys, old, at_ms=redis_now_ms(sync_redis))
    member = Keys.late_member(old.meter_id, old.at_ms // 60_000 * 60_000)
    await reader.mark_late_done(redis_client, keys, [member], {keys.prefix: redis_now_ms(sync_redis)})
    sync_redis.zrem(keys.late_minutes, member)
    archived = await reader.raw_horizon(redis_client, keys)
    assert await reader.drop_done_late(redis_client, keys, hold, archived=archived) == 0
    assert sync_redis.zcard(keys.late_data(old.meter_id)) == 1

    await asyncio.sleep(CLOCK_MARGIN_MS / 1000 + 0.1)  # the flags older than the next cursor
    report = _export(settings)
    assert report.late == 2  # the two late readings, as part 1 of their group-hour
    rows = raw_manifest(settings.common.database_url)
    archived_all = archived_readings(settings, rows)
    assert Counter(map(_key, archived_all)) == Counter(map(_key, _expected([*readings, late, old])))

    archived = await reader.raw_horizon(redis_client, keys)
    assert archived is not None and archived.keep_from == hour + HOUR_MS
    assert (
        await reader.trim_live(redis_client, keys, meters, {keys.prefix: now}, archived=archived)
        == len(readings) - 2 + 1
    )
    assert await reader.drop_done_late(redis_client, keys, hold, archived=archived) == 1
    # the raw export switched off: its state goes, and the trim is the window's alone again
    await archive_run(_settings(environ, ENERLINK_RAW_EXPORT_INTERVAL_S="0"), once=True)
    assert await reader.raw_horizon(redis_client, keys) is None


def test_parquet_round_trip_keeps_numbers_and_extra_fields() -> None:
    message = {
        "meterId": "M.1",
        "datetime": "2026-01-02T03:04:05.123+07:00",
        "units": {"power": "W"},
        "seq": 7,
        "firmware": "2.1",
        "data": orjson.loads(simulate(1, start_ms=1_767_000_000_000, seconds=10)[0].message)["data"],
    }
    message["data"]["import"]["total_energy"] = 0.1 + 0.2  # 17 significant digits: kept as float64
    message["data"]["new_sensor"] = {"lux": 12}
    raw = orjson.dumps(message)
    table, bad = to_table([Reading("M.1", raw, repaired_seqs=frozenset({7})), Reading("M.1", b"{not json")])
    assert bad == 1 and table.num_rows == 1 and table.column("resent").to_pylist() == [True]
    ((meter, ms, back),) = to_messages(read_parquet(write_parquet(table)))
    assert meter == "M.1" and orjson.loads(back) == message
    assert ms == int(datetime.fromisoformat(message["datetime"]).timestamp() * 1000)
