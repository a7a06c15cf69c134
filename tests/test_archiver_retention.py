"""Retention per resolution on the real PostgreSQL and the local archive store: minute rows, complete
5-minute rows, folded hours and days each leave PostgreSQL after their own retention (archived and
verified as the minute rows are), a month restores every resolution archived for it, the history
answers at the finest resolution still held and says so, and the settings refuse a coarser resolution
kept shorter than a finer one."""

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
from enerlink.config import ConfigError, Env
from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.apiserver import serve_api

NOW = datetime.now(UTC)
OLD = Month.of(NOW - timedelta(days=500))  # past the minute rows' and the 5-minute rows' retention
MID = Month.of(NOW - timedelta(days=200))  # past the minute rows' only
RETENTION = {
    "ENERLINK_ARCHIVE_RETENTION_DAYS": "90",
    "ENERLINK_ARCHIVE_RETENTION_5M_DAYS": "365",
    "ENERLINK_ARCHIVE_RETENTION_1H_DAYS": "forever",
}  # the daily rows: kept for ever (the default)
_STEPS = {
    Tables.TELEMETRY_AGGREGATES: (timedelta(minutes=1), 90),
    Tables.TELEMETRY_5M_CLOSED: (timedelta(minutes=5), 18),
    Tables.TELEMETRY_1H_FOLDED: (timedelta(hours=1), 2),
    Tables.TELEMETRY_1D_FOLDED: (timedelta(days=1), 1),
}


def _count(url: str, table: str, month: Month) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f'select count(*) from "{table}" where bucket >= %s and bucket < %s', (month.start, month.end)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _fill(url: str, month: Month) -> None:
    for table, (step, n) in _STEPS.items():
        insert_rows(
            url,
            table,
            [aggregate_row("METER001", month.start + step * i, import_power_avg=100.0 + i) for i in range(n)],
        )


async def _history(environ: dict[str, str], start: datetime, hours: int) -> tuple[dict[str, Any], str]:
    async with serve_api(environ) as api:
        got = await api.client.get(
            "/telemetry/history/METER001",
            params={"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()},
        )
        assert got.status_code == 200, got.text
        csv = await api.client.get(
            "/telemetry/history/METER001",
            params={"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()},
            headers={"Accept": "text/csv"},
        )
        assert csv.status_code == 200, csv.text
        return got.json(), csv.headers["x-enerlink-resolution"]


async def test_each_resolution_leaves_after_its_own_retention(
    environ: dict[str, str], database_url: str
) -> None:
    await migrate(database_url)
    for month in (OLD, MID):
        _fill(database_url, month)
    recent = (NOW - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, [aggregate_row("METER001", recent)])
    settings = Settings.from_env(Env({**environ, **RETENTION}))
    store = open_store(settings.storage)
    store.ensure()

    summary = archive_now(settings, store, threading.Event(), now=NOW)
    archived = sorted((r.table, str(r.month), r.rows) for r in summary.archived)
    assert archived == sorted(
        [
            (Tables.TELEMETRY_AGGREGATES, str(OLD), 90),
            (Tables.TELEMETRY_AGGREGATES, str(MID), 90),
            (Tables.TELEMETRY_5M_CLOSED, str(OLD), 18),
        ]
    )
    assert summary.failed == []
    held = {(t, m): _count(database_url, t, m) for t in _STEPS for m in (OLD, MID)}
    assert held == {
        (Tables.TELEMETRY_AGGREGATES, OLD): 0,
        (Tables.TELEMETRY_AGGREGATES, MID): 0,
        (Tables.TELEMETRY_5M_CLOSED, OLD): 0,
        (Tables.TELEMETRY_5M_CLOSED, MID): 18,
        (Tables.TELEMETRY_1H_FOLDED, OLD): 2,
        (Tables.TELEMETRY_1H_FOLDED, MID): 2,
        (Tables.TELEMETRY_1D_FOLDED, OLD): 1,
        (Tables.TELEMETRY_1D_FOLDED, MID): 1,
    }
    again = archive_now(settings, store, threading.Event(), now=NOW)  # nothing more is due
    assert again.archived == [] and again.failed == []

    # the history answers at the finest resolution still held, and says so
    mid, mid_header = await _history(environ, MID.start, 1)
    assert mid["resolution"] == "5m" == mid_header and len(mid["points"]) == 12
    assert f"the 1m rows of {MID} are archived" in mid["note"] and "answered at 5m" in mid["note"]
    old, old_header = await _history(environ, OLD.start, 2)
    assert old["resolution"] == "1h" == old_header and len(old["points"]) == 2
    assert [p["import_power_avg"] for p in old["points"]] == [100.0, 101.0]
    held_now, held_header = await _history(environ, recent, 1)
    assert held_now["resolution"] == "1m" == held_header and "note" not in held_now
    assert len(held_now["points"]) == 1

    # a month restores every resolution archived for it; the history is at 1m again
    await run(settings, restore=OLD)
    assert _count(database_url, Tables.TELEMETRY_AGGREGATES, OLD) == 90
    assert _count(database_url, Tables.TELEMETRY_5M_CLOSED, OLD) == 18
    back, back_header = await _history(environ, OLD.start, 1)
    assert back["resolution"] == "1m" == back_header and len(back["points"]) == 60


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ENERLINK_ARCHIVE_RETENTION_5M_DAYS": "30"}, "ENERLINK_ARCHIVE_RETENTION_5M_DAYS=30"),
        ({"ENERLINK_ARCHIVE_RETENTION_1H_DAYS": "400"}, "ENERLINK_ARCHIVE_RETENTION_1H_DAYS=400"),
        ({"ENERLINK_ARCHIVE_RETENTION_1D_DAYS": "-1"}, "must be >= 0 or forever"),
        ({"ENERLINK_ARCHIVE_RETENTION_1D_DAYS": "soon"}, "is not an integer"),
    ],
)
def test_a_coarser_resolution_is_kept_at_least_as_long(
    environ: dict[str, str], extra: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(Env({**environ, "ENERLINK_ARCHIVE_RETENTION_DAYS": "90", **extra}))
    longer = {"ENERLINK_ARCHIVE_RETENTION_1H_DAYS": "1000", "ENERLINK_ARCHIVE_RETENTION_1D_DAYS": "3650"}
    kept = Settings.from_env(Env({**environ, **RETENTION, **longer}))
    assert kept.retention_for(Tables.TELEMETRY_1D_FOLDED) == 3650
    assert kept.retention_for(Tables.TELEMETRY_5M_CLOSED) == 365
    forever = Settings.from_env(Env({**environ, **RETENTION}))
    assert forever.retention_for(Tables.TELEMETRY_1H_FOLDED) is None
    with pytest.raises(ConfigError, match="RETENTION_1D_DAYS=3650"):  # the hours are kept for ever
        Settings.from_env(Env({**environ, **RETENTION, "ENERLINK_ARCHIVE_RETENTION_1D_DAYS": "3650"}))
    assert kept.retention_for(Tables.EVENTS) == kept.retention_for(Tables.TELEMETRY_AGGREGATES) == 90
