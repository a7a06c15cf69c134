"""A month archived before migration 0010 (the minute table's old columns), 0012 (shares and Wh) or
0014 (timestamps and the last seq, currents, the SOC's extremes) restores into today's rows: every
column the table kept, to its new type's resolution; the settings' last values from the same stand-ins
as the migration, the counts, energies, times and seq converted as it converts them; the dropped
columns left out."""

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
from enerlink.schemas.fields import BOOL_FIELDS, ENUM_FIELDS
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


_STATES = {f"{f.column}_last": f.values for f in ENUM_FIELDS}


def _value(name: str, *, i: int, k: int) -> Any:
    """A stored value of the old release: a state of the contract's, a share of 12 samples, a number."""
    if name in _STATES:
        return _STATES[name][(i + k) % len(_STATES[name])]
    if name.endswith("_ratio"):
        return (i + k) % 13 / 12
    return 10.0 + i + k / 997


@pytest.mark.parametrize(
    "held", [(10, 11, 12, 13, 14), (12, 13, 14), (14,)], ids=["before-0010", "before-0012", "before-0014"]
)
async def test_a_month_archived_by_an_older_release_restores_into_todays_rows(
    environ: dict[str, str], database_url: str, held: tuple[int, ...]
) -> None:
    await migrate(database_url, skip=set(held))  # 0011 and 0012 expect 0010's shape
    with psycopg.connect(database_url) as conn:
        stats = [n for n, _ in columns(conn, Tables.TELEMETRY_AGGREGATES) if n not in _KEYS]
    old = [
        aggregate_row(
            "METER001",
            OLD.start + timedelta(minutes=i),
            **{n: _value(n, i=i, k=k) for k, n in enumerate(stats)},
        )
        for i in range(ROWS)
    ]
    for i, row in enumerate(old):  # seq (since 0009): a restart inside the first minute
        row["first_at"] += timedelta(seconds=2, milliseconds=i)
        row["seq_first"], row["seq_last"] = (3_000_000_000, 2) if i == 0 else (12 * i, 12 * i + 11)
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, old)
    before = _rows(database_url)
    settings = Settings.from_env(Env(environ))
    store = open_store(settings.storage)
    store.ensure()
    summary = archive_now(settings, store, threading.Event())
    assert [r.rows for r in summary.archived] == [ROWS]
    assert _rows(database_url) == []

    assert await migrate(database_url) == list(held)
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
        if 10 in held:
            assert now["battery_estimated_capacity_last"] == pytest.approx(
                was["battery_estimated_capacity_avg"], rel=REAL_REL
            )
            assert now["battery_alert_threshold_last"] == round(was["battery_alert_threshold_max"])
        if 12 in held:
            for f in BOOL_FIELDS:
                assert now[f"{f.column}_count"] == round(was[f"{f.column}_ratio"] * was["sample_count"])
            for channel in ("import", "solar_output"):
                assert now[f"{channel}_energy_10uwh"] == round(was[f"{channel}_energy_wh"] * 100_000)
        assert now["bucket"] + timedelta(milliseconds=now["first_ms"]) == was["first_at"]
        assert now["bucket"] + timedelta(milliseconds=now["last_ms"]) == was["last_at"]
        if was["seq_first"] == 3_000_000_000:  # its span does not fit: a minute without seq
            assert (now["seq_first"], now["seq_span"]) == (was["seq_first"], None)
        else:
            assert now["seq_first"] + now["seq_span"] == was["seq_last"]
    dropped = set(before[0]) - kept
    assert {"import_current_avg", "battery_soc_min", "first_at", "seq_last"} <= dropped
    if 12 in held:
        assert {"import_current_min", "import_energy_wh", "import_active_ratio"} <= dropped
    if 10 in held:
        assert {"net_grid_import_power_avg", "import_daily_energy_avg", "net_solar_net_daily_min"} <= dropped
