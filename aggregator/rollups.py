"""5-minute, hourly and daily rollups kept in step with the minute rows, like continuous aggregates.

The 5-minute level (the view ``telemetry_aggregates_5m``) is brought up to date after each upsert of
minute rows (the staging table holds exactly the rows just written), in the same transaction; the
hourly and daily levels are views over folded tables (aggregator/fold.py), which take the 5-minute rows
a fifth of the fleet at a time (:func:`fold_minute`), so a minute's job writes one rollup row per
meter, not three:

* minute rows that are new (the common case: the minute just closed, catch-up, a backfilled minute
  never seen before) are *merged* into their 5-minute row: the staging rows are grouped by bucket
  and combined with the stored row (counts added, averages re-weighted, min/max, energies summed,
  the ``_last`` values of whichever is later). This reads one row per bucket instead of every
  minute of it, which keeps the per-minute cost flat. A new row inside its meter's folded range
  (a backfill of an hour already folded) is merged into the folded hourly and daily rows too;
* for a meter any of whose minute rows *replace* a stored one (re-aggregation after late data), its
  buckets are recomputed in full, each level from the level below: 5 min from minutes, then, for
  rows inside the folded range, the folded hour from its folded 5-minute rows and the local day
  (``ENERLINK_TIMEZONE``) from the folded hours inside it plus the folded 5-minute rows of partial
  hours at its edges (zones with :30 / :45 offsets).

The 5-minute rows are in two tables (migration 0011): the open buckets' (merged every minute) and the
complete buckets' (each row written once): each minute pass first moves the buckets complete before
its minute (:func:`fold_minute`). A bucket is in one of them, never both: a merge or a recomputation
writes into the table that holds the bucket (the open one if neither does).

The views give the same rows as computing the buckets from the minute rows in SQL (tested).

Column meanings over a bucket: ``sample_count`` summed, ``first_at`` min, ``last_at`` max,
``*_avg`` sample-weighted means, ``*_min``/``*_max`` min/max, ``*_count`` and ``*_energy_10uwh`` summed,
``*_last`` the value of the bucket's last minute.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from psycopg import AsyncConnection

from enerlink.aggregator import fold
from enerlink.aggregator.columns import ALL_COLUMNS, STAT_COLUMNS
from enerlink.aggregator.compute import ms_to_dt
from enerlink.db import quote
from enerlink.schemas.wire import Tables
from enerlink.shards import Shard
from enerlink.watermark import advance, read_named

_EPOCH = "timestamptz '1970-01-01 00:00:00+00'"


_LAST = [c.name for c in STAT_COLUMNS if c.stat == "last"]
_FULL_5M = "_enerlink_agg_full_5m"  # recomputed 5-minute rows, before they go to their table
#: Tables whose counts are smallint (as the minute rows'): sums saturate at its largest value, as the
#: minute rows' counts do (a meter sending over 109 readings a second for five minutes), instead of
#: failing every job with "smallint out of range".
_SMALLINT_COUNTS = frozenset({Tables.TELEMETRY_5M_OPEN, Tables.TELEMETRY_5M_CLOSED, _FULL_5M})


def _count_sum(expr: str, target: str) -> str:
    if target not in _SMALLINT_COUNTS:
        return expr
    return f"(case when {expr} > 32767 then 32767 else {expr} end)"  # null stays null


def _aggregate(name: str, target: str) -> str:
    col = next(c for c in STAT_COLUMNS if c.name == name)
    c = f"p.{quote(name)}"
    if col.stat == "avg":  # weighted in float8, stored in the column's type
        return f"sum({c}::float8 * p.sample_count) / nullif(sum(p.sample_count), 0)"
    if col.stat == "count":
        return _count_sum(f"sum({c})", target)
    if col.stat == "energy":
        return f"sum({c})"
    return f"{col.stat}({c})"  # min / max


def _rollup_sql(target: str, parts: str, *, merge: bool = False) -> str:
    """Upsert ``target`` from ``parts`` (rows meter_id, b = target bucket, bucket, statistics...):
    aggregates by group, and the ``_last`` columns from each group's latest row (one sort)."""
    aggregated = [n for n in ALL_COLUMNS[5:] if n not in _LAST]
    agg_list = ",\n    ".join(f"{_aggregate(n, target)} as {quote(n)}" for n in aggregated)
    last_list = ", ".join(f"p.{quote(n)}" for n in _LAST)
    out = []
    for n in ALL_COLUMNS[2:]:
        out.append(f"l.{quote(n)}" if n in _LAST else f"a.{quote(n)}")
    return f"""{_insert(target)}
with parts as ({parts}),
agg as (
  select p.meter_id, p.b, {_count_sum("sum(p.sample_count)::int", target)} as sample_count,
    min(p.first_at) as first_at,
    max(p.last_at) as last_at,
    {agg_list}
  from parts p group by p.meter_id, p.b
),
last as (
  select distinct on (p.meter_id, p.b) p.meter_id, p.b, {last_list}
  from parts p order by p.meter_id, p.b, p.bucket desc
)
select a.meter_id, a.b, {", ".join(out)}
from agg a join last l on l.meter_id = a.meter_id and l.b = a.b
{_merge_tail(target) if merge else _upsert_tail()}"""


