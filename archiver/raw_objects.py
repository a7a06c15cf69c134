"""Raw-readings objects: writing one verified, recording it, finding and reading them back.

An object is written whole (``ObjectStore.put_stream``), its row count and sha256 attached as
metadata, then read back and checked against what was written (``enerlink.archiver.job.verify_object``)
before its manifest row is inserted. Readers trust only objects listed in the manifest.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from enerlink.archiver.job import schema_version, verify_object
from enerlink.archiver.months import Conn
from enerlink.archiver.raw_format import CONTENT_TYPE, concat, read_parquet, to_messages
from enerlink.archiver.storage import ObjectStore
from enerlink.schemas.wire import Buckets, Tables


@dataclass(frozen=True, slots=True)
class RawObject:
    """A written and verified object, not yet recorded."""

    day: date
    group: int
    hour: int
    part: int
    key: str
    rows: int
    size: int
    sha256: str
    first_at: datetime | None
    last_at: datetime | None
    meters: list[str]


def put_verified(
    store: ObjectStore, *, day: date, group: int, hour: int, part: int, table: pa.Table, data: bytes
) -> RawObject:
    """Write ``data`` (the Parquet bytes of ``table``) and check what the store holds."""
    key = Buckets.raw_object(day.isoformat(), group, hour, part)
    digest = hashlib.sha256(data).hexdigest()
    store.put_stream(key, io.BytesIO(data), content_type=CONTENT_TYPE)
    times = table.column("time")
    first = pa.compute.min(times).as_py() if table.num_rows else None
    last = pa.compute.max(times).as_py() if table.num_rows else None
    store.set_metadata(
        key,
        {"row-count": str(table.num_rows), "sha256": digest, "day": day.isoformat(), "group": str(group)},
        content_type=CONTENT_TYPE,
    )
    verify_object(store, key, size=len(data), sha256=digest, rows=table.num_rows)
    meters = sorted(set(table.column("meter_id").to_pylist()))
    return RawObject(day, group, hour, part, key, table.num_rows, len(data), digest, first, last, meters)


def record(conn: Conn, store: ObjectStore, objects: list[RawObject]) -> None:
    """Manifest rows of verified objects (inside the caller's transaction)."""
    version = schema_version(conn)
    for obj in objects:
        conn.execute(
            sql.SQL(
                "insert into {} (day, grp, hour, part, object_key, backend, location, row_count,"
                " size_bytes, sha256, first_at, last_at, meters, schema_version)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(sql.Identifier(Tables.RAW_MANIFEST)),
            (
                obj.day,
                obj.group,
                obj.hour,
                obj.part,
                obj.key,
                store.backend,
                store.location(obj.key),
                obj.rows,
                obj.size,
                obj.sha256,
                obj.first_at,
                obj.last_at,
                obj.meters,
                version,
            ),
        )


def manifest(
    conn: Conn, *, day: date, group: int | None = None, hour: int | None = None
) -> list[dict[str, Any]]:
    """Manifest rows of a day (optionally one group, one hour), by group, hour, part."""
    where = [sql.SQL("day = %s")]
    params: list[Any] = [day]
    if group is not None:
        where.append(sql.SQL("grp = %s"))
        params.append(group)
    if hour is not None:
        where.append(sql.SQL("hour = %s"))
        params.append(hour)
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        sql.SQL("select * from {} where {} order by grp, hour, part").format(
            sql.Identifier(Tables.RAW_MANIFEST), sql.SQL(" and ").join(where)
        ),
        params,
    ).fetchall()


def load(store: ObjectStore, row: dict[str, Any]) -> pa.Table:
    """One listed object, checked against its manifest row (sha256 and row count)."""
    data = b"".join(store.iter_chunks(str(row["object_key"])))
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise ValueError(f"{row['object_key']}: sha256 differs from the manifest")
    table = read_parquet(data)
    if table.num_rows != row["row_count"]:
        raise ValueError(f"{row['object_key']}: {table.num_rows} rows, the manifest says {row['row_count']}")
    return table


def meter_day(store: ObjectStore, rows: list[dict[str, Any]], meter_id: str) -> pa.Table:
    """One meter's readings from a day's manifest rows (those of its group), sorted."""
    group = Buckets.raw_group(meter_id)
    tables = []
    for row in rows:
        if row["grp"] == group and meter_id in row["meters"]:
            table = load(store, row)
            tables.append(table.filter(pa.compute.equal(table.column("meter_id"), meter_id)))
    return concat(tables)


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def day_readings(conn: Conn, store: ObjectStore, day: date) -> list[tuple[str, int, bytes, bool]]:
    """Every archived reading of a UTC day: (meter_id, epoch ms, message JSON, re-sent), sorted."""
    table = concat([load(store, row) for row in manifest(conn, day=day)])
    resent = table.column("resent").to_pylist()
    return [
        (meter, ms, message, bool(flag))
        for (meter, ms, message), flag in zip(to_messages(table), resent, strict=True)
    ]


def last_readings(conn: Conn, store: ObjectStore, day: date) -> dict[str, bytes]:
    """Each meter's last archived reading of ``day`` (message JSON): the baselines of the next day."""
    last: dict[str, bytes] = {}
    for meter, _, message, _ in day_readings(conn, store, day):
        last[meter] = message  # sorted by time: the last one wins
    return last
