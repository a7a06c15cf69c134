"""The aggregator on real Redis and PostgreSQL: statistics, energy across resets, catch-up, late
data, idempotence, two aggregators, rollups vs SQL, timezone days, events, clean-up, the CLI."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator import reader
from enerlink.aggregator.columns import ALL_COLUMNS, STAT_COLUMNS
from enerlink.aggregator.compute import compute
from enerlink.aggregator.job import Aggregator
from enerlink.aggregator.service import run
from enerlink.aggregator.settings import Settings
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Tables
from enerlink.shards import shard_of
from tests.conftest import load_fixture
from tests.support.aggdata import REAL_REL, resolution, with_served
from tests.support.services import ServiceProcess

MIN = 60_000
FIXTURE = load_fixture("meter-data.json")


def snapshot(meter: str, at_ms: int, **values: Any) -> bytes:
    """The fixture message for ``meter`` at ``at_ms`` with ``subsystem__field=value`` overrides."""
    msg = copy.deepcopy(FIXTURE)
    msg["meterId"] = meter
    msg["datetime"] = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    for key, value in values.items():
        sub, name = key.split("__")
        msg["data"][sub][name] = value
    return json.dumps(msg).encode()


async def put(
    r: aioredis.Redis, keys: Keys, meter: str, items: Iterable[tuple[int, bytes]], *, late: bool = False
):
    """Store snapshots as the ingest does (their compact form; a member that is not a JSON object as is)."""
    key = keys.late_data(meter) if late else keys.timeseries(meter)
    mapping = {stored(raw): at for at, raw in items}
    await r.zadd(key, mapping)
    last = max(mapping.values())
    await r.hset(keys.meters, meter, str(max(last, int(await r.hget(keys.meters, meter) or 0))))


def stored(raw: bytes) -> bytes:
    """The member the ingest stores for ``raw`` (``raw`` itself when it is no JSON object)."""
    try:
        return encode_snapshot(raw)
    except ValueError:
        return raw


async def now_ms(r: aioredis.Redis) -> int:
    s, us = await r.time()
    return int(s) * 1000 + int(us) // 1000


def settings_for(environ: dict[str, str], **extra: str) -> Settings:
    env = {**environ, "ENERLINK_AGGREGATOR_METRICS_PORT": "0", "ENERLINK_AGGREGATE_WORKERS": "1", **extra}
    return Settings.from_env(Env(env))


def rows(url: str, table: str = Tables.TELEMETRY_AGGREGATES) -> dict[tuple[str, datetime], dict[str, Any]]:
    """Every row of ``table`` with, as the API serves them, the shares (``*_ratio``) and the energies
    in Wh (``*_energy_wh``) computed from the stored counts and 10 uWh units."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"select * from {table} order by meter_id, bucket")
        names = [d.name for d in cur.description or []]
        found = [with_served(dict(zip(names, r, strict=True))) for r in cur.fetchall()]
        return {(d["meter_id"], d["bucket"]): d for d in found}