def _upsert_tail() -> str:
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in ALL_COLUMNS[2:])
    return f"on conflict (meter_id, bucket) do update set {sets}"


def _merged(name: str, target: str) -> str:
    """``name`` of the stored row ``r`` combined with the new part ``excluded`` of the same bucket."""
    c, new = f"r.{quote(name)}", f"excluded.{quote(name)}"
    if name == "sample_count":
        return _count_sum(f"{c}::int + {new}", target)
    if name == "first_at":
        return f"least({c}, {new})"
    if name == "last_at":
        return f"greatest({c}, {new})"
    col = next(x for x in STAT_COLUMNS if x.name == name)
    if col.stat == "avg":
        n, m = "r.sample_count", "excluded.sample_count"
        return f"({c}::float8 * {n} + {new}::float8 * {m}) / nullif({n}::int + {m}, 0)"
    if col.stat == "count":
        return f"coalesce({_count_sum(f'{c}::int + {new}', target)}, {c}, {new})"
    if col.stat == "energy":
        return f"coalesce({c} + {new}, {c}, {new})"
    if col.stat == "last":  # minutes never overlap: the later last_at is the later minute
        return f"case when excluded.last_at >= r.last_at then {new} else {c} end"
    return f"{'least' if col.stat == 'min' else 'greatest'}({c}, {new})"


def _merge_tail(target: str) -> str:
    sets = ", ".join(f"{quote(c)} = {_merged(c, target)}" for c in ALL_COLUMNS[2:])
    return f"on conflict (meter_id, bucket) do update set {sets}"


def _insert(table: str) -> str:
    return f"insert into {quote(table)} as r ({', '.join(quote(c) for c in ALL_COLUMNS)})"


def _columns(alias: str, *, minute: bool = False) -> str:
    """The rollup columns after meter and bucket, of the row ``alias``: of the minute table
    (``minute``), its times are computed from their offsets."""

    def column(name: str) -> str:
        if minute and name in Tables.MINUTE_OFFSETS:
            return f"{Tables.minute_time_sql(name, alias)} as {quote(name)}"
        return f"{alias}.{quote(name)}"

    return ", ".join(column(c) for c in ALL_COLUMNS[2:])


def _level_sql(*, target: str, source: str, keys_from: str, width: str, folded: bool = False) -> str:
    """Recompute ``target``'s buckets of ``keys_from`` from ``source``; with ``folded`` only from the
    source rows inside their meter's folded range (aggregator/fold.py)."""
    parts = f"""
  select k.meter_id, k.b, s.bucket, {_columns("s", minute=source == Tables.TELEMETRY_AGGREGATES)}
  from (select distinct meter_id, date_bin(interval '{width}', bucket, {_EPOCH}) as b from {keys_from}) k
  join {quote(source)} s on s.meter_id = k.meter_id and s.bucket >= k.b
    and s.bucket < k.b + interval '{width}'"""
    if folded:
        parts += f"\n  where {fold.in_folded_range('s')}"
    return _rollup_sql(target, parts)


