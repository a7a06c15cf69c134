"""Stored snapshots are read without pydantic (aggregator/fastparse.py): a corrupt or foreign member
is counted and skipped, never a crash, and the good ones next to it still count; both decoders
(msgspec when installed, orjson otherwise) agree. Rollups merged minute by minute equal SQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator import fastparse
from enerlink.aggregator.columns import MINUTE_COLUMNS, STAT_COLUMNS
from enerlink.aggregator.service import run
from enerlink.schemas.wire import Tables
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
_REAL = {c.name for c in STAT_COLUMNS if c.sql_type == "real"}


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


async def test_job_written_part_by_part_equals_sql(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Worker processes, every batch split into parts written one by one in the minute's
    transaction: catch-up minutes, then late data for one meter in two minutes (its pairs land in
    different parts, replacing stored rows): minute rows complete, rollups equal SQL."""
    from enerlink.aggregator.job import Aggregator
    from enerlink.aggregator.service import compute_pool

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


def _batch_inputs() -> tuple[list[bytes], list[str], set[int]]:
    """300 snapshots over three chunks: corrupt ones (every kind) spread among good ones, some with
    a temperature (one only as a string, which does not count), integers where floats are usual."""
    raws: list[bytes] = []
    bad: set[int] = set()
    cases = sorted(CORRUPT)
    for i in range(300):
        at = 1_761_452_830_000 + i * 1000
        if i % 23 == 5:
            case = cases[(i // 23) % len(cases)]
            raws.append(CORRUPT[case].replace(b"METER001", b"B") if case != "other meter" else CORRUPT[case])
            bad.add(i)
            continue
        values: dict[str, Any] = {"import__power": 100 + i, "battery__soc": 50.5 + i / 10}
        if i % 17 == 3:
            values["battery__temperature"] = 40 + i / 7
            values["solar_input__temperature"] = 70.0
        if i % 29 == 4:
            values["load_home__temperature"] = "hot"
        raws.append(snapshot("B", at, **values))
    return raws, ["B"] * len(raws), bad


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec-chunks", "one-by-one"])
def test_batch_decoding_equals_the_snapshot_decoder(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """aggregator/batch.py gives, row by row, what fastparse.parse gives snapshot by snapshot: the
    same values (VALUE_FIELDS order), times, enums and temperature; the same snapshots refused, for
    the same reason; the good ones in a chunk with a bad one are kept."""
    from enerlink.aggregator import batch

    if not fast:
        monkeypatch.setattr(batch, "_FAST", None)
    elif batch._FAST is None:
        pytest.skip("msgspec not installed")
    raws, ids, bad = _batch_inputs()
    decoded = batch.decode(raws, ids)
    assert {row for row, _ in decoded.errors} == bad == set(np.flatnonzero(~decoded.ok).tolist())
    for row, why in decoded.errors:
        with pytest.raises(fastparse.BadSnapshot) as refused:
            fastparse.parse(raws[row], "B")
        assert why == str(refused.value)
    position = {f: i for i, f in enumerate(fastparse.RAW_ORDER)}
    for row, raw in enumerate(raws):
        if row in bad:
            assert not decoded.values[row].any() and decoded.at[row] is None
            continue
        snap = fastparse.parse(raw, "B")
        assert decoded.values[row].tolist() == [
            float(snap.vector[position[f]]) for f in fastparse.VALUE_FIELDS
        ]
        assert (decoded.at_ms[row], decoded.at[row], decoded.enums[row]) == (snap.at_ms, snap.at, snap.enums)
        temperature = decoded.temperature[row]
        assert (None if np.isnan(temperature) else float(temperature)) == snap.temperature
    with_temperature = [r for r in range(300) if r not in bad and r % 17 == 3]
    assert with_temperature and all(decoded.temperature[r] == max(40 + r / 7, 70.0) for r in with_temperature)


def _counters(wh: float) -> dict[str, float]:
    """The import channel's total and daily counters at ``wh`` (both growing alike: no reset)."""
    return {"import__total_energy": wh, "import__daily_energy": wh - 8.0}


def test_compute_picks_each_minutes_snapshots_and_baseline() -> None:
    """Per item: the snapshots inside its minute, a repeated time counted once (the first stored),
    the baseline only when before the minute; a bad snapshot is counted, a bad baseline only for an
    item that has a minute to aggregate. Hand-computed values."""
    from enerlink.aggregator.compute import Item, compute

    m = 1_761_452_820_000  # a minute start
    items = [
        Item(
            "A",
            m,
            [
                snapshot("A", m + 10_000, import__power=100.0, **_counters(10.0)),
                snapshot("A", m + 10_000, import__power=999.0, **_counters(10.0)),  # same time
                snapshot("A", m + 30_000, import__power=300.0, **_counters(10.5)),
                snapshot("A", m + 70_000, import__power=5000.0),  # the next minute
                CORRUPT["truncated"].replace(b"METER001", b"A"),
            ],
            snapshot("A", m - 5_000, import__power=1.0, **_counters(9.75)),
        ),
        Item("N", m, [snapshot("N", m - 1_000)], b"not json"),  # nothing in the minute
        Item("C", m, [snapshot("C", m + 20_000, import__total_energy=3.0)], snapshot("C", m + 5_000)),
    ]
    result = compute(items)
    assert result.bad == 1 and result.samples == 3
    from enerlink.aggregator.columns import MINUTE_COLUMNS

    got = {row[0]: dict(zip(MINUTE_COLUMNS, row, strict=True)) for row in result.rows}
    assert sorted(got) == ["A", "C"]
    a, c = got["A"], got["C"]
    assert a["sample_count"] == 2 and a["import_power_avg"] == 200.0
    assert (a["import_power_min"], a["import_power_max"]) == (100.0, 300.0)
    assert (a["first_ms"], a["last_ms"]) == (10_000, 30_000)  # into the minute
    assert a["import_energy_10uwh"] == 75_000  # 0.75 Wh, from the baseline's counters on
    assert a["import_total_energy_last"] == 10.5
    assert c["sample_count"] == 1 and c["import_energy_10uwh"] == 0  # its "baseline" is inside the minute


def test_a_gaps_energy_is_stored_whole_in_the_first_minute_after_it() -> None:
    """Readings lost for two hours while a 3 kW load ran: the first minute after the gap carries the
    gap's 6,000.12345 Wh (its baseline is the last reading before the gap), to the counters' 5th
    decimal, in the tuples and in the binary COPY rows alike."""
    from enerlink.aggregator.columns import MINUTE_COLUMNS
    from enerlink.aggregator.compute import Item, compute

    m = 1_761_452_820_000
    before = snapshot("G", m - 2 * 3_600_000, **_counters(100.0))
    item = Item("G", m, [snapshot("G", m + 5_000, **_counters(6_100.12345))], before)
    (row,) = compute([item]).rows
    assert dict(zip(MINUTE_COLUMNS, row, strict=True))["import_energy_10uwh"] == 600_012_345
    encoded = compute([item], encode=True).encoded
    assert (600_012_345).to_bytes(8, "big") in b"".join(encoded)


def test_rows_encoded_for_binary_copy_store_the_same_values(environ: dict[str, str]) -> None:
    """aggregator/copybin.py's bytes, COPYed, give exactly the rows psycopg's own binary COPY of the
    same tuples gives: texts (non-ASCII meter id), times (microseconds), counts, every float."""
    import asyncio

    from enerlink.aggregator import store
    from enerlink.aggregator.compute import Item, compute
    from enerlink.db import connect, migrate

    m = 1_761_452_820_000
    items = [
        Item(
            meter,
            m,
            [
                snapshot(meter, m + k * 5_000 + 123, import__power=1.5 * k + n, battery__soc=99.9 - k / 3)
                for k in range(1 + n % 4)
            ],
        )
        for n, meter in enumerate(["A", "Zählerß-07", "B" * 40])
    ]
    as_tuples = compute(items)
    encoded = compute(items, encode=True)
    assert encoded.keys == [(i.meter_id, m) for i in items] and not encoded.rows
    url = environ["ENERLINK_DATABASE_URL"]

    async def _copy_both() -> tuple[list[Any], list[Any]]:
        await migrate(url)
        async with await connect(url) as conn:
            for table in ("_copy_tuples", "_copy_encoded"):
                await conn.execute(f"create temp table {table} (like {Tables.TELEMETRY_AGGREGATES})".encode())
            await store.copy_rows(conn, as_tuples.rows, table="_copy_tuples")
            await store.copy_encoded(conn, encoded.encoded, table="_copy_encoded")
            found = []
            for table in ("_copy_tuples", "_copy_encoded"):
                names = ", ".join(f'"{c}"' for c in MINUTE_COLUMNS)  # the order compute gives
                cur = await conn.execute(f"select {names} from {table} order by meter_id".encode())
                found.append(await cur.fetchall())
        return found[0], found[1]

    from_tuples, from_encoded = asyncio.run(_copy_both())
    assert len(from_tuples) == 3 and from_encoded == from_tuples
    # a real column holds the float32 the tuples carry (read back as its shortest decimal)
    as_float32 = [
        [np.float32(v) if n in _REAL else v for n, v in zip(MINUTE_COLUMNS, r, strict=True)]
        for r in sorted(from_tuples)
    ]
    assert as_float32 == [
        [np.float32(v) if n in _REAL else v for n, v in zip(MINUTE_COLUMNS, r, strict=True)]
        for r in sorted(as_tuples.rows)
    ]
