"""The raw export's late pass on a real Redis Cluster whose masters' clocks differ.

The ingest's store script scores a late flag by the clock of the master that holds the meter's part.
One master here runs 10 s behind the others (``tests/support/clockshift.c``), and a late reading of a
meter of its part arrives after an export run: the next run must archive it, and until then the
aggregator's trim must keep it. A run's late cursor taken from a node whose clock is ahead would skip
that flag. The aggregator's hold of re-aggregated late data runs on each part's master's clock too."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from enerlink.aggregator import reader
from enerlink.aggregator.service import run as aggregate
from enerlink.aggregator.settings import Settings as AggregatorSettings
from enerlink.archiver.raw_export import RawReport
from enerlink.archiver.raw_service import raw_now
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.ingest.redis_store import RedisStore
from enerlink.ingest.validate import Measurement
from enerlink.redis_client import async_client
from enerlink.schemas.wire import Keys
from tests.support.ingest_support import data_message
from tests.support.rawdata import HOUR_MS, archived_readings, every_part, raw_manifest
from tests.support.redis_cluster import RedisClusterServers, clock_offset_env

BEHIND_S = 10  # more than the test takes from a run's start to the late readings
SLOW = 1  # the node running behind: a master, not the first seed node (a client's default node)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path / "cluster", clock_offset_s={SLOW: -BEHIND_S})
    try:
        clock_offset_env(0, servers.root / "clockshift")  # built once, where the nodes' start finds it
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


def _meter_on(keys: Keys, cluster: RedisClusterServers, *, behind: bool) -> str:
    """A meter id whose part is held by the master running behind (``behind``) or by another one."""
    slow = cluster.ports[SLOW]
    for i in range(10_000):
        meter = f"SKEW{i:04d}"
        part = keys.of(meter)
        if (cluster.master_of(part.latest_data) == slow) == behind:
            assert key_slot(part.latest_data.encode()) == key_slot(part.timeseries(meter).encode())
            return meter
    raise AssertionError("no meter id found for that master")


def _reading(meter: str, at_ms: int, seq: int) -> Measurement:
    payload = data_message(meter, at=datetime.fromtimestamp(at_ms / 1000, UTC), seq=seq)
    return Measurement(kind="data", meter_id=meter, at_ms=at_ms, seq=seq, payload=payload)


def _clock(port: int) -> int:
    """One node's TIME, in ms."""
    with redis.Redis(port=port) as node:
        seconds, micros = node.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _export(settings: Settings) -> RawReport:
    return raw_now(settings, open_store(settings.storage), threading.Event())


def _archived(settings: Settings) -> list[tuple[str, int]]:
    """Every archived reading as (meter, ms)."""
    rows = raw_manifest(settings.common.database_url)
    return sorted((meter, ms) for meter, ms, _ in archived_readings(settings, rows))


async def _late_done(r: aioredis.RedisCluster, keys: Keys) -> int:
    return sum([int(await r.zcard(part.late_done)) for part in keys.each_part()])


async def _late_data(r: aioredis.RedisCluster, keys: Keys, meters: list[str]) -> list[int]:
    """How many late readings each meter has in Redis."""
    return [int(await r.zcard(keys.of(m).late_data(m))) for m in meters]


