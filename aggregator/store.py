"""PostgreSQL side of a job: advisory lock, watermark, partitions, COPY to staging + one upsert.

Events are written by :func:`enerlink.events.insert_events`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, sql

from enerlink.aggregator import copybin
from enerlink.aggregator.columns import MINUTE_COLUMNS, MINUTE_KEY_COLUMNS, SEQ_COLUMNS, STAT_COLUMNS
from enerlink.db import advisory_lock_id, quote
from enerlink.schemas.wire import Tables
from enerlink.shards import Shard
from enerlink.watermark import MINUTES, advance

Conn = AsyncConnection[tuple[Any, ...]]
STAGING = "_enerlink_agg_staging"
EVENTS_STREAM = "events_stream"  # watermark row: last consumed keys.events entry id


async def _lock_id(conn: Conn, purpose: str) -> int:
    row = await (await conn.execute("select current_schema()")).fetchone()
    return advisory_lock_id(purpose, row[0] if row else None)


async def lock_key(conn: Conn, shard: Shard | None = None) -> int:
    """One advisory lock per schema: aggregators of one deployment take turns, tests don't collide.
    With ``shard`` (one of several), that shard's lock."""
    if shard is None or shard.whole:
        return await _lock_id(conn, "aggregate")
    return await _lock_id(conn, f"aggregate-{shard.index}/{shard.count}")


async def layout_key(conn: Conn, shards: int) -> int:
    """The lock every job of a layout of ``shards`` shards holds shared: a change to another number
    of shards waits until none runs (aggregator/leases.py)."""
    return await _lock_id(conn, f"aggregate-layout-{shards}")


#: A dead client's session (a host gone, a network cut) is closed by PostgreSQL within about 25 s,
#: which frees its locks; by default that takes the operating system's two hours and more.
_KEEPALIVES = (
    "tcp_keepalives_idle = 10",
    "tcp_keepalives_interval = 5",
    "tcp_keepalives_count = 3",
    "tcp_user_timeout = 25000",
)


async def guard(conn: Conn, *, idle_in_transaction_s: float, lock_wait_s: float | None = None) -> None:
    """Have PostgreSQL end this session when its client is gone (keepalives) or stops inside a
    transaction for ``idle_in_transaction_s`` (a frozen process), freeing its locks for the others;
    with ``lock_wait_s``, a statement waits at most that long for a lock."""
    for setting in _KEEPALIVES:
        await conn.execute(f"set {setting}".encode())
    await conn.execute(
        f"set idle_in_transaction_session_timeout = {int(idle_in_transaction_s * 1000)}".encode()
    )
    if lock_wait_s is not None:
        await conn.execute(f"set lock_timeout = {int(lock_wait_s * 1000)}".encode())


Locks = list[tuple[str, int]]


async def lock(conn: Conn, shard: Shard) -> Locks | None:
    """Take the job's advisory locks and return how to release them.

    The whole fleet: its lock, waiting for it (a second process stands by). One of several shards:
    the fleet's lock shared (a recompute from the archive, which takes it alone, waits for every
    shard), its layout's shared and the shard's own, each only if free: None when one is not, and
    the job is tried again shortly, so a shard still in a job elsewhere (its lease given up or
    expired meanwhile) never holds up this process's other shards."""
    whole = await lock_key(conn)
    if shard.whole:
        await conn.execute("select pg_advisory_lock(%s)", (whole,))
        return [("pg_advisory_unlock", whole)]
    wanted = (
        ("pg_try_advisory_lock_shared", "pg_advisory_unlock_shared", whole),
        ("pg_try_advisory_lock_shared", "pg_advisory_unlock_shared", await layout_key(conn, shard.count)),
        ("pg_try_advisory_lock", "pg_advisory_unlock", await lock_key(conn, shard)),
    )
    taken: Locks = []
    for take, release, key in wanted:
        row = await (await conn.execute(f"select {take}(%s)".encode(), (key,))).fetchone()
        if not (row and row[0]):
            await unlock(conn, taken)
            return None
        taken.insert(0, (release, key))
    return taken


async def unlock(conn: Conn, taken: Locks) -> None:
    for function, key in taken:
        await conn.execute(f"select {function}(%s)".encode(), (key,))


async def write_watermark(conn: Conn, minute: datetime, shard: Shard = Shard.WHOLE) -> None:
    """Advance (never move back) the watermark; call inside the minute's transaction. One of
    several shards advances its own row, then the fleet's to the oldest shard's once every shard
    has a row (never ahead of any shard: a row another shard commits meanwhile is only newer)."""
    await advance(conn, shard.row_name(MINUTES), minute)
    if shard.whole:
        return
    table = quote(Tables.AGGREGATOR_WATERMARK)
    names = [Shard(i, shard.count).row_name(MINUTES) for i in range(shard.count)]
    await conn.execute(
        f"insert into {table} as w (name, minute) select %s, min(minute) from {table}"
        " where name = any(%s) having count(*) = %s on conflict (name) do update"
        " set minute = greatest(w.minute, excluded.minute), updated_at = now()".encode(),
        (MINUTES, names, shard.count),
    )


def stream_row(part: int | None) -> str:
    """The watermark row of the events stream: one for one Redis server (``None``), one per part on a
    Redis Cluster."""
    return EVENTS_STREAM if part is None else f"{EVENTS_STREAM}.p{part}"


async def read_position(conn: Conn, name: str = EVENTS_STREAM) -> str:
    cur = await conn.execute(
        f"select position from {quote(Tables.AGGREGATOR_WATERMARK)} where name = %s".encode(),
        (name,),
    )
    row = await cur.fetchone()
    return str(row[0]) if row and row[0] else "0-0"


