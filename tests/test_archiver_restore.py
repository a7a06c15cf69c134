"""``enerlink archive --restore`` given damaged or missing archive objects (moto's S3 server through
the real minio client, real PostgreSQL): each is refused with a message naming the object and the
problem, counted by problem, and leaves the database exactly as it was (one transaction)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from minio import Minio
from prometheus_client import CollectorRegistry
from psycopg import sql

from enerlink.archiver.months import Month
from enerlink.archiver.restore import RestoreError
from enerlink.archiver.service import run
from enerlink.archiver.settings import Settings
from enerlink.config import Env
from enerlink.db import migrate
from enerlink.schemas.wire import Buckets, Tables
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.services import ServiceProcess

NOW = datetime.now(UTC)
OLD = Month.of(NOW - timedelta(days=420))
RECENT = (NOW - timedelta(days=3)).replace(second=0, microsecond=0)
AGG_KEY = Buckets.month_object(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
EVENTS_KEY = Buckets.month_object(Tables.EVENTS, OLD.year, OLD.month)
ROWS = 40


class Archive:
    """The test's bucket and database after one month was archived."""

    def __init__(self, environ: dict[str, str], url: str) -> None:
        self.environ = environ
        self.url = url
        self.bucket = environ["ENERLINK_MINIO_BUCKET"]
        self.client = Minio(
            environ["ENERLINK_MINIO_ENDPOINT"],
            access_key=environ["ENERLINK_MINIO_ACCESS_KEY"],
            secret_key=environ["ENERLINK_MINIO_SECRET_KEY"],
            secure=False,
        )
        self.settings = Settings.from_env(Env(environ))

    def get(self, key: str = AGG_KEY) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def put(self, data: bytes, key: str = AGG_KEY) -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))

    def set_manifest(self, table: str, **values: Any) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(
                sql.SQL("update {} set {} where table_name = %s and year = %s and month = %s").format(
                    sql.Identifier(Tables.ARCHIVE_MANIFEST),
                    sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values),
                ),
                [*values.values(), table, OLD.year, OLD.month],
            )

    def match_manifest(self, data: bytes, table: str = Tables.TELEMETRY_AGGREGATES) -> None:
        """Make the manifest describe ``data`` (an object damaged before its manifest row was written,
        or a hand-made archive), so that the content checks themselves are exercised."""
        self.set_manifest(table, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    def snapshot(self) -> dict[str, Any]:
        """Everything the restore could touch: both tables, the manifest, the month's partition."""
        with psycopg.connect(self.url) as conn:
            out: dict[str, Any] = {}
            for table in (Tables.TELEMETRY_AGGREGATES, Tables.EVENTS, Tables.ARCHIVE_MANIFEST):
                out[table] = conn.execute(
                    sql.SQL("select * from {} order by 1, 2, 3").format(sql.Identifier(table))
                ).fetchall()
            part = Tables.month_partition(Tables.TELEMETRY_AGGREGATES, OLD.year, OLD.month)
            out["partition"] = conn.execute("select to_regclass(%s)", (part,)).fetchone()
        return out


def _csv_gz(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return gzip.compress(out.getvalue().encode(), mtime=0)


def _table(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(gzip.decompress(data).decode())))


@pytest.fixture
async def archive(s3_environ: dict[str, str], database_url: str) -> Archive:
    await migrate(database_url)
    rows = [
        aggregate_row("METER001", OLD.start + timedelta(minutes=i), battery_soc_avg=50.0 + i)
        for i in range(ROWS)
    ]
    rows.append(aggregate_row("METER001", RECENT, battery_soc_avg=99.0))
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, rows)
    event = {"meter_id": "METER001", "kind": "meter_offline", "severity": "warning", "details": "{}"}
    insert_rows(
        database_url, Tables.EVENTS, [{**event, "at": OLD.start + timedelta(days=2)}], time_column="at"
    )
    result = Archive(s3_environ, database_url)
    summary = await run(result.settings, once=True)
    assert summary is not None and sorted(r.rows for r in summary.archived) == [1, ROWS]
    return result


