"""5-minute, hourly and daily rollups kept in step with the minute rows, like continuous aggregates.

After each upsert of minute rows (the staging table holds exactly the rows just written), the
buckets those rows fall in are recomputed, each level from the level below: 5 min from minutes,
1 h from 5 min, and the local day (``ENERLINK_TIMEZONE``) from the whole hours inside it plus the
5-minute rows of partial hours at its edges (zones with :30 / :45 offsets). Every rollup row is a
full recomputation of its bucket, so late data and re-aggregation simply rewrite it.

Column meanings over a bucket: ``sample_count`` summed, ``first_at`` min, ``last_at`` max,
``*_avg`` and ``*_ratio`` sample-weighted means, ``*_min``/``*_max`` min/max, ``*_energy_wh`` summed,
``*_last`` the value of the bucket's last minute.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from aggregator.columns import ALL_COLUMNS, STAT_COLUMNS, quote
from schemas.wire import Tables

_EPOCH = "timestamptz '1970-01-01 00:00:00+00'"


_LAST = [c.name for c in STAT_COLUMNS if c.stat == "last"]


def _aggregate(name: str) -> str:
    col = next(c for c in STAT_COLUMNS if c.name == name)
    c = f"p.{quote(name)}"
    if col.stat in ("avg", "ratio"):
        return f"sum({c} * p.sample_count) / nullif(sum(p.sample_count), 0)"
    if col.stat == "energy":
        return f"sum({c})"
    return f"{col.stat}({c})"  # min / max


def _rollup_sql(target: str, parts: str) -> str:
    """Upsert ``target`` from ``parts`` (rows meter_id, b = target bucket, bucket, statistics...):
    aggregates by group, and the ``_last`` columns from each group's latest row (one sort)."""
    aggregated = [n for n in ALL_COLUMNS[5:] if n not in _LAST]
    agg_list = ",\n    ".join(f"{_aggregate(n)} as {quote(n)}" for n in aggregated)
    last_list = ", ".join(f"p.{quote(n)}" for n in _LAST)
    out = []
    for n in ALL_COLUMNS[2:]:
        out.append(f"l.{quote(n)}" if n in _LAST else f"a.{quote(n)}")
    return f"""{_insert(target)}
with parts as ({parts}),
agg as (
  select p.meter_id, p.b, sum(p.sample_count)::int as sample_count, min(p.first_at) as first_at,
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
{_upsert_tail()}"""


def _upsert_tail() -> str:
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in ALL_COLUMNS[2:])
    return f"on conflict (meter_id, bucket) do update set {sets}"


def _insert(table: str) -> str:
    return f"insert into {quote(table)} ({', '.join(quote(c) for c in ALL_COLUMNS)})"


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{quote(c)}" for c in ALL_COLUMNS[2:])


def _level_sql(*, target: str, source: str, keys_from: str, width: str) -> str:
    parts = f"""
  select k.meter_id, k.b, s.bucket, {_columns("s")}
  from (select distinct meter_id, date_bin(interval '{width}', bucket, {_EPOCH}) as b from {keys_from}) k
  join {quote(source)} s on s.meter_id = k.meter_id and s.bucket >= k.b
    and s.bucket < k.b + interval '{width}'"""
    return _rollup_sql(target, parts)


def _daily_sql(staging: str) -> str:
    five, hour = quote(Tables.TELEMETRY_5M), quote(Tables.TELEMETRY_1H)
    parts = f"""
  with days as (
    select distinct meter_id,
      (date_trunc('day', bucket at time zone %(tz)s) at time zone %(tz)s) as d0,
      ((date_trunc('day', bucket at time zone %(tz)s) + interval '1 day') at time zone %(tz)s) as d1
    from {staging}
  )
  select k.meter_id, k.d0 as b, h.bucket, {_columns("h")}
  from days k join {hour} h on h.meter_id = k.meter_id and h.bucket >= k.d0
    and h.bucket + interval '1 hour' <= k.d1
  union all
  select k.meter_id, k.d0 as b, f.bucket, {_columns("f")}
  from days k join {five} f on f.meter_id = k.meter_id and f.bucket >= k.d0 and f.bucket < k.d1
    and not (date_bin(interval '1 hour', f.bucket, {_EPOCH}) >= k.d0
             and date_bin(interval '1 hour', f.bucket, {_EPOCH}) + interval '1 hour' <= k.d1)"""
    return _rollup_sql(Tables.TELEMETRY_1D, parts)


async def refresh(conn: AsyncConnection[tuple[object, ...]], *, staging: str, timezone: str) -> None:
    """Recompute every rollup bucket touched by the minute rows in ``staging`` (same transaction)."""
    five_keys = f"(select distinct meter_id, bucket from {staging}) m"
    await conn.execute(
        _level_sql(
            target=Tables.TELEMETRY_5M,
            source=Tables.TELEMETRY_AGGREGATES,
            keys_from=five_keys,
            width="5 minutes",
        ).encode()
    )
    hour_keys = (
        f"(select distinct meter_id, date_bin(interval '5 minutes', bucket, {_EPOCH}) as bucket"
        f" from {staging}) m"
    )
    await conn.execute(
        _level_sql(
            target=Tables.TELEMETRY_1H, source=Tables.TELEMETRY_5M, keys_from=hour_keys, width="1 hour"
        ).encode()
    )
    await conn.execute(_daily_sql(staging).encode(), {"tz": timezone})
