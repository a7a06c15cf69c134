"""A month archived before migration 0010 (the minute table's old columns) restores into the
narrow rows: every column the table kept, to its new type's resolution; the settings' last values
from the same stand-ins as the migration; the dropped columns left out."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from enerlink.archiver.months import Month
from enerlink.archiver.service import archive_now, run
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import NOT_STATISTICS, REAL_REL, aggregate_row, columns, insert_rows

OLD = Month.of(datetime.now(UTC) - timedelta(days=420))
ROWS = 20
_KEYS = NOT_STATISTICS


def _rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"select * from {Tables.TELEMETRY_AGGREGATES} order by bucket")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


async def test_a_month_archived_before_the_narrow_rows_restores_into_them(
    environ: dict[str, str], database_url: str
) -> None:
    await migrate(database_url, skip={10, 11})  # 0011 expects 0010's shape
    with psycopg.connect(database_url) as conn:
        stats = [(n, t) for n, t in columns(conn, Tables.TELEMETRY_AGGREGATES) if n not in _KEYS]
    old = [
        aggregate_row(
            "METER001",
            OLD.start + timedelta(minutes=i),
            **{n: "deficit" if t == "text" else 10.0 + i + k / 997 for k, (n, t) in enumerate(stats)},
        )
        for i in range(ROWS)
    ]
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, old)
    before = _rows(database_url)
    settings = Settings.from_env(Env(environ))
    store = open_store(settings.storage)
    store.ensure()
    summary = archive_now(settings, store, threading.Event())
    assert [r.rows for r in summary.archived] == [ROWS]
    assert _rows(database_url) == []

    assert await migrate(database_url) == [10, 11]
    await run(settings, restore=OLD)
    after = _rows(database_url)
    assert len(after) == ROWS
    kept = set(after[0])
    for was, now in zip(before, after, strict=True):
        for name, value in was.items():
            if name not in kept:
                continue
            if isinstance(value, float):
                assert now[name] == pytest.approx(value, rel=REAL_REL), name
            else:
                assert now[name] == value, name
        assert now["battery_estimated_capacity_last"] == pytest.approx(
            was["battery_estimated_capacity_avg"], rel=REAL_REL
        )
        assert now["battery_alert_threshold_last"] == round(was["battery_alert_threshold_max"])
    dropped = set(before[0]) - kept
    assert {"net_grid_import_power_avg", "import_daily_energy_avg", "net_solar_net_daily_min"} <= dropped
