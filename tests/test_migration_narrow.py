"""Migration 0010 (narrow rows) on a database at the previous head: what the API serves before and
after, value by value (history JSON and CSV at every resolution, energy, completeness, settlement
energy), and a fresh database's schema against the catalogue.

The old rows are realistic: the real aggregator (today's) computes a household's minutes in a
schema of its own; the test writes them as the previous release stored them (every old column:
copies and sums of channels, averages of counters) into a schema migrated up to 0009, 0100, 0200 and
0201, with its 5-minute rollup and fold state as the old aggregator kept them."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator import fold
from enerlink.aggregator.columns import DERIVED, FEWER_STATS, LAST_ONLY, STAT_COLUMNS, table_columns
from enerlink.db import connect, migrate
from enerlink.schemas.fields import BOOL_FIELDS, DATA_FIELDS
from enerlink.schemas.wire import Tables
from enerlink.settlement import records
from tests.support.aggdata import REAL_REL, columns, insert_rows
from tests.support.apiserver import serve_api
from tests.support.energyday import Household, aggregate_homes
from tests.test_aggregator_fold import _rollup_of

TZ = "Asia/Kolkata"
NEW = 10
LATER = (11, 12, 13, 14)  # migrations after it, held back with it (they expect its shape)
#: served values that were or are float4 (compared to its resolution): real columns, the averages
#: of sums and differences of them, the shares (real before migration 0012, count / samples since)
_REAL = (
    {c.name for c in STAT_COLUMNS if c.sql_type == "real"}
    | {d.name for d in DERIVED if d.name.endswith(("_power_avg", "_current_avg"))}
    | {f"{f.column}_ratio" for f in BOOL_FIELDS}
)


def _old_value(name: str, row: dict[str, Any]) -> Any:
    """An old column's value from a new row (with its derived values): the column itself, a copy,
    or, for the statistics no longer kept, what the old aggregator stored for a counter or a
    setting that did not move within the minute (its last value)."""
    if name in row:
        return row[name]
    base, _, stat = name.rpartition("_")
    if stat in ("avg", "min", "max") and f"{base}_last" in row:
        return row[f"{base}_last"]
    if stat in ("min", "max") and f"{base}_avg" in row:  # a current's extremes (not kept since 0012)
        return row[f"{base}_avg"]
    raise AssertionError(f"no rule for the old column {name}")


def _removed() -> set[str]:
    """What the history served before 0010, 0012 or 0014 and no longer does: averages, minima and
    maxima of counters and of the firmware's net energies, and of the settings kept as last values
    only; the extremes of the channels' currents, of the battery's SOC and charge rate."""
    out = {f"{c}_{s}" for c, kept in FEWER_STATS.items() for s in ("min", "max") if s not in kept}
    for f in DATA_FIELDS:
        counter = f.kind == "counter" or f.name in ("net_daily", "net_total")
        if counter or f.column in LAST_ONLY:
            out |= {f"{f.column}_{s}" for s in ("avg", "min", "max")}
    return out


def _same(before: Any, after: Any, name: str) -> None:
    if isinstance(before, float) and after is not None:
        rel = REAL_REL if name in _REAL else 1e-9
        assert after == pytest.approx(before, rel=rel, abs=1e-9), name
    else:
        assert after == before, name


#: what :func:`_reads` reads: the history (JSON at each resolution, CSV) reads whatever columns a table
#: has, so this release's API reads a schema held back at an older migration too; energy, completeness
#: and settlement read today's columns, so they are read where today's schema holds the same rows
HISTORY = ("history", "csv")
FIGURES = ("energy", "settlement")


async def _reads(
    environ: dict[str, str], *, start: datetime, end: datetime, kinds: tuple[str, ...] = HISTORY + FIGURES
) -> dict[str, Any]:
    span = {"start": start.isoformat(), "end": end.isoformat()}
    wide = {"start": (start - timedelta(days=1)).isoformat(), "end": end.isoformat()}  # whole local days
    out: dict[str, Any] = {}
    async with serve_api(environ, ENERLINK_TIMEZONE=TZ) as api:
        for meter in ("P", "Q"):
            for resolution in ("1m", "5m", "1h", "1d") if "history" in kinds else ():
                got = await api.client.get(
                    f"/telemetry/history/{meter}", params={**wide, "resolution": resolution}
                )
                assert got.status_code == 200, got.text
                out[f"history {meter} {resolution}"] = got.json()["points"]
            if "csv" in kinds:
                got = await api.client.get(
                    f"/telemetry/history/{meter}", params=span, headers={"Accept": "text/csv"}
                )
                assert got.status_code == 200, got.text
                out[f"csv {meter}"] = list(csv.DictReader(io.StringIO(got.text)))
            if "energy" in kinds:
                for path in (f"/meters/{meter}/energy", f"/meters/{meter}/completeness"):
                    got = await api.client.get(path, params={**span, "bucket": "1h"})
                    assert got.status_code == 200, got.text
                    out[path] = got.json()
            if "settlement" in kinds:
                async with await connect(api.settings.common.database_url) as conn:
                    out[f"settlement {meter}"] = await records._energy(
                        conn,
                        meter_id=meter,
                        start=start + timedelta(minutes=7),
                        end=end - timedelta(minutes=3),
                    )
    return out


@contextlib.contextmanager
def source_schema(url: str, uid: str) -> Iterator[str]:
    """A schema of its own beside the test's (its URL), where today's aggregator computes the rows
    the test then writes as an older release stored them; dropped at the end."""
    base = url.split("?", maxsplit=1)[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'create schema "t_{uid}_src"')
    try:
        yield url.replace(f"t_{uid}", f"t_{uid}_src")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'drop schema "t_{uid}_src" cascade')


def _compare_points(before: list[dict[str, Any]], after: list[dict[str, Any]], *, csv_text: bool) -> None:
    assert [p["bucket"] for p in after] == [p["bucket"] for p in before]
    removed = _removed()
    for old, new in zip(before, after, strict=True):
        assert set(old) - set(new) == removed & set(old)
        for name, value in old.items():
            if name in new:
                if csv_text and name != "bucket" and value not in ("", None):
                    _same(float(value), float(new[name]), name) if _is_number(value) else _same(
                        value, new[name], name
                    )
                else:
                    _same(value, new[name], name)


def _same_tree(before: Any, after: Any, where: str) -> None:
    """JSON values equal, numbers to 1e-9 (energies: sums of 10 uWh units, before of Wh)."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and before.keys() == after.keys(), where
        for key, value in before.items():
            _same_tree(value, after[key], f"{where}.{key}")
    elif isinstance(before, list):
        assert isinstance(after, list) and len(before) == len(after), where
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            _same_tree(a, b, f"{where}[{i}]")
    elif isinstance(before, float):
        assert after == pytest.approx(before, rel=1e-9, abs=1e-9), where
    else:
        assert after == before, where


