"""The archiver against real PostgreSQL and moto's S3 server through the real minio client."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from minio import Minio
from psycopg import sql

from enerlink.archiver.job import ArchiveError, Hooks
from enerlink.archiver.months import ARCHIVED_TABLES, Month, months_due
from enerlink.archiver.service import _take_turn, run
from enerlink.archiver.settings import Settings
from enerlink.config import ConfigError, Env
from enerlink.db import migrate
from enerlink.schemas.wire import Buckets, Tables
from tests.support.aggdata import aggregate_row, fill_month, insert_rows
from tests.support.services import ServiceProcess

NOW = datetime.now(UTC)
OLD = Month.of(NOW - timedelta(days=420))  # a whole month older than the 365-day retention
RECENT = NOW - timedelta(days=7)


def _minio(environ: dict[str, str]) -> Minio:
    return Minio(
        environ["ENERLINK_MINIO_ENDPOINT"],
        access_key=environ["ENERLINK_MINIO_ACCESS_KEY"],
        secret_key=environ["ENERLINK_MINIO_SECRET_KEY"],
        secure=False,
    )


def _object_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(gzip.decompress(data).decode())))


def _db_rows(url: str, table: str = Tables.TELEMETRY_AGGREGATES) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(sql.SQL("select * from {} order by 1, 2").format(sql.Identifier(table))).fetchall()


def _manifest(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(
            sql.SQL("select * from {} order by table_name, year, month").format(
                sql.Identifier(Tables.ARCHIVE_MANIFEST)
            )
        ).fetchall()


def _same(db: dict[str, Any], archived: dict[str, str]) -> None:
    assert set(archived) == set(db)
    for name, value in db.items():
        text = archived[name]
        if value is None:
            assert text == "", name
        elif isinstance(value, datetime):
            assert text.endswith("Z"), text
            assert datetime.fromisoformat(text) == value, name
        elif isinstance(value, float):
            assert float(text) == value, name
        else:
            assert text == str(value), name


async def _seed(url: str) -> list[dict[str, Any]]:
    await migrate(url)
    old = [
        aggregate_row(
            meter, OLD.start + timedelta(minutes=i), battery_soc_avg=50.0 + i / 3, import_power_max=480.2
        )
        for meter in ("METER001", "METER.2")
        for i in range(30)
    ]
    old.append(aggregate_row("METER001", OLD.end - timedelta(minutes=1), net_grid_net_power_min=-480.2))
    insert_rows(url, Tables.TELEMETRY_AGGREGATES, old)
    insert_rows(
        url, Tables.TELEMETRY_AGGREGATES, [aggregate_row("METER001", RECENT.replace(second=0, microsecond=0))]
    )
    return [r for r in _db_rows(url) if r["bucket"] < OLD.end]


async def test_archive_month_to_s3_verified_and_dropped(
    s3_environ: dict[str, str], database_url: str
) -> None:
    expected = await _seed(database_url)
    settings = Settings.from_env(Env(s3_environ))
    summary = await run(settings, once=True)

    assert summary is not None and not summary.failed
    assert [(r.table, r.month, r.rows) for r in summary.archived] == [(Tables.TELEMETRY_AGGREGATES, OLD, 61)]
    key = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
    client = _minio(s3_environ)
    response = client.get_object(s3_environ["ENERLINK_MINIO_BUCKET"], key)
    data = response.read()
    response.close()
    archived = _object_rows(data)
    assert len(archived) == len(expected) == 61
    by_key = {(r["meter_id"], r["bucket"]): r for r in archived}
    for row in expected:
        _same(row, by_key[(row["meter_id"], row["bucket"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"))])

    stat = client.stat_object(s3_environ["ENERLINK_MINIO_BUCKET"], key)
    meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
    assert meta["x-amz-meta-row-count"] == "61"
    assert meta["x-amz-meta-first-at"].startswith(OLD.start.strftime("%Y-%m-%dT%H:%M"))
    (entry,) = _manifest(database_url)
    assert (entry["table_name"], entry["year"], entry["month"]) == (
        Tables.TELEMETRY_AGGREGATES,
        OLD.year,
        OLD.month,
    )
    assert entry["row_count"] == 61 and entry["size_bytes"] == stat.size == len(data)
    assert meta["x-amz-meta-sha256"] == entry["sha256"]
    assert entry["first_at"] == OLD.start and entry["last_at"] == OLD.end - timedelta(minutes=1)

    remaining = _db_rows(database_url)
    assert [r["bucket"] for r in remaining] == [RECENT.replace(second=0, microsecond=0)]
    with psycopg.connect(database_url) as conn:
        part = Tables.month_partition(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
        assert conn.execute("select to_regclass(%s)", (part,)).fetchone() == (None,)

    again = await run(settings, once=True)  # a re-run is a no-op
    assert again is not None and again.archived == [] and again.failed == []
    assert len(_manifest(database_url)) == 1


async def test_crash_between_upload_and_drop_rerun_finishes(
    s3_environ: dict[str, str], database_url: str
) -> None:
    expected = await _seed(database_url)
    settings = Settings.from_env(Env(s3_environ))

    def crash(table: str, month: Month) -> None:
        raise RuntimeError(f"injected crash after verifying {table} {month}")

    summary = await run(settings, once=True, hooks=Hooks(after_verify=crash))
    assert summary is not None and summary.archived == []
    assert summary.failed == [f"{Tables.TELEMETRY_AGGREGATES} {OLD}"]
    # the verified object is there, but the rows were not touched and nothing is in the manifest
    key = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
    assert _minio(s3_environ).stat_object(s3_environ["ENERLINK_MINIO_BUCKET"], key).size > 0
    assert len(_db_rows(database_url)) == len(expected) + 1
    assert _manifest(database_url) == []

    summary = await run(settings, once=True)
    assert summary is not None and [r.rows for r in summary.archived] == [61]
    response = _minio(s3_environ).get_object(s3_environ["ENERLINK_MINIO_BUCKET"], key)
    assert len(_object_rows(response.read())) == 61  # not doubled
    response.close()
    assert len(_manifest(database_url)) == 1
    assert len(_db_rows(database_url)) == 1


async def test_a_row_rewritten_during_the_export_is_not_dropped(
    s3_environ: dict[str, str], database_url: str
) -> None:
    """A late minute re-aggregated (an update: the row count stays the same) while the month is being
    uploaded: the archive holds the old value, so the rows must stay until a run archives the new one."""
    await migrate(database_url)
    rows = [
        aggregate_row("METER001", OLD.start + timedelta(minutes=i), import_energy_10uwh=100)
        for i in range(10)
    ]
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, rows)
    target = OLD.start + timedelta(minutes=9)
    settings = Settings.from_env(Env(s3_environ))

    def reaggregate(raw_bytes: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("update {} set import_energy_10uwh = 999999 where bucket = %s").format(
                    sql.Identifier(Tables.TELEMETRY_AGGREGATES)
                ),
                (target,),
            )

    summary = await run(settings, once=True, hooks=Hooks(on_chunk=reaggregate))
    assert summary is not None and summary.archived == []
    assert summary.failed == [f"{Tables.TELEMETRY_AGGREGATES} {OLD}"]
    assert len(_db_rows(database_url)) == 10 and _manifest(database_url) == []

    summary = await run(settings, once=True)  # nothing writes now: the new value is archived
    assert summary is not None and [r.rows for r in summary.archived] == [10]
    key = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
    response = _minio(s3_environ).get_object(s3_environ["ENERLINK_MINIO_BUCKET"], key)
    archived = {r["bucket"][:16]: r["import_energy_10uwh"] for r in _object_rows(response.read())}
    response.close()
    assert sorted(archived.values()) == ["100"] * 9 + ["999999"]
    assert _db_rows(database_url) == []


async def test_archive_runs_and_restores_of_one_database_take_turns(
    environ: dict[str, str], database_url: str
) -> None:
    """A month run while another one (say the nightly run while an operator runs ``--once``) holds the
    database's turn skips; a restore then says the database is busy."""
    await _seed(database_url)
    settings = Settings.from_env(Env(environ))
    with psycopg.connect(database_url, autocommit=True) as other:
        assert _take_turn(other)
        summary = await run(settings, once=True)
        assert summary is not None and summary.skipped and summary.archived == [] and not summary.failed
        assert _manifest(database_url) == [] and len(_db_rows(database_url)) == 62
    summary = await run(settings, once=True)  # its connection closed: the turn is free
    assert summary is not None and [r.rows for r in summary.archived] == [61]
    with psycopg.connect(database_url, autocommit=True) as other:
        assert _take_turn(other)
        with pytest.raises(ArchiveError, match="try again"):
            await run(settings, restore=OLD)
    assert len(_db_rows(database_url)) == 1


