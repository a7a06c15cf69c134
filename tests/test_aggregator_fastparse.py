"""Stored snapshots are read without pydantic (aggregator/fastparse.py): a corrupt or foreign member
is counted and skipped, never a crash, and the good ones next to it still count; both decoders
(msgspec when installed, orjson otherwise) agree. Rollups merged minute by minute equal SQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from aggregator import fastparse
from aggregator.service import run
from schemas.wire import Tables
from tests.conftest import load_fixture
from tests.test_aggregator import (
    MIN,
    _assert_same,
    _sql_rollup,
    minute_dt,
    now_ms,
    put,
    rows,
    settings_for,
    snapshot,
)

FIXTURE = load_fixture("meter-data.json")
DECODERS: dict[str, Callable[[bytes, str], fastparse.Snap]] = {"orjson": fastparse._parse_orjson}
if fastparse._FAST is not None:
    DECODERS["msgspec"] = fastparse._FAST


def _mutated(change: Callable[[dict[str, Any]], object]) -> bytes:
    msg = copy.deepcopy(FIXTURE)
    change(msg)
    return json.dumps(msg).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], object]:
    def change(msg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = msg
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], object]:
    def change(msg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = msg
        for p in parents:
            node = node[p]
        del node[last]

    return change


CORRUPT: dict[str, bytes] = {
    "not json": b"\x00\x01 not json",
    "truncated": json.dumps(FIXTURE).encode()[:-20],
    "an array": b"[1, 2, 3]",
    "NaN": json.dumps(FIXTURE).encode().replace(b"86.63281", b"NaN"),
    "missing subsystem": _mutated(_drop("data.battery")),
    "missing field": _mutated(_drop("data.import.power")),
    "number as string": _mutated(_set("data.import.power", "480.2")),
    "null number": _mutated(_set("data.export.voltage", None)),
    "object for a number": _mutated(_set("data.load_home.current", {"v": 1})),
    "string for a bool": _mutated(_set("data.battery.is_charging", "false")),
    "unknown enum": _mutated(_set("data.net_grid.status", "sideways")),
    "naive datetime": _mutated(_set("datetime", "2025-10-26T04:27:10")),
    "bad datetime": _mutated(_set("datetime", "yesterday")),
    "other meter": _mutated(_set("meterId", "SOMEONE_ELSE")),
}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_snapshot_is_a_bad_snapshot_error(decoder: str, case: str) -> None:
    with pytest.raises(fastparse.BadSnapshot):
        DECODERS[decoder](CORRUPT[case], "METER001")


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_the_fixture_decodes_to_its_values(decoder: str) -> None:
    raw = _mutated(_set("data.battery.temperature", 41.5))  # newer firmware's extra field
    snap = DECODERS[decoder](raw, "METER001")
    values = dict(zip(fastparse.RAW_ORDER, snap.vector, strict=True))
    by_column = {f.column: v for f, v in values.items()}
    assert by_column["import_power"] == 480.2 and by_column["battery_soc"] == 86.63281
    assert by_column["import_active"] is True and by_column["export_active"] is False
    assert snap.enums == ("deficit", "importing")
    assert snap.at == datetime(2025, 10, 26, 4, 27, 10, tzinfo=UTC) and snap.at_ms == 1761452830000
    assert (snap.soc, snap.alert_threshold, snap.temperature) == (86.63281, 10, 41.5)
    assert DECODERS["orjson"](raw, "METER001") == snap  # both decoders agree


async def test_corrupt_members_are_counted_and_the_minute_still_aggregates(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    good = [(m + k * 10_000, snapshot("C", m + k * 10_000, import__power=100.0 * (k + 1))) for k in range(3)]
    await put(redis_client, keys, "C", good)
    for i, case in enumerate(sorted(CORRUPT)):
        raw = CORRUPT[case].replace(b"METER001", b"C") if case != "other meter" else CORRUPT[case]
        await redis_client.zadd(keys.timeseries("C"), {raw: m + 35_000 + i})
    report = await run(settings, once=True)
    assert report is not None and report.bad == len(CORRUPT)
    row = rows(settings.common.database_url)[("C", minute_dt(m))]
    assert row["sample_count"] == 3 and row["import_power_avg"] == pytest.approx(200.0)


async def test_rollups_merged_minute_by_minute_equal_sql(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Catch-up writes one minute per transaction, each merged into the 5 min / 1 h / 1 day rows
    that already hold the earlier minutes; then a late minute replaces one (full recompute)."""
    tz = "America/St_Johns"  # UTC-03:30 (-02:30 in summer)
    settings = settings_for(environ, ENERLINK_TIMEZONE=tz)
    keys = settings.common.keys
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    first = last_closed - 16 * MIN
    for meter, scale in (("R", 1.0), ("S", 2.5)):
        points = []
        for i, at in enumerate(range(first, last_closed + MIN, 15_000)):
            points.append(
                (
                    at,
                    snapshot(
                        meter,
                        at,
                        import__power=scale * ((i * 37) % 101),
                        battery__soc=float((i * 13) % 100),
                        import__active=i % 4 == 0,
                        import__total_energy=scale * i / 7,
                        import__daily_energy=scale * i / 7,
                        import__settlement_energy=scale * i / 7,
                        net_grid__status=("importing", "exporting", "idle")[i % 3],
                    ),
                )
            )
        await put(redis_client, keys, meter, points)
    url = settings.common.database_url
    from enerlink.db import migrate

    await migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
            (minute_dt(first - MIN),),
        )
    report = await run(settings, once=True)
    assert report is not None and report.minutes >= 17
    assert len(rows(url)) == 2 * 17
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=tz))
    # a late snapshot changes an aggregated minute of R: its buckets are recomputed in full
    at = first + 5 * MIN + 1_000
    await put(redis_client, keys, "R", [(at, snapshot("R", at, import__power=-5.0))], late=True)
    await redis_client.zadd(
        keys.late_minutes, {keys.late_member("R", first + 5 * MIN): await now_ms(redis_client)}
    )
    await run(settings, once=True)
    assert rows(url)[("R", minute_dt(first + 5 * MIN))]["import_power_min"] == -5.0
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=tz))