def _truncate(a: Archive) -> None:
    a.put(a.get()[: len(a.get()) // 2])


def _flip_a_byte(a: Archive) -> None:
    data = bytearray(a.get())
    data[len(data) // 2] ^= 0xFF
    a.put(bytes(data))


def _truncate_matched(a: Archive) -> None:
    data = a.get()[:-20]
    a.put(data)
    a.match_manifest(data)


def _plain_csv(a: Archive) -> None:
    data = gzip.decompress(a.get())
    a.put(data)
    a.match_manifest(data)


def _empty(a: Archive) -> None:
    a.put(b"")
    a.match_manifest(b"")


def _rewrite(edit: Callable[[list[list[str]]], None]) -> Callable[[Archive], None]:
    def damage(a: Archive) -> None:
        rows = _table(a.get())
        edit(rows)
        data = _csv_gz(rows)
        a.put(data)
        a.match_manifest(data)

    return damage


def _rename_column(rows: list[list[str]]) -> None:
    rows[0][rows[0].index("battery_soc_avg")] = "battery_charge"


def _extra_field(rows: list[list[str]]) -> None:
    rows[5].append("42")


def _bad_value(rows: list[list[str]]) -> None:
    rows[7][rows[0].index("battery_soc_avg")] = "fifty"


def _wrong_count(a: Archive) -> None:
    a.set_manifest(Tables.TELEMETRY_AGGREGATES, row_count=ROWS + 1)


def _missing(a: Archive) -> None:
    a.client.remove_object(a.bucket, AGG_KEY)


def _row_already_there(a: Archive) -> None:
    """The object is fine, but a row of the month is back in PostgreSQL (written after archiving)."""
    insert_rows(
        a.url, Tables.TELEMETRY_AGGREGATES, [aggregate_row("METER001", OLD.start + timedelta(minutes=3))]
    )


def _events_damaged(a: Archive) -> None:
    """The minute table's object is fine; the events object (restored second) is not."""
    data = a.get(EVENTS_KEY)[:-8]
    a.put(data, EVENTS_KEY)
    a.match_manifest(data, Tables.EVENTS)


CASES: dict[str, tuple[Callable[[Archive], None], str, str]] = {
    # name: (damage, problem, words in the message)
    "missing object": (_missing, "missing_object", "object is missing"),
    "truncated object": (_truncate, "size_mismatch", "truncated or replaced"),
    "a byte flipped": (_flip_a_byte, "sha256_mismatch", "does not match the manifest"),
    "truncated gzip": (_truncate_matched, "truncated", "truncated gzip"),
    "not gzip": (_plain_csv, "not_gzip", "not a gzip file"),
    "empty object": (_empty, "truncated", "empty"),
    "wrong header": (_rewrite(_rename_column), "bad_header", "battery_charge"),
    "wrong column count": (
        _rewrite(_extra_field),
        "bad_row",
        "extra data after last expected column (CSV line 6",
    ),
    "bad value": (_rewrite(_bad_value), "bad_value", "CSV line 8, column battery_soc_avg"),
    "row count": (_wrong_count, "row_count", f"the manifest says {ROWS + 1}"),
    "row already in the table": (_row_already_there, "conflict", "duplicate key value"),
    "second table damaged": (_events_damaged, "truncated", EVENTS_KEY),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_damaged_archive_is_refused_and_nothing_changes(archive: Archive, case: str) -> None:
    damage, problem, words = CASES[case]
    original = {key: archive.get(key) for key in (AGG_KEY, EVENTS_KEY)}
    damage(archive)
    before = archive.snapshot()
    untouched = EVENTS_KEY if case != "second table damaged" else AGG_KEY
    registry = CollectorRegistry()

    with pytest.raises(RestoreError) as refused:
        await run(archive.settings, restore=OLD, registry=registry)

    assert refused.value.problem == problem
    message = str(refused.value)
    assert words in message, message
    key = EVENTS_KEY if case == "second table damaged" else AGG_KEY
    assert key in message and str(OLD) in message  # names the object and the month
    assert registry.get_sample_value("enerlink_archive_restore_failures_total", {"problem": problem}) == 1
    assert archive.snapshot() == before  # rows, events, manifest, and no partition created
    assert archive.get(untouched) == original[untouched]  # the other object was not disturbed

    # put the good object and its manifest back: the restore now works (nothing was left half-done)
    for k, data in original.items():
        archive.put(data, k)
    for table, k in ((Tables.TELEMETRY_AGGREGATES, AGG_KEY), (Tables.EVENTS, EVENTS_KEY)):
        archive.match_manifest(original[k], table)
    archive.set_manifest(Tables.TELEMETRY_AGGREGATES, row_count=ROWS)
    with psycopg.connect(archive.url) as conn:  # the stray row of the conflict case
        conn.execute(
            sql.SQL("delete from {} where bucket >= %s and bucket < %s").format(
                sql.Identifier(Tables.TELEMETRY_AGGREGATES)
            ),
            (OLD.start, OLD.end),
        )
    await run(archive.settings, restore=OLD)
    after = archive.snapshot()
    assert len(after[Tables.TELEMETRY_AGGREGATES]) == ROWS + 1 and len(after[Tables.EVENTS]) == 1
    assert after[Tables.ARCHIVE_MANIFEST] == []


async def test_cli_restore_of_a_damaged_object_exits_non_zero(archive: Archive) -> None:
    _flip_a_byte(archive)
    before = archive.snapshot()
    proc = ServiceProcess(args=["archive", "--restore", str(OLD)], env=archive.environ).start()
    assert proc.process is not None
    assert proc.process.wait(timeout=60) == 2, proc.output()
    output = proc.output()
    assert f"restore {OLD} refused (sha256_mismatch)" in output and AGG_KEY in output
    assert "the database is unchanged" in output and "Traceback" not in output
    assert archive.snapshot() == before