def _daily_sql(keys_from: str) -> str:
    """Recompute the folded daily rows of the days of ``keys_from`` (meter_id, bucket) from the
    folded hours inside each day and the folded 5-minute rows of partial hours at its edges."""
    five, hour = quote(Tables.TELEMETRY_5M), quote(Tables.TELEMETRY_1H_FOLDED)
    parts = f"""
  with days as (
    select distinct meter_id,
      (date_trunc('day', bucket at time zone %(tz)s) at time zone %(tz)s) as d0,
      ((date_trunc('day', bucket at time zone %(tz)s) + interval '1 day') at time zone %(tz)s) as d1
    from {keys_from}
  )
  select k.meter_id, k.d0 as b, h.bucket, {_columns("h")}
  from days k join {hour} h on h.meter_id = k.meter_id and h.bucket >= k.d0
    and h.bucket + interval '1 hour' <= k.d1
  union all
  select k.meter_id, k.d0 as b, f.bucket, {_columns("f")}
  from days k join {five} f on f.meter_id = k.meter_id and f.bucket >= k.d0 and f.bucket < k.d1
    and not (date_bin(interval '1 hour', f.bucket, {_EPOCH}) >= k.d0
             and date_bin(interval '1 hour', f.bucket, {_EPOCH}) + interval '1 hour' <= k.d1)
    and {fold.in_folded_range("f")}"""
    return _rollup_sql(Tables.TELEMETRY_1D_FOLDED, parts)


_FULL = "_enerlink_agg_full"  # staging rows of meters whose buckets are recomputed in full
#: watermark row: every 5-minute bucket before it has been moved to the closed table
CLOSED_BEFORE = "5m_closed_before"
_REPLACED = "_enerlink_agg_replaced"  # (meter, minute) of staging rows that replace stored ones
_BUCKETS = {
    Tables.TELEMETRY_5M: f"date_bin(interval '5 minutes', s.bucket, {_EPOCH})",
    Tables.TELEMETRY_1H_FOLDED: f"date_bin(interval '1 hour', s.bucket, {_EPOCH})",
    Tables.TELEMETRY_1D_FOLDED: fold.daily_bucket("s.bucket", "%(tz)s"),
}


def _closed(alias: str, bucket: str) -> str:
    """SQL condition: the 5-minute bucket ``bucket`` of ``alias``'s meter is in the closed table."""
    return (
        f"exists (select 1 from {quote(Tables.TELEMETRY_5M_CLOSED)} c"
        f" where c.meter_id = {alias}.meter_id and c.bucket = {bucket})"
    )


def _merge_sql(target: str, *, staging: str, one_per_meter: bool, closed: bool | None = None) -> str:
    """Merge the new minute rows of ``staging`` into ``target``; with ``one_per_meter`` (a single
    minute for the whole fleet, the common case) each staging row is its bucket's part as it is.
    Into a folded table, only the rows inside their meter's folded range. The 5-minute level is
    written into its open table, or with ``closed`` into the closed one: only the rows whose bucket
    is there already (``closed=False``: into the open table, only the others; ``None``: the caller
    knows no bucket is closed). A bucket is never in both tables."""
    new_rows = f"""from {staging} s
  where not exists (select 1 from {_REPLACED} x where x.meter_id = s.meter_id)"""
    into = target
    if target != Tables.TELEMETRY_5M:
        new_rows += f" and {fold.in_folded_range('s')}"
    else:
        into = Tables.TELEMETRY_5M_CLOSED if closed else Tables.TELEMETRY_5M_OPEN
        if closed is not None:
            new_rows += f" and {'' if closed else 'not '}{_closed('s', _BUCKETS[target])}"
    if one_per_meter:
        return f"""{_insert(into)}
select s.meter_id, {_BUCKETS[target]}, {_columns("s", minute=True)} {new_rows}
{_merge_tail(into)}"""
    parts = f"select s.meter_id, {_BUCKETS[target]} as b, s.bucket, {_columns('s', minute=True)} {new_rows}"
    return _rollup_sql(into, parts, merge=True)