async def test_sharded_job_written_shard_by_shard_equals_sql(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Worker processes, every batch split into shards written one by one in the minute's
    transaction: catch-up minutes, then late data for one meter in two minutes (its pairs land in
    different shards, replacing stored rows): minute rows complete, rollups equal SQL."""
    from aggregator.service import Aggregator, compute_pool

    settings = settings_for(environ, ENERLINK_AGGREGATE_WORKERS="2")
    keys = settings.common.keys
    url = settings.common.database_url
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    first = last_closed - 5 * MIN
    meters = [f"P{i}" for i in range(9)]
    for n, meter in enumerate(meters):
        points = [
            (at, snapshot(meter, at, import__power=float((n * 31 + k * 7) % 97), import__total_energy=k / 9))
            for k, at in enumerate(range(first, last_closed + MIN, 20_000))
        ]
        await put(redis_client, keys, meter, points)
    from enerlink.db import migrate

    await migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
            (minute_dt(first - MIN),),
        )
    with compute_pool(settings) as pool:
        aggregator = Aggregator(settings, redis_client, executor=pool)
        report = await aggregator.run_job()
        assert report.minutes >= 6 and report.rows >= 6 * len(meters) and report.bad == 0
        assert len(rows(url)) == 6 * len(meters)
        for width in ("5 minutes", "1 hour"):
            table = Tables.TELEMETRY_5M if width == "5 minutes" else Tables.TELEMETRY_1H
            _assert_same(rows(url, table), _sql_rollup(url, width=width))
        _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz="UTC"))
        # late data for P0 in two minutes and for P5 in one
        late = [("P0", first + MIN), ("P0", first + 4 * MIN), ("P5", first + 2 * MIN)]
        for meter, minute in late:
            at = minute + 59_000
            await put(redis_client, keys, meter, [(at, snapshot(meter, at, import__power=-50.0))], late=True)
            await redis_client.zadd(
                keys.late_minutes, {keys.late_member(meter, minute): await now_ms(redis_client)}
            )
        report = await aggregator.run_job()
        assert report.late_pairs >= 3
    stored = rows(url)
    for meter, minute in late:
        assert stored[(meter, minute_dt(minute))]["import_power_min"] == -50.0
    assert len(stored) == 6 * len(meters)
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz="UTC"))