def compare_reads(before: dict[str, Any], after: dict[str, Any]) -> None:
    """What the API served before a migration against after it: every point and value (to the
    stored types' resolution), but what the history no longer serves (:func:`_removed`)."""
    assert before.keys() == after.keys()
    for key, old in before.items():
        if key.startswith("history"):
            _compare_points(old, after[key], csv_text=False)
        elif key.startswith("csv"):
            _compare_points(old, after[key], csv_text=True)
        elif key.startswith("settlement"):
            for a, b in zip(old, after[key], strict=True):
                _same(a, b, key)
        else:  # energy and completeness
            _same_tree(old, after[key], key)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


async def test_narrow_rows_migration_keeps_what_the_api_serves(
    environ: dict[str, str], redis_client: aioredis.Redis, uid: str
) -> None:
    url = environ["ENERLINK_DATABASE_URL"]
    with source_schema(url, uid) as source:
        start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(minutes=75)
        homes = [Household("P", TZ, 1, range(3, 6)), Household("Q", TZ, 3, range(0))]
        ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        await aggregate_homes(
            {**environ, "ENERLINK_DATABASE_URL": source}, homes, start_ms=ms[0], end_ms=ms[1], timezone=TZ
        )
        with psycopg.connect(source) as conn:
            derived = ", ".join(f'{d.sql} as "{d.name}"' for d in DERIVED)
            cur = conn.execute(f"select t.*, {derived} from {Tables.TELEMETRY_AGGREGATES} t".encode())
            names = [d.name for d in cur.description or []]
            new_rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        assert len(new_rows) == 2 * 75
        figures = await _reads(
            {**environ, "ENERLINK_DATABASE_URL": source}, start=start, end=end, kinds=FIGURES
        )

    # the previous head, its rows as the previous aggregator wrote them
    assert NEW not in await migrate(url, skip={NEW, *LATER})
    with psycopg.connect(url) as conn:
        old_columns = [name for name, _ in columns(conn, Tables.TELEMETRY_AGGREGATES)]
    insert_rows(
        url, Tables.TELEMETRY_AGGREGATES, [{c: _old_value(c, r) for c in old_columns} for r in new_rows]
    )
    insert_rows(url, Tables.TELEMETRY_5M, _rollup_of(url, width="5 minutes"))
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.ROLLUP_FOLD} (meter_id, phase, folded_until) select meter_id,"
            f" {fold.phase_sql('meter_id')}, min(bucket) from {Tables.TELEMETRY_5M} group by meter_id"
        )
        conn.execute(f"update {Tables.ROLLUP_STATE} set timezone = %s", (TZ,))
        conn.execute(
            f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)", (end,)
        )
    # read by this release's API (the history reads whatever columns the table has) with 0010 held
    # back: the API migrates at start, so 0010 (and the later ones) are marked applied meanwhile
    with psycopg.connect(url) as conn:
        for version in (NEW, *LATER):
            conn.execute(
                f"insert into {Tables.MIGRATIONS} (version, name) values (%s, 'held back')", (version,)
            )
    before = {**await _reads(environ, start=start, end=end, kinds=HISTORY), **figures}
    with psycopg.connect(url) as conn:
        conn.execute(f"delete from {Tables.MIGRATIONS} where version = any(%s)", ([NEW, *LATER],))

    assert await migrate(url) == [NEW, *LATER]
    after = await _reads(environ, start=start, end=end)

    compare_reads(before, after)
    # every value is there: the energy of the period is not zero, the points are all there
    assert before["settlement P"][0] > 0 and len(before["history P 1m"]) == 75
    assert len(before["history Q 1d"]) >= 1 and len(before["history Q 1h"]) >= 2
    assert before["/meters/P/energy"]["total"]["grid_import_kwh"] > 0


