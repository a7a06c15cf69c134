"""Completeness from ``seq`` on real Redis and PostgreSQL: the minute rows' seq_first, seq_last and
repaired_count, a repaired gap re-aggregated, the hourly rule (gaps, restarts, no seq), the
``completeness_low`` event raised once per closed hour, and the migration of old rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink import completeness
from enerlink.aggregator.job import Aggregator
from enerlink.aggregator.settings import Settings
from enerlink.db import connect, migrate
from enerlink.schemas.wire import Keys, Tables
from tests.test_aggregator import MIN, now_ms, put, rows, settings_for, snapshot

HOUR = 3_600_000


def reading(meter: str, at_ms: int, seq: int | None) -> bytes:
    raw = snapshot(meter, at_ms)
    if seq is None:
        return raw
    msg = json.loads(raw)
    msg["seq"] = seq
    return json.dumps(msg).encode()


def closed_hour(now: int) -> int:
    """Start of the hour before the current one (closed, inside a two-hour catch-up)."""
    return now // HOUR * HOUR - HOUR


async def _closed_hour_run(environ: dict[str, str], r: aioredis.Redis) -> tuple[Settings, int]:
    """Settings keeping four hours and judging an hour as soon as it closes, and the last closed hour."""
    settings = settings_for(environ, ENERLINK_RETENTION_S="14400", ENERLINK_COMPLETENESS_EVAL_DELAY_S="0")
    return settings, closed_hour(await now_ms(r))


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def feed(r: aioredis.Redis, keys: Keys, meter: str, points: Sequence[tuple[int, int | None]]) -> None:
    await put(r, keys, meter, [(at, reading(meter, at, seq)) for at, seq in points])


def events(url: str, kind: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"select meter_id, at, details from {Tables.EVENTS} where kind = %s order by meter_id, at",
            (kind,),
        ).fetchall()


async def hourly(url: str, meter: str, hour: int) -> list[completeness.Completeness]:
    async with await connect(url) as conn:
        return await completeness.of_meter(
            conn, meter_id=meter, start=dt(hour), end=dt(hour + HOUR), bucket="1h"
        )


async def test_repaired_gap_is_reaggregated_and_the_low_hour_raises_one_event(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings, h = await _closed_hour_run(environ, redis_client)
    keys = settings.common.keys
    a, b, c = h + 10 * MIN, h + 11 * MIN, h + 12 * MIN
    # S1: seq 1..12 over two minutes, 13 and 14 lost, 15..18 in the third minute
    points = [(a + i * 10_000, 1 + i) for i in range(6)] + [(b + i * 10_000, 7 + i) for i in range(6)]
    points += [(c + i * 10_000, 13 + i) for i in range(2, 6)]
    await feed(redis_client, keys, "S1", points)
    await feed(redis_client, keys, "N1", [(a + i * 10_000, None) for i in range(6)])  # no seq
    await migrate(settings.common.database_url)
    aggregator = Aggregator(settings, redis_client)
    await aggregator.run_job()

    stored = rows(settings.common.database_url)
    first, second, third = (stored[("S1", dt(m))] for m in (a, b, c))
    assert (first["seq_first"], first["seq_last"], first["repaired_count"]) == (1, 6, 0)
    assert (second["seq_first"], second["seq_last"]) == (7, 12)
    assert (third["seq_first"], third["seq_last"], third["sample_count"]) == (15, 18, 4)
    no_seq = stored[("N1", dt(a))]
    assert (no_seq["seq_first"], no_seq["seq_last"], no_seq["repaired_count"]) == (None, None, 0)

    (hour,) = await hourly(settings.common.database_url, "S1", h)
    assert (hour.expected, hour.received, hour.repaired, hour.missing) == (18, 16, 0, 2)
    assert hour.minutes == 3 and hour.ratio == 16 / 18
    (unknown,) = await hourly(settings.common.database_url, "N1", h)
    assert (unknown.received, unknown.expected, unknown.repaired, unknown.missing) == (6, None, None, None)
    assert unknown.ratio is None

    low = events(settings.common.database_url, completeness.LOW_EVENT)
    assert [(m, at) for m, at, _ in low] == [("S1", dt(h))]  # N1: unknown, no event
    assert low[0][2]["missing"] == 2 and low[0][2]["expected"] == 18
    assert aggregator.metrics.completeness_missing._value.get() == 2
    assert aggregator.metrics.completeness_below._value.get() == 1

    # the edge re-sends 13 and 14: stored as late data, listed as repaired, the minute flagged
    t = await now_ms(redis_client)
    repaired = {c: 13, c + 10_000: 14}
    await put(redis_client, keys, "S1", [(at, reading("S1", at, seq)) for at, seq in repaired.items()])
    await redis_client.zadd(keys.repaired("S1"), {str(seq): at for at, seq in repaired.items()})
    await redis_client.zadd(keys.late_minutes, {Keys.late_member("S1", c): t})
    report = await aggregator.run_job()
    assert report.late_pairs >= 1
    third = rows(settings.common.database_url)[("S1", dt(c))]
    assert (third["seq_first"], third["seq_last"], third["sample_count"], third["repaired_count"]) == (
        13,
        18,
        6,
        2,
    )
    (hour,) = await hourly(settings.common.database_url, "S1", h)
    assert (hour.expected, hour.received, hour.repaired, hour.missing) == (18, 18, 2, 0)
    assert hour.ratio == 1.0
    # re-aggregating the hour raised nothing new
    assert len(events(settings.common.database_url, completeness.LOW_EVENT)) == 1
    await aggregator.run_job()
    assert len(events(settings.common.database_url, completeness.LOW_EVENT)) == 1


async def test_rule_across_minutes_restarts_and_days(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    settings, h = await _closed_hour_run(environ, redis_client)
    keys = settings.common.keys
    a, b, c, d = (h + k * MIN for k in (1, 2, 30, 31))
    points = [(a + i * 10_000, 100 + i) for i in range(6)]  # first minute with seq: 100..105 (6)
    points += [(b + i * 10_000, 108 + i) for i in range(3)]  # 106, 107 lost: expected 110 - 105 = 5
    points += [(c + i * 10_000, 1 + i) for i in range(4)]  # re-flash: counted from the new seq_first (4)
    # inside one minute: 5 before a restart, 1..2 after: that minute's own readings are expected
    points += [(d, 5), (d + 10_000, 1), (d + 20_000, 2)]
    await feed(redis_client, keys, "R1", points)
    await migrate(settings.common.database_url)
    await Aggregator(settings, redis_client).run_job()
    (hour,) = await hourly(settings.common.database_url, "R1", h)
    assert (hour.expected, hour.received, hour.missing, hour.repaired) == (6 + 5 + 4 + 3, 16, 2, 0)
    async with await connect(settings.common.database_url) as conn:
        # a range starting later finds the previous minute with seq before it (no first-minute rule)
        (later,) = await completeness.of_meter(conn, meter_id="R1", start=dt(b), end=dt(c), bucket="1h")
        assert (later.expected, later.received, later.missing) == (5, 3, 2)
        (day,) = await completeness.of_meter(
            conn, meter_id="R1", start=dt(h - 23 * HOUR), end=dt(h + HOUR), bucket="1d", timezone="UTC"
        )
        assert (day.expected, day.received, day.missing) == (18, 16, 2)
        fleet = await completeness.of_fleet(conn, start=dt(h), end=dt(h + HOUR))
        assert [(p.meter_id, p.expected, p.missing) for p in fleet] == [("R1", 18, 2)]


async def test_migration_keeps_old_rows_as_unknown(database_url: str) -> None:
    await migrate(database_url, until=8)
    bucket = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"select {Tables.ENSURE_MONTH_PARTITION}(%s, %s)", (Tables.TELEMETRY_AGGREGATES, bucket))
        conn.execute(
            f"insert into {Tables.TELEMETRY_AGGREGATES} (meter_id, bucket, sample_count, first_at, last_at)"
            " values ('OLD', %s, 6, %s, %s)",
            (bucket, bucket, bucket),
        )
    applied = await migrate(database_url)
    assert 9 in applied and 201 in applied
    async with await connect(database_url) as conn:
        (old,) = await completeness.of_meter(
            conn, meter_id="OLD", start=bucket, end=dt(int(bucket.timestamp() * 1000) + MIN), bucket="1h"
        )
    assert (old.received, old.expected, old.repaired, old.missing, old.ratio) == (6, None, None, None, None)


async def test_settlement_waits_for_missing_readings_until_repaired_or_the_deadline(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    from enerlink.config import CommonSettings, Env
    from tests.support.aggdata import aggregate_row, insert_rows
    from tests.support.apiserver import serve_api
    from tests.support.scripted_meter import scripted_meter

    common = CommonSettings.from_env(Env(environ))
    url = environ["ENERLINK_DATABASE_URL"]
    now = await now_ms(redis_client)
    close_ms = now // MIN * MIN - 2 * MIN + 15_000  # recent: the repair deadline (1 h) is ahead
    first = now // MIN * MIN - 6 * MIN
    for meter in ("G1", "D1"):
        await redis_client.hset(common.keys.meters, meter, str(now))

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return close_ms / 1000, {"settled_import_wh": 1.0, "settled_export_wh": 0.0}

    def minutes(meter: str, *, lost: int) -> list[dict[str, Any]]:
        # four minutes of 6 readings (seq 1..24); ``lost`` readings before the third never arrived
        out = []
        for k in range(4):
            seq_first = 1 + 6 * k
            count = 6 - lost if k == 2 else 6
            out.append(
                aggregate_row(
                    meter,
                    dt(first + k * MIN),
                    sample_count=count,
                    seq_first=seq_first + (6 - count),
                    seq_last=seq_first + 5,
                    repaired_count=0,
                    import_energy_10uwh=25_000,  # 0.25 Wh
                )
            )
        return out

    await migrate(url)
    insert_rows(url, Tables.TELEMETRY_AGGREGATES, minutes("G1", lost=2) + minutes("D1", lost=1))
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
            (dt(close_ms // MIN * MIN + MIN),),  # the close's minute and the next are aggregated
        )
    async with serve_api(environ) as api, scripted_meter(common, ["G1"], script):
        made = await api.client.post("/meters/G1/settlements")
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        still = (await api.client.get(f"/meters/G1/settlements/{sid}")).json()
        assert still["status"] == "pending" and still["readings_missing"] is None
        # the two readings are re-sent and the minute re-aggregated
        with psycopg.connect(url) as conn:
            conn.execute(
                f"update {Tables.TELEMETRY_AGGREGATES} set sample_count = 6, seq_first = 13,"
                " repaired_count = 2 where meter_id = 'G1' and bucket = %s",
                (dt(first + 2 * MIN),),
            )
        done = (await api.client.get(f"/meters/G1/settlements/{sid}")).json()
    assert done["status"] == "final"
    assert (done["readings_expected"], done["readings_received"], done["readings_repaired"]) == (24, 24, 2)
    assert done["readings_missing"] == 0

    # D1: a reading never comes back; past the deadline the settlement is final with it missing
    async with (
        serve_api(environ, ENERLINK_SETTLEMENT_REPAIR_DEADLINE_S="0") as api,
        scripted_meter(common, ["D1"], script),
    ):
        made = await api.client.post("/meters/D1/settlements")
        assert made.status_code == 201, made.text
        late = made.json()
    assert late["status"] == "final"
    assert (late["readings_expected"], late["readings_received"], late["readings_missing"]) == (24, 23, 1)


def test_seq_is_decoded_alike_on_both_paths_and_a_bad_one_is_flagged() -> None:
    from enerlink.aggregator import batch, fastparse

    at = 1_764_000_000_000
    raws = [reading("P1", at, 41), reading("P1", at + 10_000, None), reading("P1", at + 20_000, 2**40)]
    bad = json.loads(reading("P1", at + 30_000, 1))
    bad["seq"] = "43"
    raws.append(json.dumps(bad).encode())
    decoded = batch.decode(raws, ["P1"] * len(raws))
    assert decoded.seq[:3].tolist() == [41, -1, 2**40]
    assert decoded.ok.tolist() == [True, True, True, False]
    assert [fastparse.parse(raw, "P1").seq for raw in raws[:3]] == [41, None, 2**40]
    assert [fastparse._parse_orjson(raw, "P1").seq for raw in raws[:3]] == [41, None, 2**40]
    for parse in (fastparse.parse, fastparse._parse_orjson):
        with pytest.raises(fastparse.BadSnapshot):
            parse(raws[3], "P1")


async def test_a_restart_of_seq_from_beyond_two_billion_inside_a_minute(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """The minute row keeps its last ``seq`` as a 32-bit span after its first: a restart from beyond
    two billion inside a minute does not fit it. The minute keeps its first ``seq`` and counts as one
    without ``seq``; the next minute is counted from its own ``seq`` (a restart), nothing fails."""
    settings, h = await _closed_hour_run(environ, redis_client)
    keys = settings.common.keys
    a, b = h + 20 * MIN, h + 21 * MIN
    huge = 3_000_000_000
    points = [(a + i * 10_000, huge + i) for i in range(3)] + [
        (a + (3 + i) * 10_000, 1 + i) for i in range(3)
    ]
    points += [(b + i * 10_000, 4 + i) for i in range(6)]
    await feed(redis_client, keys, "R1", points)
    await migrate(settings.common.database_url)
    await Aggregator(settings, redis_client).run_job()

    stored = rows(settings.common.database_url)
    restart, after = stored[("R1", dt(a))], stored[("R1", dt(b))]
    assert (restart["seq_first"], restart["seq_span"], restart["sample_count"]) == (huge, None, 6)
    assert (after["seq_first"], after["seq_last"], after["seq_span"]) == (4, 9, 5)
    (hour,) = await hourly(settings.common.database_url, "R1", h)
    assert (hour.expected, hour.received, hour.missing) == (6, 12, 0)  # the second minute's six
