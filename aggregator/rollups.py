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


def _select_list(src: str) -> str:
    parts = [
        f"sum({src}.sample_count)::int",
        f"min({src}.first_at)",
        f"max({src}.last_at)",
    ]
    for col in STAT_COLUMNS:
        c = f"{src}.{quote(col.name)}"
        if col.stat in ("avg", "ratio"):
            parts.append(f"sum({c} * {src}.sample_count) / nullif(sum({src}.sample_count), 0)")
        elif col.stat == "min":
            parts.append(f"min({c})")
        elif col.stat == "max":
            parts.append(f"max({c})")
        elif col.stat == "energy":
            parts.append(f"sum({c})")
        else:  # last
            parts.append(f"(array_agg({c} order by {src}.bucket desc))[1]")
    return ",\n  ".join(parts)


def _upsert_tail() -> str:
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in ALL_COLUMNS[2:])
    return f"on conflict (meter_id, bucket) do update set {sets}"


def _insert(table: str) -> str:
    return f"insert into {quote(table)} ({', '.join(quote(c) for c in ALL_COLUMNS)})"


def _level_sql(*, target: str, source: str, keys_from: str, width: str) -> str:
    return f"""{_insert(target)}
select k.meter_id, k.b,
  {_select_list("s")}
from (select distinct meter_id, date_bin(interval '{width}', bucket, {_EPOCH}) as b from {keys_from}) k
join {quote(source)} s on s.meter_id = k.meter_id and s.bucket >= k.b and s.bucket < k.b + interval '{width}'
group by k.meter_id, k.b
{_upsert_tail()}"""


def _daily_sql(staging: str) -> str:
    five, hour = quote(Tables.TELEMETRY_5M), quote(Tables.TELEMETRY_1H)
    cols = ", ".join(quote(c) for c in ALL_COLUMNS[2:])
    return f"""{_insert(Tables.TELEMETRY_1D)}
with days as (
  select distinct meter_id,
    (date_trunc('day', bucket at time zone %(tz)s) at time zone %(tz)s) as d0,
    ((date_trunc('day', bucket at time zone %(tz)s) + interval '1 day') at time zone %(tz)s) as d1
  from {staging}
), parts as (
  select k.meter_id, k.d0, h.bucket, {", ".join(f"h.{quote(c)}" for c in ALL_COLUMNS[2:])}
  from days k join {hour} h on h.meter_id = k.meter_id and h.bucket >= k.d0
    and h.bucket + interval '1 hour' <= k.d1
  union all
  select k.meter_id, k.d0, f.bucket, {", ".join(f"f.{quote(c)}" for c in ALL_COLUMNS[2:])}
  from days k join {five} f on f.meter_id = k.meter_id and f.bucket >= k.d0 and f.bucket < k.d1
    and not (date_bin(interval '1 hour', f.bucket, {_EPOCH}) >= k.d0
             and date_bin(interval '1 hour', f.bucket, {_EPOCH}) + interval '1 hour' <= k.d1)
)
select s.meter_id, s.d0,
  {_select_list("s")}
from parts s
group by s.meter_id, s.d0
{_upsert_tail()}""".replace("{cols}", cols)


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