def _merge_statements(target: str, *, staging: str, one_per_meter: bool, bucket_open: bool) -> list[str]:
    """The merge of new minute rows into ``target``. At the 5-minute level, with ``bucket_open``
    (a minute pass whose bucket no move has closed, :func:`bucket_open`) into the open table without
    probing the closed one; otherwise (late data, backfill) into whichever table holds the bucket."""
    if target != Tables.TELEMETRY_5M or bucket_open:
        return [_merge_sql(target, staging=staging, one_per_meter=one_per_meter)]
    return [
        _merge_sql(target, staging=staging, one_per_meter=one_per_meter, closed=closed)
        for closed in (True, False)
    ]


Conn = AsyncConnection[tuple[object, ...]]


async def none_replaced(conn: Conn) -> None:
    """The minute rows of ``staging`` were inserted without conflict: none replaces a stored row
    (the note of a previous part in the same transaction is cleared)."""
    await _replaced_table(conn)


async def _replaced_table(conn: Conn) -> None:
    await conn.execute(
        f"create temp table if not exists {_REPLACED} (meter_id text, bucket timestamptz)"
        " on commit delete rows".encode()
    )
    await conn.execute(f"delete from {_REPLACED}".encode(), prepare=True)  # a previous part's


async def mark_replaced(conn: Conn, *, staging: str) -> int:
    """Before the minute upsert: note the staging rows that will replace a stored minute row."""
    await _replaced_table(conn)
    # one primary-key probe per staging row, whatever the statistics say: a plain join on a table
    # not analyzed yet was planned as a sort of the whole month's partition (20 ms for 30,000 rows,
    # growing with the month) instead of 2,500 probes (3.5 ms)
    cur = await conn.execute(
        f"insert into {_REPLACED} select s.meter_id, s.bucket from {staging} s cross join lateral"
        f" (select from {quote(Tables.TELEMETRY_AGGREGATES)} t"
        " where t.meter_id = s.meter_id and t.bucket = s.bucket limit 1) stored".encode(),
        prepare=True,
    )
    return max(cur.rowcount, 0)


async def refresh(
    conn: Conn,
    *,
    staging: str,
    timezone: str,
    replaced: int,
    one_per_meter: bool = False,
    maybe_folded: bool = True,
    bucket_open: bool = False,
) -> None:
    """Bring every rollup bucket touched by the minute rows in ``staging`` up to date (same
    transaction as the minute upsert; :func:`mark_replaced` ran before it and found ``replaced``,
    or the rows were inserted without conflict and :func:`none_replaced` ran: 0).
    ``one_per_meter``: the caller knows ``staging`` holds at most one row per meter;
    ``maybe_folded=False``: it knows none lies in its meter's folded range (:func:`folded_after`);
    ``bucket_open``: it knows every row's 5-minute bucket is open (:func:`bucket_open`).
    The statements run once per part are prepared (parsed and planned once a job)."""
    await _session(conn)
    await conn.execute(fold.ensure_meters_sql(staging).encode(), prepare=True)
    # the common case: every new minute row is after its meter's folded range, 5-minute rows only
    folded = maybe_folded and await _any_folded(conn, staging=staging)
    for target in list(_BUCKETS) if folded else [Tables.TELEMETRY_5M]:
        params = {"tz": timezone} if target == Tables.TELEMETRY_1D_FOLDED else None
        for statement in _merge_statements(
            target, staging=staging, one_per_meter=one_per_meter, bucket_open=bucket_open
        ):
            await conn.execute(statement.encode(), params, prepare=True)
    if replaced:
        await conn.execute(
            f"create temp table if not exists {_FULL} (like {staging}) on commit delete rows".encode()
        )
        await conn.execute(f"delete from {_FULL}".encode())  # a previous part's, same transaction
        await conn.execute(
            f"insert into {_FULL} select * from {staging} s"
            f" where exists (select 1 from {_REPLACED} x where x.meter_id = s.meter_id)".encode()
        )
        await _recompute(conn, staging=_FULL, timezone=timezone)