async def write_position(conn: Conn, position: str, name: str = EVENTS_STREAM) -> None:
    await conn.execute(
        f"insert into {quote(Tables.AGGREGATOR_WATERMARK)} (name, position) values (%s, %s)"
        " on conflict (name) do update set position = excluded.position, updated_at = now()".encode(),
        (name, position),
    )


class Partitions:
    """Creates monthly partitions ahead of time and for every month written; remembers what exists."""

    def __init__(self) -> None:
        self._known: set[tuple[int, int]] = set()

    async def ensure(self, conn: Conn, moments: Iterable[datetime]) -> None:
        months = {(m.astimezone(UTC).year, m.astimezone(UTC).month) for m in moments} - self._known
        for year, month in sorted(months):
            for parent in Tables.MONTHLY_PARTITIONED:  # a 5-minute bucket lies in its minutes' month
                await conn.execute(
                    f"select {quote(Tables.ENSURE_MONTH_PARTITION)}(%s, %s)".encode(),
                    (parent, datetime(year, month, 1, tzinfo=UTC)),
                )
            self._known.add((year, month))

    def forget(self) -> None:
        """After a rolled-back transaction: what it created is not there; ``ensure`` asks again."""
        self._known.clear()

    async def ensure_ahead(self, conn: Conn, now: datetime, months: int = 3) -> None:
        year, month = now.year, now.month
        ahead = []
        for _ in range(months + 1):
            ahead.append(datetime(year, month, 1, tzinfo=UTC))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        await self.ensure(conn, ahead)


async def create_staging(conn: Conn) -> None:
    """A temporary table shaped like the minute table, emptied at each commit."""
    await conn.execute(
        f"create temp table if not exists {STAGING}"
        f" (like {quote(Tables.TELEMETRY_AGGREGATES)}) on commit delete rows".encode()
    )


async def clear_staging(conn: Conn) -> None:
    """Empty the staging table inside a transaction (a batch is written part by part)."""
    await conn.execute(f"delete from {STAGING}".encode())


_PG_TYPES = {
    "text": "text",
    "timestamptz": "timestamptz",
    "integer": "int4",
    "double precision": "float8",
    "real": "float4",
    "bigint": "int8",
    "smallint": "int2",
}
COPY_TYPES: list[str] = (
    [_PG_TYPES[t.split(" not null")[0]] for _, t in MINUTE_KEY_COLUMNS]
    # an enum's binary form is its label's text
    + [_PG_TYPES.get(c.sql_type, "text") for c in STAT_COLUMNS]
    + [_PG_TYPES[t] for _, t in SEQ_COLUMNS]
)


def _copy_binary(table: str) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in MINUTE_COLUMNS)
    return sql.SQL("copy {} ({}) from stdin (format binary)").format(sql.Identifier(table), columns)


async def copy_rows(conn: Conn, rows: Sequence[tuple[Any, ...]], *, table: str = STAGING) -> None:
    """Binary COPY (no float formatting or parsing on either side)."""
    async with conn.cursor().copy(_copy_binary(table)) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            await copy.write_row(row)


async def copy_encoded(conn: Conn, blocks: Sequence[bytes], *, table: str = STAGING) -> None:
    """Binary COPY of rows encoded by :mod:`enerlink.aggregator.copybin` (signature and trailer added
    here)."""
    async with conn.cursor().copy(_copy_binary(table)) as copy:
        await copy.write(copybin.SIGNATURE)
        for block in blocks:
            await copy.write(block)
        await copy.write(copybin.TRAILER)


async def upsert_from_staging(conn: Conn, *, replaces: bool = True) -> None:
    """The staging rows into the minute table; ``replaces=False`` when none has a stored row (the
    caller checked, in this transaction, under the aggregator's lock): a plain insert, without the
    speculative insertion an upsert does for each row."""
    cols = ", ".join(quote(c) for c in MINUTE_COLUMNS)
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in MINUTE_COLUMNS[2:])
    upsert = f" on conflict (meter_id, bucket) do update set {sets}" if replaces else ""
    table = quote(Tables.TELEMETRY_AGGREGATES)
    statement = f"insert into {table} ({cols}) select {cols} from {STAGING}{upsert}".encode()
    await conn.execute(statement, prepare=True)  # once per part: parsed and planned once


async def stored_counts(
    conn: Conn, pairs: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """For the (meter, minute in epoch ms) pairs that have a minute row: its ``sample_count`` and the
    ``last_at`` (epoch ms) of the meter's row before it (its first reading's counter baseline), if any."""
    if not pairs:
        return {}
    table = quote(Tables.TELEMETRY_AGGREGATES)
    query = (
        f"select t.meter_id, t.bucket, t.sample_count, (select {_LAST_AT_B} from {table} b"
        "   where b.meter_id = t.meter_id and b.bucket < t.bucket order by b.bucket desc limit 1)"
        f" from {table} t"
        " join unnest(%s::text[], %s::timestamptz[]) as p(meter_id, bucket) using (meter_id, bucket)"
    )
    meters = [m for m, _ in pairs]
    buckets = [datetime.fromtimestamp(ms / 1000, UTC) for _, ms in pairs]
    cur = await conn.execute(query, (meters, buckets))
    return {
        (m, _ms(b)): (int(n), None if before is None else _ms(before))
        for m, b, n, before in await cur.fetchall()
    }


_LAST_AT_B = Tables.minute_time_sql("last_at", "b")


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