async def test_a_late_reading_on_a_master_whose_clock_is_behind_is_archived(
    cluster: RedisClusterServers, environ: dict[str, str]
) -> None:
    settings = Settings.from_env(
        Env({**environ, "ENERLINK_REDIS_URL": cluster.url, "ENERLINK_RAW_EXPORT_GRACE_S": "0"})
    )
    keys = settings.common.keys
    assert keys.parts
    await migrate(settings.common.database_url)
    slow, fast = _meter_on(keys, cluster, behind=True), _meter_on(keys, cluster, behind=False)
    clocks = {port: _clock(port) for port in cluster.master_ports()}
    others = [c for port, c in clocks.items() if port != cluster.ports[SLOW]]
    assert clocks[cluster.ports[SLOW]] < min(others) - (BEHIND_S * 1000 - 500)

    r: aioredis.RedisCluster = async_client(settings.common.redis_url)  # type: ignore[assignment]
    try:
        store = RedisStore(client=r, keys=keys, retention_ms=3 * HOUR_MS)
        now = max(clocks.values())
        hour = min(clocks.values()) // HOUR_MS * HOUR_MS - HOUR_MS  # the previous hour: closed on every node
        await store.write([_reading(m, hour + k * 10_000, k + 1) for m in (slow, fast) for k in range(6)])
        ahead = _clock(cluster.ports[0])  # the client's default node, ahead of the slow one
        first = _export(settings)
        assert first.hours >= 1 and first.readings == 12

        # late readings of that hour, after the run: each flagged by its part's master's clock
        late = [(fast, hour + 900_000), (slow, hour + 600_000)]
        await store.write([_reading(m, at, 100 + i) for i, (m, at) in enumerate(late)])
        flags = [m.decode() for part in keys.each_part() for m in await r.zrange(part.late_minutes, 0, -1)]
        assert {Keys.late_member(m, at // 60_000 * 60_000) for m, at in late} <= set(flags)
        slow_flag = Keys.late_member(slow, hour + 600_000)
        slow_score = await r.zscore(keys.of(slow).late_minutes, slow_flag)
        assert slow_score is not None
        # the case at stake: scored before the default node's clock when the first run began (a cursor
        # read there would skip it); else this machine took longer than the clocks' difference
        assert slow_score < ahead, "the late readings came too long after the first run"

        # until the next run holds it, neither the export nor the trims take it for archived
        horizon = await reader.raw_horizon(r, keys)
        assert horizon is not None
        assert slow_score >= horizon.late_cursor

        second = _export(settings)
        assert second.late == 2
        held = _archived(settings)
        assert set(late) <= set(held)
        assert len(held) == len(set(held)) == 14  # every reading once

        # the aggregator moves the flags to late_done, scored by each part's clock: kept while the
        # export's cursor is not past them on every part
        part_clocks = await reader.part_clocks(r, keys, 0)
        await reader.mark_late_done(r, keys, flags, part_clocks)
        assert await reader.clear_late_flags(r, keys, flags, part_clocks) == len(flags)
        horizon = await reader.raw_horizon(r, keys)
        assert horizon is not None
        await reader.drop_done_late(r, keys, every_part(keys, now + HOUR_MS), archived=horizon)
        assert await _late_done(r, keys) == len(flags)

        # dropped once a run began after them on every part: within the clocks' difference
        began = time.monotonic()
        while await _late_done(r, keys):
            assert time.monotonic() - began < 2 * BEHIND_S + 10
            await asyncio.sleep(0.5)
            assert _export(settings).late == 0  # read again, nothing new
            horizon = await reader.raw_horizon(r, keys)
            assert horizon is not None
            await reader.drop_done_late(r, keys, every_part(keys, now + HOUR_MS), archived=horizon)
        assert _archived(settings) == held
    finally:
        await r.aclose()


async def test_the_late_hold_runs_on_the_clock_of_each_part(
    cluster: RedisClusterServers, environ: dict[str, str]
) -> None:
    """The aggregator keeps re-aggregated late data ``ENERLINK_AGGREGATE_LATE_HOLD_S`` on the clock of
    the master that scored its ``late_done`` entry: on the master running behind as on the others."""
    hold_s = 5  # shorter than the clocks' difference: a hold on the default node's clock is already over
    settings = AggregatorSettings.from_env(
        Env(
            {
                **environ,
                "ENERLINK_REDIS_URL": cluster.url,
                "ENERLINK_AGGREGATOR_METRICS_PORT": "0",
                "ENERLINK_AGGREGATE_WORKERS": "1",
                "ENERLINK_AGGREGATE_LATE_HOLD_S": str(hold_s),
            }
        )
    )
    keys = settings.common.keys
    slow, fast = _meter_on(keys, cluster, behind=True), _meter_on(keys, cluster, behind=False)
    minute = min(_clock(port) for port in cluster.master_ports()) // 60_000 * 60_000 - 4 * 60_000
    r: aioredis.RedisCluster = async_client(settings.common.redis_url)  # type: ignore[assignment]
    try:
        # the case at stake: the node a client asks for the time (the aggregator's T0) is ahead of the
        # slow master by more than the hold
        ahead = await reader.redis_time_ms(r)
        slow_clock = (await reader.part_clocks(r, keys, 0))[keys.of(slow).prefix]
        assert ahead - slow_clock > hold_s * 1000

        store = RedisStore(client=r, keys=keys, retention_ms=2 * HOUR_MS)
        await store.write([_reading(m, minute + k * 10_000, k + 1) for m in (slow, fast) for k in range(5)])
        assert (await aggregate(settings, once=True)) is not None
        # late readings kept as late data (as at the window's edge), each flagged by its part's master
        edge = RedisStore(client=r, keys=keys, retention_ms=2 * HOUR_MS, late_margin_ms=2 * HOUR_MS)
        await edge.write([_reading(m, minute + 55_000, 100) for m in (slow, fast)])
        assert await _late_data(r, keys, [slow, fast]) == [1, 1]

        report = await aggregate(settings, once=True)
        assert report is not None and report.late_pairs >= 2
        # re-aggregated just now: held on every part, the slow master's included
        assert await _late_done(r, keys) == 2
        assert await _late_data(r, keys, [slow, fast]) == [1, 1]

        await asyncio.sleep(hold_s + 1)
        await aggregate(settings, once=True)
        assert await _late_done(r, keys) == 0
        assert await _late_data(r, keys, [slow, fast]) == [0, 0]
    finally:
        await r.aclose()