async def test_a_fresh_database_has_the_catalogues_columns_and_types(database_url: str) -> None:
    await migrate(database_url)
    with psycopg.connect(database_url) as conn:
        for table, level in (
            (Tables.TELEMETRY_AGGREGATES, "minute"),
            (Tables.TELEMETRY_5M, "5m"),
            (Tables.TELEMETRY_5M_CLOSED, "5m"),
            (Tables.TELEMETRY_5M_OPEN, "5m"),
            (Tables.TELEMETRY_1H_FOLDED, "folded"),
            (Tables.TELEMETRY_1D_FOLDED, "folded"),
            (Tables.TELEMETRY_1H, "folded"),
            (Tables.TELEMETRY_1D, "folded"),
        ):
            rows = conn.execute(
                "select column_name, format_type(a.atttypid, a.atttypmod), a.attnotnull"
                " from information_schema.columns c join pg_attribute a"
                " on a.attrelid = to_regclass(quote_ident(c.table_name)) and a.attname = c.column_name"
                " where c.table_schema = current_schema() and c.table_name = %s order by c.ordinal_position",
                (table,),
            ).fetchall()
            found = [(str(n), str(t)) for n, t, _ in rows]
            expected = [
                (n, t.replace(" not null", "").replace("timestamptz", "timestamp with time zone"))
                for n, t in table_columns(level)  # type: ignore[arg-type]
            ]
            if table in (Tables.TELEMETRY_5M, Tables.TELEMETRY_1H, Tables.TELEMETRY_1D):  # views
                assert sorted(found) == sorted(expected), table
            else:
                assert found == expected, table