async def _session(conn: Conn) -> None:
    await conn.execute(b"set local jit = off")  # compiling ~300 expressions costs more than it saves
    await conn.execute(b"set local work_mem = '64MB'")


async def _any_folded(conn: Conn, *, staging: str) -> bool:
    """Whether a new (not replacing) minute row of ``staging`` lies in its meter's folded range."""
    cur = await conn.execute(
        f"select exists (select 1 from {staging} s where {fold.in_folded_range('s')}"
        f" and not exists (select 1 from {_REPLACED} x where x.meter_id = s.meter_id))".encode()
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def fold_minute(conn: Conn, *, minute_ms: int, timezone: str, shard: Shard = Shard.WHOLE) -> int:
    """In the transaction of the minute ``minute_ms``, before its rows (PostgreSQL is otherwise idle
    while the first part is computed): the meters of its phase fold their 5-minute rows complete
    by then into the folded tables (aggregator/fold.py). Returns how many 5-minute rows. One of
    several shards moves and folds its own meters' rows."""
    boundary = ms_to_dt(fold.boundary_ms(minute_ms))
    params = {"phase": fold.phase_of(minute_ms), "boundary": boundary}
    await conn.execute(_ENSURE_CLOSED_MONTHS.encode(), params, prepare=True)
    await conn.execute(_move_closed_sql(shard).encode(), params, prepare=True)
    await advance(conn, shard.row_name(CLOSED_BEFORE), boundary)
    for statement in fold.temp_tables_sql():
        await conn.execute(statement.encode())
    await conn.execute(fold.due_sql(shard).encode(), params)
    await conn.execute(fold.parts_sql().encode(), params)
    cur = await conn.execute(fold.count_parts_sql().encode())
    counted = await cur.fetchone()
    rows, meters = cast(tuple[int, int], counted or (0, 0))
    if rows:
        await _session(conn)
        for target in (Tables.TELEMETRY_1H_FOLDED, Tables.TELEMETRY_1D_FOLDED):
            tz = {"tz": timezone} if target == Tables.TELEMETRY_1D_FOLDED else None
            bucket = _BUCKETS[target]
            if rows == meters:  # one 5-minute row a meter (every fold but the first or a catch-up)
                statement = f"{_insert(target)}\nselect s.meter_id, {bucket}, {_columns('s')}"
                statement += f" from {fold.PARTS} s\n{_merge_tail(target)}"
            else:
                parts = f"select s.meter_id, {bucket} as b, s.bucket, {_columns('s')} from {fold.PARTS} s"
                statement = _rollup_sql(target, parts, merge=True)
            await conn.execute(statement.encode(), tz)
    await conn.execute(fold.advance_sql().encode(), params)
    return rows


#: The closed table's month partitions of the buckets the move takes (an open bucket of a month no
#: minute pass of this process wrote: a backfill moved after a restart, an upgrade from before 0013).
_ENSURE_CLOSED_MONTHS = f"""select {quote(Tables.ENSURE_MONTH_PARTITION)}('{Tables.TELEMETRY_5M_CLOSED}', m)
from (select distinct date_trunc('month', bucket at time zone 'UTC') at time zone 'UTC' as m
  from {quote(Tables.TELEMETRY_5M_OPEN)} where bucket < %(boundary)s) months"""


def _move_closed_sql(shard: Shard) -> str:
    """Move the 5-minute buckets complete before %(boundary)s from the open table to the closed one
    (``shard``'s meters): each row is written there once (merged with a row already there: minutes
    of a closed bucket merged by a late-data pass before the bucket's move)."""
    cols = ", ".join(quote(c) for c in ALL_COLUMNS)
    return f"""with moved as (
  delete from {quote(Tables.TELEMETRY_5M_OPEN)} where bucket < %(boundary)s
    and {shard.sql_filter("meter_id")} returning {cols}
)
{_insert(Tables.TELEMETRY_5M_CLOSED)}
select {cols} from moved
{_merge_tail(Tables.TELEMETRY_5M_CLOSED)}"""


async def note_closed_moves(conn: Conn, *, minute_ms: int, shard: Shard) -> None:
    """For one of several shards, last in its minute's transaction: the plain closed-bucket row
    follows the latest move of any shard (a shard without a row of its own goes by it). Written
    only when a new bucket has closed, and just before the commit: the shards' minutes never wait
    for one another on it."""
    if shard.whole:
        return
    boundary = ms_to_dt(fold.boundary_ms(minute_ms))
    plain = await read_named(conn, CLOSED_BEFORE)
    if plain is None or plain < boundary:
        await advance(conn, CLOSED_BEFORE, boundary)


async def bucket_open(conn: Conn, minute: datetime, shard: Shard = Shard.WHOLE) -> bool:
    """Whether the 5-minute bucket of ``minute`` is open for sure for ``shard``'s meters: no move
    closed buckets from it on (only a watermark moved back, by hand or by a restore, could have), so
    its rows need not be looked for in the closed table. A shard without a row of its own yet (the
    number of shards changed) goes by the latest move of any shard."""
    closed_before = await read_named(conn, shard.row_name(CLOSED_BEFORE), fallback=CLOSED_BEFORE)
    boundary = ms_to_dt(fold.boundary_ms(int(minute.timestamp() * 1000)))
    return not isinstance(closed_before, datetime) or closed_before <= boundary


async def folded_after(conn: Conn, minute: datetime) -> bool:
    """Whether some meter's folded range reaches past ``minute`` (else no row of that minute is in
    one: the per-part check is skipped). Only right after migration 0008, or a backfill folded."""
    cur = await conn.execute(
        f"select exists (select 1 from {quote(Tables.ROLLUP_FOLD)} where folded_until > %s)".encode(),
        (minute,),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def set_timezone(conn: Conn, timezone: str) -> None:
    """Record the daily buckets' zone for the daily view (a change applies to new days only)."""
    await conn.execute(fold.timezone_sql().encode(), {"tz": timezone})


async def _recompute(conn: Conn, *, staging: str, timezone: str) -> None:
    """Recompute in full every rollup bucket touched by the minute rows in ``staging``: the
    5-minute rows, then the folded hourly and daily rows of those inside the folded range."""
    five_keys = f"(select distinct meter_id, bucket from {staging}) m"
    await conn.execute(
        f"create temp table if not exists {_FULL_5M} (like {quote(Tables.TELEMETRY_5M_OPEN)}"
        " including indexes) on commit delete rows".encode()
    )
    await conn.execute(f"delete from {_FULL_5M}".encode())  # a previous part's, same transaction
    await conn.execute(
        _level_sql(
            target=_FULL_5M,
            source=Tables.TELEMETRY_AGGREGATES,
            keys_from=five_keys,
            width="5 minutes",
        ).encode()
    )
    # each recomputed bucket replaces the row of the table that holds it (the open one if neither)
    cols = ", ".join(quote(c) for c in ALL_COLUMNS)
    for table, where in ((Tables.TELEMETRY_5M_CLOSED, ""), (Tables.TELEMETRY_5M_OPEN, "not ")):
        await conn.execute(
            f"insert into {quote(table)} ({cols}) select {cols} from {_FULL_5M} t"
            f" where {where}{_closed('t', 't.bucket')} {_upsert_tail()}".encode()
        )
    folded = f"(select s.meter_id, s.bucket from {staging} s where {fold.in_folded_range('s')})"
    hour_keys = (
        f"(select distinct meter_id, date_bin(interval '5 minutes', bucket, {_EPOCH}) as bucket"
        f" from {folded} f) m"
    )
    await conn.execute(
        _level_sql(
            target=Tables.TELEMETRY_1H_FOLDED,
            source=Tables.TELEMETRY_5M,
            keys_from=hour_keys,
            width="1 hour",
            folded=True,
        ).encode()
    )
    await conn.execute(_daily_sql(f"{folded} f").encode(), {"tz": timezone})