def minute_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_exact_statistics_and_energy_across_daily_and_settlement_reset(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN  # a closed minute
    imp = "import__"
    base = {f"{imp}daily_energy": 100.0, f"{imp}total_energy": 5000.0, f"{imp}settlement_energy": 300.0}
    snaps = [
        (m - 5000, snapshot("M1", m - 5000, import__power=50.0, **base)),  # baseline, previous minute
        (
            m + 0,
            snapshot(
                "M1",
                m,
                import__power=100.0,
                import__active=True,
                import__daily_energy=100.5,
                import__total_energy=5000.5,
                import__settlement_energy=300.5,
            ),
        ),
        # local midnight: daily resets (0.25 Wh since), total keeps counting
        (
            m + 10_000,
            snapshot(
                "M1",
                m + 10_000,
                import__power=400.0,
                import__active=False,
                import__daily_energy=0.25,
                import__total_energy=5001.0,
                import__settlement_energy=301.0,
                battery__soc=50.0,
            ),
        ),
        # billing settlement: settlement resets; 0.75 Wh more
        (
            m + 20_000,
            snapshot(
                "M1",
                m + 20_000,
                import__power=250.0,
                import__active=True,
                import__daily_energy=1.0,
                import__total_energy=5001.75,
                import__settlement_energy=0.05,
                net_grid__status="idle",
            ),
        ),
        # re-flash: total restarts from 0 while daily continues (+0.5 Wh): no spike, no negative
        (
            m + 30_000,
            snapshot(
                "M1",
                m + 30_000,
                import__power=250.0,
                import__active=True,
                import__daily_energy=1.5,
                import__total_energy=0.0,
                import__settlement_energy=0.55,
                net_grid__status="exporting",
            ),
        ),
    ]
    await put(redis_client, keys, "M1", snaps)
    await put(redis_client, keys, "M1", [(m + 40_000, b'{"meterId": "M1", "broken": true}')])
    report = await run(settings, once=True)
    assert report is not None and report.bad == 1
    row = rows(settings.common.database_url)[("M1", minute_dt(m))]
    assert row["sample_count"] == 4
    assert row["first_at"] == minute_dt(m) and row["last_at"] == minute_dt(m + 30_000)
    assert row["import_power_avg"] == pytest.approx(250.0)
    assert row["import_power_min"] == 100.0 and row["import_power_max"] == 400.0
    assert row["import_active_ratio"] == pytest.approx(0.75)
    soc = FIXTURE["data"]["battery"]["soc"]
    assert row["battery_soc_avg"] == pytest.approx((50.0 + 3 * soc) / 4, rel=REAL_REL)  # one reading at 50 %
    assert "battery_soc_min" not in row and "battery_soc_max" not in row  # the average only
    voltage = FIXTURE["data"]["import"]["voltage"]
    assert row["import_current_avg"] == pytest.approx(
        250.0 / voltage, rel=REAL_REL
    )  # its power over its voltage
    # 0.5 (baseline->first) + 0.5 (daily reset) + 0.75 (settlement reset) + 0.5 (re-flash) Wh
    assert row["import_energy_wh"] == pytest.approx(2.25)
    assert row["import_daily_energy_last"] == 1.5 and row["import_total_energy_last"] == 0.0
    assert row["import_settlement_energy_last"] == 0.55
    assert row["net_grid_status_last"] == "exporting"
    assert row["export_energy_wh"] == pytest.approx(0.0)
    # the previous minute holds the baseline alone
    prev = rows(settings.common.database_url)[("M1", minute_dt(m - MIN))]
    assert prev["sample_count"] == 1 and prev["import_energy_wh"] == 0.0


async def test_idempotent_and_catch_up_after_30_missed_minutes(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    first = last_closed - 29 * MIN
    for meter in ("A", "B", "C"):
        total = 1000.0
        items = []
        for i, at in enumerate(range(first - 5_000, last_closed + MIN, 5_000)):
            total += 0.1
            items.append(
                (
                    at,
                    snapshot(
                        meter,
                        at,
                        import__power=float(i),
                        import__total_energy=round(total, 6),
                        import__daily_energy=round(total - 900, 6),
                        import__settlement_energy=round(total - 950, 6),
                    ),
                )
            )
        await put(redis_client, keys, meter, items)
    await migrate(settings.common.database_url)
    with psycopg.connect(settings.common.database_url) as conn:  # the service was down 30 minutes
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
            (minute_dt(first - MIN),),
        )
    report = await run(settings, once=True)
    assert report is not None
    assert report.behind_minutes >= 30 and report.minutes >= 30
    assert report.watermark is not None and report.watermark >= minute_dt(last_closed)
    stored = rows(settings.common.database_url)
    for meter in ("A", "B", "C"):
        for k in range(30):
            row = stored[(meter, minute_dt(first + k * MIN))]
            assert row["sample_count"] == 12
            assert row["import_energy_wh"] == pytest.approx(1.2)
    assert (("A", minute_dt(first - MIN))) not in stored  # before the watermark: not redone
    # idempotence: again (nothing to do), then from scratch for the same minutes: same rows
    again = await run(settings, once=True)
    assert again is not None and again.minutes <= 1  # at most a minute that closed meanwhile
    with psycopg.connect(settings.common.database_url) as conn:
        conn.execute(f"update {Tables.AGGREGATOR_WATERMARK} set minute = %s", (minute_dt(first - MIN),))
    await run(settings, once=True)
    redone = rows(settings.common.database_url)
    assert {k: v for k, v in redone.items() if k in stored} == stored


async def test_two_aggregators_at_once_do_not_share_a_minute(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    first = last_closed - 9 * MIN
    for meter in ("A", "B"):
        await put(
            redis_client,
            keys,
            meter,
            [(at, snapshot(meter, at)) for at in range(first, last_closed + MIN, 10_000)],
        )
    await migrate(settings.common.database_url)
    async with (
        aioredis.Redis.from_url(settings.common.redis_url) as r1,
        aioredis.Redis.from_url(settings.common.redis_url) as r2,
    ):
        one, two = Aggregator(settings, r1), Aggregator(settings, r2)
        a, b = await asyncio.gather(one.run_job(), two.run_job())
    final = max(w for w in (a.watermark, b.watermark) if w is not None)
    span = int(final.timestamp() * 1000 - first) // MIN + 1
    assert a.minutes + b.minutes == span  # every minute done once, by one of them
    assert min(a.minutes, b.minutes) <= 1  # the second waited for the lock and found the work done
    stored = rows(settings.common.database_url)
    assert all(
        stored[(m, minute_dt(t))]["sample_count"] == 6
        for m in "AB"
        for t in range(first, last_closed + 1, MIN)
    )


async def test_late_data_reaggregates_the_minute_and_the_next_one(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ, ENERLINK_AGGREGATE_LATE_HOLD_S="0")
    keys = settings.common.keys
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    m1, m2 = last_closed - 3 * MIN, last_closed - MIN
    # the meter was silent during m1 and the minute after; it comes back in m2
    await put(
        redis_client,
        keys,
        "M",
        [
            (m1 - 5000, snapshot("M", m1 - 5000, import__total_energy=10.0, import__daily_energy=10.0)),
            (m2, snapshot("M", m2, import__total_energy=13.0, import__daily_energy=13.0)),
        ],
    )
    await run(settings, once=True)
    before = rows(settings.common.database_url)
    assert before[("M", minute_dt(m2))]["import_energy_wh"] == pytest.approx(3.0)  # the gap's energy
    assert ("M", minute_dt(m1)) not in before
    # backfill for m1 arrives late (as the ingest stores it: message + late-minute flag)
    await put(
        redis_client,
        keys,
        "M",
        [
            (
                m1 + 5000,
                snapshot(
                    "M", m1 + 5000, import__power=7.0, import__total_energy=11.0, import__daily_energy=11.0
                ),
            ),
            (
                m1 + 15000,
                snapshot(
                    "M", m1 + 15000, import__power=9.0, import__total_energy=12.5, import__daily_energy=12.5
                ),
            ),
        ],
        late=True,
    )
    t = await now_ms(redis_client)
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("M", m1): t})
    future = Keys.late_member("M", m1 - 10 * MIN)
    await redis_client.zadd(keys.late_minutes, {future: t + 3_600_000})  # flagged after T0: must survive
    report = await run(settings, once=True)
    assert report is not None and report.late_pairs >= 2
    after = rows(settings.common.database_url)
    late_row = after[("M", minute_dt(m1))]
    assert late_row["sample_count"] == 2 and late_row["import_power_avg"] == pytest.approx(8.0)
    assert late_row["import_energy_wh"] == pytest.approx(2.5)
    assert after[("M", minute_dt(m2))]["import_energy_wh"] == pytest.approx(0.5)  # baseline moved
    assert len(after) == len(before) + 1  # upserted, not duplicated
    remaining = [m.decode() for m in await redis_client.zrange(keys.late_minutes, 0, -1)]
    assert remaining == [future]
    # the hold is 0: the next job deletes the re-aggregated minute's late data
    await run(settings, once=True)
    assert await redis_client.zcard(keys.late_data("M")) == 0


