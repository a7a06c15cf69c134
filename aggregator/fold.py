"""Hourly and daily rollups as views over folded tables, so a minute writes one rollup row per meter.

Merging every minute row into its 5-minute, hourly and daily row rewrote three wide rows per meter
and minute; those updates were most of a minute's PostgreSQL work. Now, like a continuous aggregate
with real-time aggregation:

* ``telemetry_aggregates_5m`` is the view of the open buckets' table, merged every minute, and the
  complete buckets' table, each row moved there once (aggregator/rollups.py, migration 0011);
* ``telemetry_aggregates_1h`` and ``_1d`` are views: the meter's *folded* row (tables
  ``..._1h_folded`` and ``..._1d_folded``: its 5-minute buckets before ``rollup_fold.folded_until``)
  combined with its 5-minute rows from ``folded_until`` on (at most the open bucket and one closed
  one), with the same rules as every rollup (:mod:`enerlink.aggregator.rollups`). A reader always sees every
  minute aggregated so far, exactly as before;
* the fold: each minute, the meters of one of :data:`PHASES` phases (a hash of the meter id, fixed
  when its ``rollup_fold`` row is created) fold their closed 5-minute rows into both folded tables and
  move ``folded_until`` on. Each meter folds once every 5 minutes, so the work is spread evenly: a
  fifth of the fleet per minute, never the whole fleet at an hour's or a day's end;
* a minute row inside a meter's folded range (late data, a backfilled minute, the open bucket at the
  time of the migration) is merged or recomputed in the folded tables too (rollups.refresh).

A meter's ``rollup_fold`` row is created (``folded_until`` = its first 5-minute bucket: nothing
folded) in the transaction that writes its first 5-minute row, so the views reach every 5-minute row.
"""

from __future__ import annotations

from enerlink.aggregator.columns import ALL_COLUMNS, STAT_COLUMNS, level_type
from enerlink.db import quote
from enerlink.schemas.wire import Tables
from enerlink.shards import Shard

PHASES = 5
FIVE_MINUTES_MS = 300_000
_EPOCH = "timestamptz '1970-01-01 00:00:00+00'"
_DUE = "_enerlink_fold_due"
PARTS = "_enerlink_fold_parts"
_LAST = {c.name for c in STAT_COLUMNS if c.stat == "last"}


def phase_sql(meter_id: str) -> str:
    """A meter's phase from its id (md5: the same on every PostgreSQL version and platform)."""
    return f"(('x' || left(md5({meter_id}), 7))::bit(28)::int % {PHASES})::smallint"


def daily_bucket(column: str, timezone: str) -> str:
    """The local day (``timezone``: an SQL expression) of the instant ``column``."""
    return f"(date_trunc('day', {column} at time zone {timezone}) at time zone {timezone})"


#: level view -> (its folded table, the view's bucket of a 5-minute row ``f`` (zone: ``z.timezone``))
LEVELS: dict[str, tuple[str, str]] = {
    Tables.TELEMETRY_1H: (Tables.TELEMETRY_1H_FOLDED, f"date_bin(interval '1 hour', f.bucket, {_EPOCH})"),
    Tables.TELEMETRY_1D: (Tables.TELEMETRY_1D_FOLDED, daily_bucket("f.bucket", "z.timezone")),
}


def _view_column(name: str) -> str:
    c = f"p.{quote(name)}"
    if name == "sample_count":
        return f"sum({c})::int"
    if name in ("first_at", "last_at"):
        return f"{'min' if name == 'first_at' else 'max'}({c})"
    if name in _LAST:  # parts never overlap in time: the latest part holds the bucket's last minute
        return f"(array_agg({c} order by p.last_at desc))[1]"
    col = next(x for x in STAT_COLUMNS if x.name == name)
    if col.stat == "avg":  # weighted in float8, served in the column's type
        return f"(sum({c}::float8 * p.sample_count) / nullif(sum(p.sample_count), 0))::{col.sql_type}"
    if col.stat in ("energy", "count"):  # in the folded rows' type
        return f"sum({c})::{level_type(col.sql_type, 'folded', stat=col.stat)}"
    return f"{col.stat}({c})"


def five_minute_rows(where: str) -> str:
    """A subquery (in parentheses) of the 5-minute rows matching ``where`` (an SQL condition on
    ``f5``), from the closed and the open table each (migration 0011): written out per table, so a
    lateral reference in ``where`` reaches each table's primary key (through the union view the
    planner may filter above both scans instead)."""
    return (
        "("
        + " union all ".join(
            f"select * from {quote(t)} f5 where {where}"
            for t in (Tables.TELEMETRY_5M_CLOSED, Tables.TELEMETRY_5M_OPEN)
        )
        + ")"
    )


