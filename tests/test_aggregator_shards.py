"""Aggregator shards on real Redis and PostgreSQL: the shard hash in Python and SQL, the leases
(fair share, takeover of a process that stopped, one layout at a time), and two and three aggregator
processes sharing one fleet with one of them killed with kill -9 in the middle of its catch-up:
every minute written once (data and device health), the rollups equal to SQL over the minute rows,
the shard taken over within its lease."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator.healthjob import WATERMARK as HEALTH
from enerlink.aggregator.job import Aggregator
from enerlink.aggregator.leases import LayoutBusy, LayoutError, Leases, ensure_layout, fair_share, layout_is
from enerlink.aggregator.service import run
from enerlink.aggregator.settings import Settings
from enerlink.aggregator.store import layout_key, lock_key
from enerlink.config import ConfigError, Env
from enerlink.db import connect, migrate
from enerlink.schemas.wire import Keys, Tables
from enerlink.shards import Shard, shard_of
from enerlink.watermark import MINUTES
from tests.support.services import ServiceProcess
from tests.test_aggregator import MIN, _assert_same, _sql_rollup, now_ms, put, rows, settings_for, snapshot
from tests.test_device_health_agg import health_rows, status, store

METER_IDS = [f"M{i:03d}" for i in range(60)] + ["méter-ü", "电表-7", "x" * 40, "PZ|1", ""]


async def test_the_shard_of_a_meter_is_the_same_in_python_and_in_sql(database_url: str) -> None:
    await migrate(database_url)
    async with await connect(database_url) as conn:
        for shards in (1, 2, 3, 7, 16):
            cur = await conn.execute(
                f"select m, {Tables.SHARD_OF}(m, %s) from unnest(%s::text[]) m", (shards, METER_IDS)
            )
            assert {m: s for m, s in await cur.fetchall()} == {m: shard_of(m, shards) for m in METER_IDS}
    counts = [sum(shard_of(m, 3) == k for m in METER_IDS) for k in range(3)]
    assert min(counts) >= 12, counts  # spread over every shard
    assert all(Shard(k, 3).owns(m) == (shard_of(m, 3) == k) for m in METER_IDS for k in range(3))
    assert Shard.WHOLE.owns("anything") and Shard.WHOLE.sql_filter("meter_id") == "true"
    with pytest.raises(ValueError):
        Shard(3, 3)


def test_fair_share_and_settings() -> None:
    assert [fair_share(5, ["a", "b"], me) for me in ("a", "b")] == [3, 2]
    assert fair_share(2, ["a", "b", "c"], "c") == 0  # a third process stands by
    assert fair_share(3, [], "a") == 3
    base = {"ENERLINK_DATABASE_URL": "postgresql://x/y"}
    assert Settings.from_env(Env(base)).shards == 1
    with pytest.raises(ConfigError, match="ENERLINK_AGGREGATE_SHARDS"):
        Settings.from_env(Env({**base, "ENERLINK_AGGREGATE_SHARDS": "0"}))
    with pytest.raises(ConfigError, match="ENERLINK_AGGREGATE_LEASE_S"):
        Settings.from_env(Env({**base, "ENERLINK_AGGREGATE_LEASE_S": "1"}))


def _owners(url: str) -> dict[int, str | None]:
    with psycopg.connect(url) as conn:
        found = conn.execute(f"select shard, owner from {Tables.AGGREGATOR_LEASES} order by shard").fetchall()
        return {int(shard): owner for shard, owner in found}


async def test_leases_are_shared_taken_over_and_of_one_layout(database_url: str) -> None:
    await migrate(database_url)
    lease_s = 3.0  # the steps below take milliseconds: no lease runs out between them
    a, b, c = (Leases(owner=name, shards=3, lease_s=lease_s) for name in ("a", "b", "c"))
    async with (
        await connect(database_url, autocommit=True) as ca,
        await connect(database_url, autocommit=True) as cb,
        await connect(database_url, autocommit=True) as cc,
    ):
        assert await a.renew(ca) == {0, 1, 2}  # alone: every shard
        assert await b.renew(cb) == frozenset()  # none free yet
        assert await a.renew(ca) == {0, 1}  # two members: gives one up
        assert await b.renew(cb) == {2}
        assert await c.renew(cc) == frozenset()
        assert await a.renew(ca) == {0}
        assert await c.renew(cc) == {1}
        assert _owners(database_url) == {0: "a", 1: "c", 2: "b"}
        # c stops renewing (killed): after its lease, the others share its shard
        stopped = time.monotonic()
        while time.monotonic() - stopped < lease_s + 0.3:
            await a.renew(ca)
            await b.renew(cb)
            await asyncio.sleep(0.1)
        assert (a.held, b.held) == ({0, 1}, {2})
        assert _owners(database_url) == {0: "a", 1: "a", 2: "b"}
        # another number of shards is refused while these live, taken once they stop
        other = Leases(owner="d", shards=2, lease_s=lease_s)
        with pytest.raises(LayoutError, match="3 shards"):
            await other.renew(cc)
        await a.release(ca)
        await b.release(cb)
        assert _owners(database_url) == {0: None, 1: None, 2: None}
        assert await other.renew(cc) == {0, 1}
        assert _owners(database_url) == {0: "d", 1: "d"}


async def test_a_change_of_the_number_of_shards_waits_for_old_jobs_and_drops_their_state(
    database_url: str,
) -> None:
    await migrate(database_url)
    async with await connect(database_url, autocommit=True) as conn, await connect(database_url) as job:
        async with conn.transaction():
            await ensure_layout(conn, 3)
        old = ["minutes.0/3", "health_minutes.1/3", "5m_closed_before.2/3"]
        with psycopg.connect(database_url, autocommit=True) as setup:
            for name in [*old, MINUTES, "minutes.0/2"]:
                setup.execute(
                    f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values (%s, now())", (name,)
                )
        # a job of the 3 shards still runs (its process stopped renewing, its lease ran out)
        await job.execute("select pg_advisory_lock_shared(%s)", (await layout_key(job, 3),))
        with pytest.raises(LayoutBusy, match="3 shards before"):
            async with conn.transaction():
                await ensure_layout(conn, 2)
        assert len(_owners(database_url)) == 3
        await job.execute("select pg_advisory_unlock_shared(%s)", (await layout_key(job, 3),))
        async with conn.transaction():
            await ensure_layout(conn, 2)
        assert _owners(database_url) == {0: None, 1: None}
        kept = set(_watermarks(database_url))
        assert not kept & set(old) and {MINUTES, "minutes.0/2"} <= kept  # new shards start from `minutes`
        assert not await layout_is(conn, 3) and await layout_is(conn, 2)
        async with conn.transaction():
            await ensure_layout(conn, 1)  # the whole fleet keeps no leases
        assert _owners(database_url) == {}


async def test_a_shard_in_a_job_elsewhere_is_skipped_not_waited_for(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url)
    shard = Shard(1, 2)
    meter = next(m for m in METER_IDS if shard.owns(m))
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    await put(
        redis_client, keys, meter, [(m + i * 10_000, snapshot(meter, m + i * 10_000)) for i in range(6)]
    )
    aggregator = Aggregator(settings, redis_client)
    async with await connect(url, autocommit=True) as conn, await connect(url, autocommit=True) as other:
        async with conn.transaction():
            await ensure_layout(conn, 3)
        assert (await aggregator.run_job(shard)).skipped == "layout"  # another number of shards now
        async with conn.transaction():
            await ensure_layout(conn, 2)
        await other.execute("select pg_advisory_lock(%s)", (await lock_key(other, shard),))
        began = time.monotonic()
        assert (await aggregator.run_job(shard)).skipped == "busy"
        assert time.monotonic() - began < 5 and rows(url) == {}
        await other.execute("select pg_advisory_unlock(%s)", (await lock_key(other, shard),))
    report = await aggregator.run_job(shard)
    assert report.skipped is None and report.rows == 1
    assert [k for k in rows(url)] == [(meter, datetime.fromtimestamp(m / 1000, UTC))]


async def test_late_data_of_each_shard_is_written_once_by_its_own_shard(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """``--once`` over two shards: each re-aggregates its own meters' late minutes, the flags of both
    are cleared, and shard 0 deletes the late data of both after the hold."""
    settings = settings_for(environ, ENERLINK_AGGREGATE_SHARDS="2", ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    keys, url = settings.common.keys, settings.common.database_url
    meters = [next(m for m in METER_IDS if Shard(k, 2).owns(m)) for k in (0, 1)]
    m = (await now_ms(redis_client)) // MIN * MIN - 5 * MIN
    for meter in meters:
        points = [(at, snapshot(meter, at, import__power=1.0)) for at in range(m, m + 3 * MIN, 10_000)]
        await put(redis_client, keys, meter, points)
    first = await run(settings, once=True)
    assert first is not None and first.rows == 2 * 3 and first.skipped is None
    t = await now_ms(redis_client)
    for meter in meters:  # a reading of the middle minute arrives late, as the ingest stores it
        at = m + MIN + 5_000
        await put(redis_client, keys, meter, [(at, snapshot(meter, at, import__power=99.0))], late=True)
        await redis_client.zadd(keys.late_minutes, {Keys.late_member(meter, m + MIN): t})
    second = await run(settings, once=True)
    assert second is not None and second.late_pairs == 2 * 2  # each late minute and the next one
    stored = rows(url)
    for meter in meters:
        late = stored[(meter, datetime.fromtimestamp((m + MIN) / 1000, UTC))]
        assert late["sample_count"] == 7 and late["import_power_max"] == 99.0
    assert await redis_client.zcard(keys.late_minutes) == 0
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    await run(settings, once=True)  # the hold is 0: shard 0 deletes both meters' late data
    assert [await redis_client.zcard(keys.late_data(meter)) for meter in meters] == [0, 0]


async def _two_shards_one_held(url: str) -> None:
    await migrate(url)
    async with await connect(url, autocommit=True) as conn:
        assert await Leases(owner="agg-a", shards=2, lease_s=30).renew(conn) == {0, 1}
        await conn.execute(f"update {Tables.AGGREGATOR_LEASES} set owner = null where shard = 1")
        for name, ago in (("minutes.0/2", 2), ("minutes.1/2", 5), (MINUTES, 5)):
            await conn.execute(
                f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute)"
                " values (%s, date_trunc('minute', now()) - make_interval(mins => %s))",
                (name, ago),
            )


def test_inspect_shards_shows_who_holds_each_and_how_far_each_is(environ: dict[str, str]) -> None:
    asyncio.run(_two_shards_one_held(environ["ENERLINK_DATABASE_URL"]))
    done = subprocess.run(
        [sys.executable, "-m", "enerlink", "inspect", "shards"],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["shard"], x.get("owner")) for x in lines] == [("0/2", "agg-a"), ("1/2", None), ("fleet", None)]
    assert 25 < lines[0]["lease_left_s"] <= 30 and lines[1]["lease_left_s"] is None
    assert 60 <= lines[0]["behind_s"] < 150 and 240 <= lines[1]["behind_s"] < 330  # a minute starts, + slack
    assert lines[2]["minute"] == lines[1]["minute"] and lines[2]["minute"].endswith(":00Z")


def _watermarks(url: str) -> dict[str, datetime]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            f"select name, minute from {Tables.AGGREGATOR_WATERMARK} where minute is not null"
        ).fetchall()
        return {name: minute for name, minute in found}


def _acquired(url: str, shard: int) -> tuple[str | None, datetime | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"select owner, acquired_at from {Tables.AGGREGATOR_LEASES} where shard = %s", (shard,)
        ).fetchone()
        assert row is not None
        return row[0], row[1]


@pytest.mark.parametrize("shards", [2, 3])
async def test_shards_share_the_fleet_and_a_killed_one_is_taken_over(
    environ: dict[str, str], redis_client: aioredis.Redis, shards: int
) -> None:
    """``shards`` aggregator processes, one per shard, catch up 80 minutes of 24 meters; the process
    of one shard is killed with kill -9 halfway through its catch-up and another takes the shard
    over within its lease: no minute missing or doubled, the rollups equal SQL."""
    settings = settings_for(environ)
    keys, url = settings.common.keys, settings.common.database_url
    await migrate(url)
    meters = [f"S{i:02d}" for i in range(24)]
    now = await now_ms(redis_client)
    first, last = now // MIN * MIN - 80 * MIN, now // MIN * MIN - 2 * MIN  # closed minutes
    for i, meter in enumerate(meters):
        points = [
            (
                at,
                snapshot(
                    meter, at, import__power=float(i + at // 10_000 % 50), import__total_energy=at / 1e7
                ),
            )
            for at in range(first, last + MIN, 10_000)
        ]
        await put(redis_client, keys, meter, points)
        statuses = [
            (at, status(meter, at, uptime=at - first + 1000)) for at in range(first, last + MIN, 30_000)
        ]
        await store(redis_client, keys, meter, statuses)
    lease_s = 3.0
    env = {
        **environ,
        "ENERLINK_AGGREGATE_SHARDS": str(shards),
        "ENERLINK_AGGREGATE_LEASE_S": str(lease_s),
        "ENERLINK_AGGREGATE_WORKERS": "1",
        "ENERLINK_AGGREGATE_GRACE_S": "1",
    }
    procs = {
        f"agg-{k}": ServiceProcess(["aggregate"], {**env, "ENERLINK_AGGREGATE_NAME": f"agg-{k}"})
        for k in range(shards)
    }
    for proc in procs.values():
        proc.start()
    try:
        # one shard a process, then the process of a shard halfway through its catch-up is killed
        victim, shard, deadline = None, -1, time.monotonic() + 60
        halfway = datetime.fromtimestamp((first + 30 * MIN) / 1000, UTC)
        while victim is None:
            assert time.monotonic() < deadline, {n: p.output()[-2000:] for n, p in procs.items()}
            owners = _owners(url)
            marks = _watermarks(url)
            if len(owners) == shards and len(set(owners.values())) == shards and None not in owners.values():
                for k, owner in owners.items():
                    mark = marks.get(Shard(k, shards).row_name(MINUTES))
                    if mark is not None and mark >= halfway:
                        victim, shard = owner, k
                        break
            await asyncio.sleep(0.05)
        done = datetime.fromtimestamp(last / 1000, UTC)
        assert victim is not None
        assert _watermarks(url)[Shard(shard, shards).row_name(MINUTES)] < done, "too late to kill mid-way"
        procs[victim].kill()
        killed_at = datetime.now(UTC)
        deadline = time.monotonic() + 90
        names = [Shard(k, shards).row_name(name) for k in range(shards) for name in (MINUTES, HEALTH)]

        def _behind() -> bool:
            marks = _watermarks(url)
            return any(marks.get(name, datetime.min.replace(tzinfo=UTC)) < done for name in [MINUTES, *names])

        while _behind():
            assert time.monotonic() < deadline, {n: p.output()[-3000:] for n, p in procs.items()}
            await asyncio.sleep(0.2)
        owner, acquired = _acquired(url, shard)
        assert owner != victim and owner in procs
        took_s = (acquired - killed_at).total_seconds() if acquired else None
        assert took_s is not None and took_s < lease_s * 4 / 3 + 3, took_s  # 3 s for a loaded machine
        assert "took [" in procs[owner].output()
    finally:
        for proc in procs.values():
            if proc.process and proc.process.poll() is None:
                assert proc.terminate() == 0, proc.output()[-3000:]
    marks = _watermarks(url)
    assert min(marks[Shard(k, shards).row_name(MINUTES)] for k in range(shards)) >= done
    stored = rows(url)
    expected_keys = {
        (m, datetime.fromtimestamp(t / 1000, UTC)) for m in meters for t in range(first, last + MIN, MIN)
    }
    assert set(stored) >= expected_keys  # no minute missing (later minutes may be there too)
    assert all(stored[k]["sample_count"] == 6 for k in expected_keys)  # none counted twice
    assert {meter for meter, _ in stored} == set(meters)
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day"))
    health = health_rows(url)  # device health: every minute once too
    assert set(health) >= expected_keys
    assert all(health[k]["sample_count"] == 2 and health[k]["reboots"] == 0 for k in expected_keys)
    assert "Traceback" not in "".join(p.output() for p in procs.values() if p is not procs[victim])
