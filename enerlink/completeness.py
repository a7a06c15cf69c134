"""Completeness of a meter's readings, from the ``seq`` numbers kept in its minute rows.

Each minute row of ``telemetry_aggregates`` holds ``seq_first`` / ``seq_last`` (the ``seq`` of the
minute's first and last snapshot carrying one, the last stored as ``seq_span`` after the first;
null without ``seq``), ``sample_count`` and
``repaired_count`` (its snapshots stored from a meter's re-sent readings). A minute is recomputed
whenever late data (a repaired reading) arrives for it, so everything here follows from the rows.

The rule, per minute row with a ``seq`` (``before`` = ``seq_last`` of the meter's previous minute row
with a ``seq``, looked for up to :data:`LOOKBACK` back):

* expected = ``seq_last - before`` (the readings issued since the previous minute: a gap is charged
  to the first minute after it, the one that shows it);
* the meter's first minute with a ``seq`` (no ``before``): ``seq_last - seq_first + 1``;
* a restart of ``seq`` (a re-flash: ``seq_first <= before``): counted from the new ``seq_first``,
  ``seq_last - seq_first + 1``; a restart inside the minute (``seq_last < seq_first``): the minute's
  own readings (what was issued around the restart cannot be known);
* received = ``sample_count``, repaired = ``repaired_count`` (what ``Keys.repaired`` listed for the
  minute when it was last aggregated: it lives as long as the live window).

A bucket (hour, or day of ``ENERLINK_TIMEZONE``) adds up its minutes: expected and repaired over its
minutes with a ``seq``, received over all of them, missing = max(expected - received with ``seq``,
0). Without any ``seq`` in the bucket (today's firmware, rows from before the columns existed)
expected, repaired and missing are unknown (None). Readings missing after a meter's newest ``seq``
are not known to be missing until a later one arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Self

from psycopg import AsyncConnection

from enerlink.config import ConfigError, Env
from enerlink.schemas.wire import Tables

Bucket = Literal["1h", "1d", "all"]
#: How far back the previous minute with a ``seq`` is looked for (one index probe per meter).
LOOKBACK = timedelta(days=7)
#: Kind of the event raised for a closed hour below the threshold.
LOW_EVENT = "completeness_low"
_AGG = f'"{Tables.TELEMETRY_AGGREGATES}"'
#: the minute rows with their last ``seq`` (stored as its offset from the first since migration 0014)
_ROWS = f"(select a.*, a.seq_first + a.seq_span as seq_last from {_AGG} a)"
_EPOCH = "timestamptz '1970-01-01 00:00:00+00'"


@dataclass(frozen=True, slots=True)
class CompletenessSettings:
    threshold: float = 0.99  # a closed hour below this share of its expected readings raises an event

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(threshold=env.float("COMPLETENESS_THRESHOLD", 0.99))
        if not 0 <= settings.threshold <= 1:
            raise ConfigError(f"ENERLINK_COMPLETENESS_THRESHOLD={settings.threshold}: must be within 0..1")
        return settings


@dataclass(frozen=True, slots=True)
class Completeness:
    """One bucket of one meter (or of the fleet: ``meter_id`` None)."""

    meter_id: str | None
    bucket: datetime | None  # None for ``all``: the whole range
    minutes: int
    received: int
    expected: int | None
    repaired: int | None
    missing: int | None

    @property
    def ratio(self) -> float | None:
        """Share of the expected readings received (None: unknown; 1.0 when none was expected)."""
        if self.expected is None or self.missing is None:
            return None
        return 1.0 if self.expected <= 0 else (self.expected - self.missing) / self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "expected": self.expected,
            "repaired": self.repaired,
            "missing": self.missing,
            "completeness": None if (r := self.ratio) is None else round(r, 6),
            "minutes": self.minutes,
        }


def _bucket_sql(bucket: Bucket) -> str:
    if bucket == "1h":
        return f"date_bin(interval '1 hour', r.bucket, {_EPOCH})"
    if bucket == "1d":
        return "(date_trunc('day', r.bucket at time zone %(tz)s) at time zone %(tz)s)"
    return "null::timestamptz"


def query(*, bucket: Bucket, one_meter: bool) -> str:
    """Per meter and bucket in ``[%(start)s, %(end)s)`` (of meter ``%(meter)s`` with ``one_meter``):
    meter_id, bucket, minutes, received, expected, repaired, missing (see the module's rule). One
    scan of the minute rows: the window partitioned by meter and by having a ``seq`` gives each row
    with one the previous row with one (the meter's row before the range for the first)."""
    where = "t.meter_id = %(meter)s and " if one_meter else ""
    return f"""
select m.meter_id, m.b, count(*)::int as minutes, sum(m.sample_count)::bigint as received,
  sum(m.expected) filter (where m.has_seq)::bigint as expected,
  sum(coalesce(m.repaired_count, 0)) filter (where m.has_seq)::bigint as repaired,
  case when bool_or(m.has_seq)
    then greatest(sum(m.expected - m.sample_count) filter (where m.has_seq), 0) end::bigint as missing
from (
  select r.meter_id, {_bucket_sql(bucket)} as b, r.sample_count, r.repaired_count, r.has_seq, case
    when not r.has_seq then null
    when r.seq_last < r.seq_first then r.sample_count
    when r.before is null or r.seq_first <= r.before then r.seq_last - r.seq_first + 1
    else r.seq_last - r.before end as expected
  from (
    select t.meter_id, t.bucket, t.sample_count, t.seq_first, t.seq_last, t.repaired_count,
      t.seq_last is not null as has_seq,
      case when t.seq_last is not null then coalesce(lag(t.seq_last) over w,
        (select p.seq_last from {_ROWS} p where p.meter_id = t.meter_id and p.bucket < %(start)s
           and p.bucket >= %(start)s::timestamptz - %(lookback)s and p.seq_last is not null
         order by p.bucket desc limit 1)) end as before
    from {_ROWS} t where {where}t.bucket >= %(start)s and t.bucket < %(end)s
    window w as (partition by t.meter_id, t.seq_last is not null order by t.bucket)
  ) r
) m
group by m.meter_id, m.b order by m.meter_id, m.b"""


def fleet_query(bucket: Bucket) -> str:
    """The fleet per bucket in ``[%(start)s, %(end)s)``: bucket, meters, meters with ``seq``, meters
    below ``%(threshold)s``, minutes, received, expected, repaired, missing (over meters with
    ``seq``; received over all)."""
    return f"""
select q.b, count(*)::int, (count(*) filter (where q.expected is not null))::int,
  (count(*) filter (where q.expected > 0
    and (q.expected - q.missing)::float8 / q.expected < %(threshold)s))::int,
  sum(q.minutes)::bigint, sum(q.received)::bigint, sum(q.expected)::bigint, sum(q.repaired)::bigint,
  sum(q.missing)::bigint
from ({query(bucket=bucket, one_meter=False)})
  as q(meter_id, b, minutes, received, expected, repaired, missing)
group by q.b order by q.b"""


def params(*, start: datetime, end: datetime, timezone: str, meter_id: str | None = None) -> dict[str, Any]:
    return {"start": start, "end": end, "tz": timezone, "lookback": LOOKBACK, "meter": meter_id}


def from_row(row: tuple[Any, ...]) -> Completeness:
    meter, bucket, minutes, received, expected, repaired, missing = row
    return Completeness(
        meter_id=meter,
        bucket=bucket,
        minutes=int(minutes),
        received=int(received or 0),
        expected=None if expected is None else int(expected),
        repaired=None if repaired is None else int(repaired),
        missing=None if missing is None else int(missing),
    )


async def of_meter(
    conn: AsyncConnection[Any],
    *,
    meter_id: str,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    timezone: str = "UTC",
) -> list[Completeness]:
    """A meter's completeness per bucket in ``[start, end)`` (buckets with minute rows only)."""
    cur = await conn.execute(
        query(bucket=bucket, one_meter=True).encode(),
        params(start=start, end=end, timezone=timezone, meter_id=meter_id),
    )
    return [from_row(tuple(row)) for row in await cur.fetchall()]


async def of_fleet(
    conn: AsyncConnection[Any], *, start: datetime, end: datetime, timezone: str = "UTC"
) -> list[Completeness]:
    """Every meter's completeness over ``[start, end)`` (one row per meter with minute rows)."""
    cur = await conn.execute(
        query(bucket="all", one_meter=False).encode(), params(start=start, end=end, timezone=timezone)
    )
    return [from_row(tuple(row)) for row in await cur.fetchall()]


def total(parts: list[Completeness], *, bucket: datetime | None = None) -> Completeness:
    """The sum of ``parts`` (expected, repaired and missing over those that know them)."""
    known = [p for p in parts if p.expected is not None]
    return Completeness(
        meter_id=None,
        bucket=bucket,
        minutes=sum(p.minutes for p in parts),
        received=sum(p.received for p in parts),
        expected=sum(p.expected or 0 for p in known) if known else None,
        repaired=sum(p.repaired or 0 for p in known) if known else None,
        missing=sum(p.missing or 0 for p in known) if known else None,
    )