def _sql_rollup(
    url: str, *, width: str, tz: str | None = None, source: str = Tables.TELEMETRY_AGGREGATES
) -> dict[tuple[str, datetime], dict[str, Any]]:
    """The rollup computed directly from minute rows (``source``: all of them, or a subquery), in
    SQL: the reference for the rollup tables and views."""
    if tz is None:
        key = f"date_bin(interval '{width}', bucket, timestamptz '1970-01-01 00:00:00+00')"
    else:
        key = f"(date_trunc('day', bucket at time zone '{tz}') at time zone '{tz}')"
    first, last = (Tables.minute_time_sql(n) for n in ("first_at", "last_at"))
    exprs = ["sum(sample_count)::int as sample_count", f"min({first}) as first_at", f"max({last}) as last_at"]
    for c in STAT_COLUMNS:
        n = f'"{c.name}"'
        if c.stat == "avg":
            exprs.append(f"(sum({n}::float8 * sample_count) / sum(sample_count))::{c.sql_type} as {n}")
        elif c.stat in ("min", "max"):
            exprs.append(f"{c.stat}({n}) as {n}")
        elif c.stat in ("energy", "count"):
            exprs.append(f"sum({n}) as {n}")
        else:
            exprs.append(f"(array_agg({n} order by bucket desc))[1] as {n}")
    query = (
        f"select meter_id, {key} as bucket, {', '.join(exprs)} from {source} m"
        f" group by meter_id, {key} order by 1, 2"
    )
    with psycopg.connect(url) as conn:
        cur = conn.execute(query.encode())
        names = [d.name for d in cur.description or []]
        return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _assert_same(actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert actual.keys() == expected.keys()
    for k, exp in expected.items():
        for name in ALL_COLUMNS:
            a, e = actual[k][name], exp[name]
            if isinstance(e, float):  # a real is rounded once more per rollup level
                assert a == pytest.approx(e, rel=resolution(name), abs=1e-9), (k, name)
            else:
                assert a == e, (k, name)


async def _load_old_day(r: aioredis.Redis, keys: Keys, meter: str, points: list[tuple[int, bytes]]) -> None:
    """Old data as the ingest stores a backfill: late_data plus one late flag per minute."""
    await put(r, keys, meter, points, late=True)
    t = await now_ms(r)
    await r.zadd(keys.late_minutes, {Keys.late_member(meter, at // MIN * MIN): t for at, _ in points})


async def test_rollups_equal_sql_and_daily_buckets_follow_the_timezone(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    tz = "Asia/Kolkata"  # UTC+05:30: local midnight falls in the middle of a UTC hour
    settings = settings_for(environ, ENERLINK_TIMEZONE=tz)
    keys = settings.common.keys
    start = int(datetime(2025, 10, 26, 18, 0, tzinfo=UTC).timestamp() * 1000)  # 23:30 local
    for meter, scale in (("P", 1.0), ("Q", 3.0)):
        points = []
        for i, at in enumerate(range(start, start + 70 * MIN, 20_000)):  # 18:00-19:10 UTC
            points.append(
                (
                    at,
                    snapshot(
                        meter,
                        at,
                        import__power=scale * (i % 17),
                        battery__soc=float(i % 90),
                        import__active=i % 3 == 0,
                        import__total_energy=scale * i / 10,
                        import__daily_energy=scale * i / 10,
                        import__settlement_energy=scale * i / 10,
                    ),
                )
            )
        await _load_old_day(redis_client, keys, meter, points)
    await run(settings, once=True)
    url = settings.common.database_url
    assert len(rows(url)) == 2 * 70
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    daily = rows(url, Tables.TELEMETRY_1D)
    _assert_same(daily, _sql_rollup(url, width="1 day", tz=tz))
    local_midnights = {b for _, b in daily}
    assert local_midnights == {
        datetime(2025, 10, 25, 18, 30, tzinfo=UTC),
        datetime(2025, 10, 26, 18, 30, tzinfo=UTC),
    }
    assert daily[("P", datetime(2025, 10, 25, 18, 30, tzinfo=UTC))]["sample_count"] == 30 * 3
    # late data changes a minute: the rollups follow
    at = start + 45 * MIN + 1_000
    await _load_old_day(redis_client, keys, "P", [(at, snapshot("P", at, import__power=999.0))])
    await run(settings, once=True)
    assert rows(url)[("P", minute_dt(start + 45 * MIN))]["import_power_max"] == 999.0
    _assert_same(rows(url, Tables.TELEMETRY_5M), _sql_rollup(url, width="5 minutes"))
    _assert_same(rows(url, Tables.TELEMETRY_1H), _sql_rollup(url, width="1 hour"))
    _assert_same(rows(url, Tables.TELEMETRY_1D), _sql_rollup(url, width="1 day", tz=tz))


async def test_a_simulated_day_of_minute_energies_adds_up_to_the_counters(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    day = int(datetime(2025, 10, 26, tzinfo=UTC).timestamp() * 1000)
    daily, total, settle, true_energy = 0.0, 4321.0, 50.0, 0.0
    points = []
    for i, at in enumerate(range(day - 30 * MIN, day + 23 * 3_600_000 + 30 * MIN, 10_000)):
        step = round(0.01 * (1 + (i * 7919) % 13), 6)  # Wh per 10 s
        if at == day:
            daily = 0.0  # device-local midnight
        if i == 3000:
            settle = 0.0  # billing settlement
        if i == 6000:
            total = 0.0  # re-flash
        daily, total, settle = daily + step, total + step, settle + step
        if i > 0:
            true_energy += step
        points.append(
            (
                at,
                snapshot(
                    "D",
                    at,
                    solar_output__daily_energy=round(daily, 6),
                    solar_output__total_energy=round(total, 6),
                    import__daily_energy=round(daily, 6),
                    import__total_energy=round(total, 6),
                    import__settlement_energy=round(settle, 6),
                ),
            )
        )
    await _load_old_day(redis_client, keys, "D", points)
    await run(settings, once=True)
    with psycopg.connect(settings.common.database_url) as conn:
        imp, sol, minutes, spike = conn.execute(
            f"select sum(import_energy_10uwh)::float8 / 1e5, sum(solar_output_energy_10uwh)::float8 / 1e5,"
            f" count(*), max(import_energy_10uwh)::float8 / 1e5"
            f" from {Tables.TELEMETRY_AGGREGATES} where meter_id = 'D'"
        ).fetchone()  # type: ignore[misc]
    assert minutes == 24 * 60
    assert imp == pytest.approx(true_energy, rel=1e-6)
    assert sol == pytest.approx(true_energy, rel=1e-6)
    assert spike < 1.0  # the biggest minute is 6 steps of at most 0.13 Wh


async def test_events_battery_sensor_thermal_and_presence_stream(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(
        environ, ENERLINK_AGGREGATE_THERMAL_WARN_C="50", ENERLINK_AGGREGATE_THERMAL_CRIT_C="70"
    )
    keys = settings.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    await put(
        redis_client,
        keys,
        "E",
        [
            (m + 0, snapshot("E", m + 0, battery__alert_active=False, battery__temperature=30.0)),
            (
                m + 10_000,
                snapshot(
                    "E", m + 10_000, battery__alert_active=True, battery__soc=8.0, battery__temperature=55.0
                ),
            ),
            (
                m + 20_000,
                snapshot(
                    "E",
                    m + 20_000,
                    battery__alert_active=True,
                    battery__connected=False,
                    battery__temperature=75.0,
                ),
            ),
            (
                m + 30_000,
                snapshot(
                    "E",
                    m + 30_000,
                    battery__alert_active=False,
                    battery__connected=True,
                    battery__temperature=40.0,
                ),
            ),
        ],
    )
    await redis_client.xadd(
        keys.events,
        {"meter_id": "E", "kind": "offline", "at": str(m + 40_000), "details": '{"reason": "will"}'},
    )
    await redis_client.xadd(
        keys.events, {"meter_id": "E", "kind": "online", "at": str(m + 50_000), "details": "online"}
    )
    await run(settings, once=True)
    await run(settings, once=True)  # nothing twice
    with psycopg.connect(settings.common.database_url) as conn:
        got = conn.execute(
            f"select kind, severity, at, details from {Tables.EVENTS} order by at, kind"
        ).fetchall()
    kinds = [(k, s, int(a.timestamp() * 1000) - m) for k, s, a, _ in got]
    assert kinds == [
        ("battery_alert_raised", "warning", 10_000),
        ("thermal_limit_crossed", "warning", 10_000),
        ("sensor_disconnected", "warning", 20_000),
        ("thermal_limit_crossed", "critical", 20_000),
        ("battery_alert_cleared", "info", 30_000),
        ("sensor_reconnected", "info", 30_000),
        ("thermal_limit_cleared", "info", 30_000),
        ("meter_offline", "warning", 40_000),
        ("meter_online", "info", 50_000),
    ]
    assert got[0][3] == {"soc": 8.0, "alert_threshold": 10}
    assert got[7][3] == {"reason": "will"}


async def test_cleanup_keeps_unaggregated_and_newest_snapshots(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ, ENERLINK_RETENTION_S="180")
    keys = settings.common.keys
    now = await now_ms(redis_client)
    old = [(at, snapshot("K", at)) for at in range(now - 10 * MIN, now - 9 * MIN, 10_000)]
    recent = [(at, snapshot("K", at)) for at in range(now - 90_000, now, 10_000)]
    await put(redis_client, keys, "K", old + recent)
    report = await run(settings, once=True)
    assert report is not None and report.minutes >= 1
    left = {int(s) for _, s in await redis_client.zrange(keys.timeseries("K"), 0, -1, withscores=True)}
    assert not left & {at for at, _ in old}
    assert {at for at, _ in recent} <= left  # younger than the retention: kept


def test_cli_once_exits_zero(environ: dict[str, str]) -> None:
    env = {**environ, "ENERLINK_AGGREGATOR_METRICS_PORT": "0"}
    proc = ServiceProcess(args=["aggregate", "--once"], env=env).start()
    assert proc.process is not None
    assert proc.process.wait(timeout=60) == 0, proc.output()
    assert "aggregate:" in proc.output()


async def test_worker_processes_compute_the_same_rows(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    from enerlink.aggregator.service import compute_pool

    inline = settings_for(environ)
    parallel = settings_for(environ, ENERLINK_AGGREGATE_WORKERS="2")
    keys = inline.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 3 * MIN
    for i in range(40):
        meter = f"W{i:02d}"
        await put(
            redis_client,
            keys,
            meter,
            [
                (
                    m + k * 5000,
                    snapshot(
                        meter,
                        m + k * 5000,
                        import__power=float(i * k),
                        import__total_energy=25.1 + k * i / 100,
                    ),
                )
                for k in range(12)
            ],
        )
    # W01's baseline is late data (its minute flagged): the workers read its late key, not W02's
    at = m - 7_000
    daily = FIXTURE["data"]["import"]["daily_energy"] - 0.1
    baseline = snapshot("W01", at, import__total_energy=25.0, import__daily_energy=daily)
    await put(redis_client, keys, "W01", [(at, baseline)], late=True)
    await redis_client.zadd(keys.late_minutes, {keys.late_member("W01", at // MIN * MIN): 1})
    late = await reader.late_meters(redis_client, keys)
    assert late == {"W01"}
    pairs = [(f"W{i:02d}", m) for i in range(40)]
    (one,) = await asyncio.gather(*Aggregator(inline, redis_client)._submit(pairs, late=None, repaired=None))
    as_tuples = compute(await reader.read_items(redis_client, keys, pairs))
    energy = ALL_COLUMNS.index("import_energy_10uwh")
    assert next(r for r in as_tuples.rows if r[0] == "W01")[energy] == 10_000  # 0.1 Wh: late baseline
    with compute_pool(parallel) as pool:
        parts = Aggregator(parallel, redis_client, executor=pool)._submit(pairs, late=late, repaired=None)
        two = await asyncio.gather(*parts)  # in the order submitted: the pairs' order
    assert len(parts) > 1  # really split over the worker processes
    assert one.keys == [k for part in two for k in part.keys] == pairs
    assert b"".join(one.encoded) == b"".join(b for part in two for b in part.encoded)
    assert len(one.keys) == 40 and not one.rows


async def test_scheduled_service_aggregates_serves_metrics_and_stops(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    import urllib.request

    from tests.support.services import free_port

    port = free_port()
    settings = settings_for(environ, ENERLINK_AGGREGATOR_METRICS_PORT=str(port))
    keys = settings.common.keys
    m = (await now_ms(redis_client)) // MIN * MIN - 2 * MIN
    await put(redis_client, keys, "S", [(m + k * 10_000, snapshot("S", m + k * 10_000)) for k in range(6)])
    task = asyncio.create_task(run(settings))
    try:
        for _ in range(300):  # the start-up tick catches up at once; bounded wait, no timing asserted
            # read in a thread: the service migrates in this event loop, and a read blocked on its
            # migration's lock must not block the loop
            url = settings.common.database_url
            if _has_table(settings) and ("S", minute_dt(m)) in await asyncio.to_thread(rows, url):
                break
            await asyncio.sleep(0.1)
        assert rows(settings.common.database_url)[("S", minute_dt(m))]["sample_count"] == 6
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
        )
        assert b"enerlink_aggregator_lag_seconds" in body
        assert b"enerlink_aggregator_minute_duration_seconds_count" in body
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _has_table(settings: Settings) -> bool:
    with psycopg.connect(settings.common.database_url) as conn:
        row = conn.execute("select to_regclass(%s)", (Tables.AGGREGATOR_WATERMARK,)).fetchone()
        return row is not None and row[0] is not None


async def test_sensor_events_from_status_inventory(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings = settings_for(environ)
    keys = settings.common.keys
    status = load_fixture("meter-status.json")

    async def publish(at: str, *, import_connected: bool) -> None:
        msg = copy.deepcopy(status)
        msg["meterId"] = "Z"
        msg["datetime"] = at
        msg["data"]["sensors"]["ina219"][1]["connected"] = import_connected
        await redis_client.hset(keys.latest_status, "Z", json.dumps(msg))

    await publish("2025-10-26T04:00:00Z", import_connected=True)
    await run(settings, once=True)
    await publish("2025-10-26T04:01:00Z", import_connected=False)
    await run(settings, once=True)
    await run(settings, once=True)  # same status again: nothing new
    await publish("2025-10-26T04:02:00Z", import_connected=True)
    await run(settings, once=True)
    with psycopg.connect(settings.common.database_url) as conn:
        got = conn.execute(f"select kind, severity, at, details from {Tables.EVENTS} order by at").fetchall()
    assert [(k, s, a.minute) for k, s, a, _ in got] == [
        ("sensor_disconnected", "warning", 1),
        ("sensor_reconnected", "info", 2),
    ]
    assert got[0][3] == {"bus": "ina219", "address": "0x41", "sensor": "Import"}


async def test_sensor_events_by_shard_each_once(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Two shards: each reads its own meters' event state, so a reconnection of a meter of either is
    seen once, by its shard."""
    settings = settings_for({**environ, "ENERLINK_AGGREGATE_SHARDS": "2"})
    keys = settings.common.keys
    status = load_fixture("meter-status.json")
    meters = {shard_of(m, 2): m for m in (f"M{n}" for n in range(20))}
    assert len(meters) == 2

    async def publish(at: str, *, import_connected: bool) -> None:
        for meter in meters.values():
            msg = copy.deepcopy(status)
            msg["meterId"] = meter
            msg["datetime"] = at
            msg["data"]["sensors"]["ina219"][1]["connected"] = import_connected
            await redis_client.hset(keys.latest_status, meter, json.dumps(msg))

    await publish("2025-10-26T04:01:00Z", import_connected=False)
    await run(settings, once=True)
    await publish("2025-10-26T04:02:00Z", import_connected=True)
    await run(settings, once=True)
    with psycopg.connect(settings.common.database_url) as conn:
        got = conn.execute(f"select meter_id, kind, at from {Tables.EVENTS} order by meter_id, at").fetchall()
    assert [(m, k, a.minute) for m, k, a in got] == [
        (meter, kind, minute)
        for meter in sorted(meters.values())
        for kind, minute in (("sensor_disconnected", 1), ("sensor_reconnected", 2))
    ]