async def test_failed_upload_leaves_rows_and_no_object(s3_environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    rows = fill_month(database_url, start=OLD.start, rows=40_000)  # ~10 MB gzip: a real multipart upload
    settings = Settings.from_env(Env(s3_environ))

    def cut(raw_bytes: int) -> None:
        if raw_bytes > 20_000_000:  # after the first 5 MiB parts went up
            raise ConnectionResetError("injected: connection lost mid-upload")

    summary = await run(settings, once=True, hooks=Hooks(on_chunk=cut))
    assert summary is not None and summary.archived == [] and len(summary.failed) == 1
    key = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
    names = [
        o.object_name
        for o in _minio(s3_environ).list_objects(s3_environ["ENERLINK_MINIO_BUCKET"], recursive=True)
    ]
    assert key not in names  # the multipart upload was aborted
    assert len(_db_rows(database_url)) == rows
    assert _manifest(database_url) == []

    summary = await run(settings, once=True)
    assert summary is not None and [r.rows for r in summary.archived] == [rows]
    assert _db_rows(database_url) == []


async def test_local_folder_backend_and_restore_round_trip(
    environ: dict[str, str], database_url: str
) -> None:
    await _seed(database_url)
    before = _db_rows(database_url)
    settings = Settings.from_env(Env(environ))
    assert settings.storage.backend == "local"
    first = await run(settings, once=True)
    assert first is not None and [r.rows for r in first.archived] == [61]
    path = Path(environ["ENERLINK_ARCHIVE_DIR"]) / Buckets.month_object(
        Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month
    )
    assert len(_object_rows(path.read_bytes())) == 61
    assert '"row-count": "61"' in path.with_name(path.name + ".meta.json").read_text()
    assert len(_db_rows(database_url)) == 1

    await run(settings, restore=OLD)
    assert _db_rows(database_url) == before  # every value back, exactly
    assert _manifest(database_url) == []  # live data again

    second = await run(settings, once=True)  # archived again: the same object, byte for byte
    assert second is not None and second.archived[0].sha256 == first.archived[0].sha256
    with pytest.raises(ArchiveError):
        await run(settings, restore=Month(2001, 1))


async def test_events_of_archived_months_are_archived(environ: dict[str, str], database_url: str) -> None:
    await migrate(database_url)
    with psycopg.connect(database_url) as conn:
        if conn.execute("select to_regclass(%s)", (Tables.EVENTS,)).fetchone() == (None,):
            pytest.skip("the events table is not created by the migrations yet")
    old_at, new_at = OLD.start + timedelta(days=3), RECENT
    insert_rows(
        database_url,
        Tables.EVENTS,
        [
            {
                "meter_id": "METER001",
                "at": old_at,
                "kind": "offline",
                "severity": "warning",
                "details": '{"a": 1}',
            },
            {"meter_id": "METER001", "at": new_at, "kind": "online", "severity": "info", "details": "{}"},
        ],
        time_column="at",
    )
    settings = Settings.from_env(Env(environ))
    summary = await run(settings, once=True)
    assert summary is not None and [(r.table, r.rows) for r in summary.archived] == [(Tables.EVENTS, 1)]
    assert [r["at"] for r in _db_rows(database_url, Tables.EVENTS)] == [new_at]
    await run(settings, restore=OLD)
    assert len(_db_rows(database_url, Tables.EVENTS)) == 2


async def test_months_due_respects_retention(database_url: str) -> None:
    await migrate(database_url)
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    for month in (Month(2025, 10), Month(2025, 11), Month(2025, 12)):
        insert_rows(
            database_url, Tables.TELEMETRY_AGGREGATES, [aggregate_row("M1", month.start + timedelta(hours=1))]
        )
    with psycopg.connect(database_url) as conn:
        table = ARCHIVED_TABLES[0]
        # 365 days before 2026-11-23 12:00 is 2025-11-23: October 2025 is whole and older, November is not
        assert months_due(conn, table, before=now - timedelta(days=365)) == [Month(2025, 10)]
        assert months_due(conn, table, before=datetime(2025, 12, 1, tzinfo=UTC)) == [
            Month(2025, 10),
            Month(2025, 11),
        ]


def test_settings_defaults_and_bad_cron(environ: dict[str, str]) -> None:
    settings = Settings.from_env(Env(environ))
    assert (settings.retention_days, settings.cron, settings.storage.backend) == (365, "0 2 * * *", "local")
    fire = settings.trigger().get_next_fire_time(None, datetime(2026, 1, 1, 3, tzinfo=UTC))
    assert fire is not None and (fire.hour, fire.day) == (2, 2)
    with pytest.raises(ConfigError):
        Settings.from_env(Env({**environ, "ENERLINK_ARCHIVE_CRON": "every night"}))
    with pytest.raises(ValueError):
        Month.parse("2025-13")


async def test_cli_once_and_restore(environ: dict[str, str], database_url: str) -> None:
    await _seed(database_url)
    proc = ServiceProcess(args=["archive", "--once"], env=environ).start()
    assert proc.process is not None and proc.process.wait(timeout=60) == 0, proc.output()
    assert "archive run: 1 months, 61 rows archived, 0 failed" in proc.output()
    restore = ServiceProcess(args=["archive", "--restore", str(OLD)], env=environ).start()
    assert restore.process is not None and restore.process.wait(timeout=60) == 0, restore.output()
    assert len(_db_rows(database_url)) == 62


async def test_kill_9_mid_upload_then_rerun(environ: dict[str, str], database_url: str) -> None:
    """A real crash: ``enerlink archive --once`` killed while writing the object."""
    await migrate(database_url)
    rows = fill_month(database_url, start=OLD.start, rows=20_000)
    path = Path(environ["ENERLINK_ARCHIVE_DIR"]) / Buckets.month_object(
        Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month
    )
    proc = ServiceProcess(args=["archive", "--once"], env=environ).start()
    assert proc.process is not None
    deadline = time.monotonic() + 60
    while not list(path.parent.glob(f".{path.name}.*.tmp")):
        assert proc.process.poll() is None and time.monotonic() < deadline, proc.output()
        await asyncio.sleep(0.01)
    proc.kill()
    assert not path.exists() and _manifest(database_url) == []
    assert len(_db_rows(database_url)) == rows

    summary = await run(Settings.from_env(Env(environ)), once=True)
    assert summary is not None and [r.rows for r in summary.archived] == [rows]
    assert len(_object_rows(path.read_bytes())) == rows
    assert list(path.parent.glob(".*.tmp")) == []  # the crashed writer's temporary file is gone
    assert _db_rows(database_url) == []