def view_sql(view: str) -> str:
    """``create view`` of an hourly or daily level: folded rows plus the unfolded 5-minute rows (as
    migration 0010 creates it; a test checks the columns and types of the views against it)."""
    folded, bucket = LEVELS[view]
    stats = ALL_COLUMNS[2:]
    zone = f" cross join {quote(Tables.ROLLUP_STATE)} z" if view == Tables.TELEMETRY_1D else ""
    aggregated = ",\n  ".join(f"{_view_column(n)} as {quote(n)}" for n in stats)
    return f"""create view {quote(view)} as
select p.meter_id, p.b as bucket,
  {aggregated}
from (
  select t.meter_id, t.bucket as b, {", ".join(f"t.{quote(n)}" for n in stats[:3])},
    {", ".join(f"t.{quote(n)}" for n in stats[3:])}
  from {quote(folded)} t
  union all
  select r.meter_id, {bucket} as b, {", ".join(f"f.{quote(n)}" for n in stats[:3])},
    {", ".join(f"f.{quote(n)}" for n in stats[3:])}
  from {quote(Tables.ROLLUP_FOLD)} r{zone}
  cross join lateral {five_minute_rows("f5.meter_id = r.meter_id and f5.bucket >= r.folded_until")} f
) p
group by p.meter_id, p.b"""


def ensure_meters_sql(staging: str) -> str:
    """A ``rollup_fold`` row for each meter of ``staging`` that has none, folded up to its first
    5-minute bucket (it has no 5-minute row yet: nothing to fold)."""
    fold = quote(Tables.ROLLUP_FOLD)
    return f"""insert into {fold} (meter_id, phase, folded_until)
select s.meter_id, {phase_sql("s.meter_id")}, min(date_bin(interval '5 minutes', s.bucket, {_EPOCH}))
from {staging} s
where not exists (select 1 from {fold} r where r.meter_id = s.meter_id)
group by s.meter_id
on conflict (meter_id) do nothing"""


def in_folded_range(alias: str) -> str:
    """SQL condition: the minute row ``alias`` lies in its meter's folded range."""
    return (
        f"exists (select 1 from {quote(Tables.ROLLUP_FOLD)} r"
        f" where r.meter_id = {alias}.meter_id and {alias}.bucket < r.folded_until)"
    )


def temp_tables_sql() -> list[str]:
    """The fold's temporary tables, created once a session, emptied (a previous minute's rows)."""
    return [
        f"create temp table if not exists {_DUE} (meter_id text, folded_until timestamptz)"
        " on commit delete rows",
        f"create temp table if not exists {PARTS} (like {quote(Tables.TELEMETRY_5M)}) on commit delete rows",
        f"delete from {_DUE}",
        f"delete from {PARTS}",
    ]


def due_sql(shard: Shard) -> str:
    """The meters (of ``shard``) to fold now (%(phase)s, %(boundary)s) into the due table."""
    return (
        f"insert into {_DUE} select meter_id, folded_until from {quote(Tables.ROLLUP_FOLD)}"
        f" where phase = %(phase)s and folded_until < %(boundary)s and {shard.sql_filter('meter_id')}"
    )


def parts_sql() -> str:
    """The 5-minute rows to fold into :data:`PARTS` (shaped like the 5-minute table): one index
    probe per due meter, never a scan of the table."""
    rows = five_minute_rows(
        "f5.meter_id = d.meter_id and f5.bucket >= d.folded_until and f5.bucket < %(boundary)s"
    )
    return f"""insert into {PARTS} select f.*
  from {_DUE} d cross join lateral {rows} f"""


def count_parts_sql() -> str:
    """Rows to fold, and meters they belong to (equal: one part per bucket, merged directly)."""
    return f"select count(*), count(distinct meter_id) from {PARTS}"


def advance_sql() -> str:
    return (
        f"update {quote(Tables.ROLLUP_FOLD)} r set folded_until = %(boundary)s"
        f" from {_DUE} d where r.meter_id = d.meter_id"
    )


def timezone_sql() -> str:
    """Record the daily buckets' zone (%(tz)s) for the daily view."""
    state = quote(Tables.ROLLUP_STATE)
    return (
        f"insert into {state} (id, timezone) values (true, %(tz)s) on conflict (id)"
        f" do update set timezone = excluded.timezone where {state}.timezone <> excluded.timezone"
    )


def phase_of(minute_ms: int) -> int:
    """The phase whose meters fold in the job of the minute starting at ``minute_ms``."""
    return (minute_ms // 60_000) % PHASES


def boundary_ms(minute_ms: int) -> int:
    """5-minute buckets starting before this are complete before the minute ``minute_ms``."""
    return minute_ms // FIVE_MINUTES_MS * FIVE_MINUTES_MS
