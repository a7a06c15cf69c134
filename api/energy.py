"""Energy per local hour or day: grid import and export, solar, home load, battery charge and
discharge (kWh), self-consumption and self-sufficiency (%), for one meter or the whole fleet.

Source: the 5-minute rollup ``telemetry_aggregates_5m``, kept in step with the minute rows in the
aggregator's own transaction; its energies (``*_energy_10uwh``, read in Wh) are the sums of the minute
rows' (counter deltas,
exact across daily, settlement and re-flash resets). Local hours and days (``ENERLINK_TIMEZONE``) are
whole 5-minute buckets in every zone in use (offsets are multiples of 15 minutes), so each bucket
here is a sum of minute rows, the same as summing the minute rows per local hour or day.

Flows, from the columns of :mod:`enerlink.aggregator.columns`:

* grid import ``import`` energy, grid export ``export`` energy;
* solar production ``solar_output`` energy (what the charge controller delivers; the firmware's
  ``net_solar.solar_*`` is the same channel; ``solar_input`` is the panel side, before its losses);
* home load ``load_home + load_smart_mtr`` energies (the firmware's ``net_solar.load_*``);
* battery charge and discharge: the pack has no energy counter (the MAX17048 reports SOC and a %/h
  rate), so they come from the energy balance at the bus, ``solar + import = load + export + charge -
  discharge``: per meter and 5-minute bucket the net ``solar + import - load - export`` is charge
  when positive and discharge when negative, then summed. A pack that charges and discharges within
  the same 5 minutes shows only the net; conversion losses of the battery count as charge.

Self-consumption = (solar - export) / solar, self-sufficiency = (load - import) / load, in %, clamped
to 0-100; ``None`` when the denominator is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from psycopg import sql

from enerlink.aggregator.fold import daily_bucket, five_minute_rows
from enerlink.schemas.wire import Tables

#: The channel of each energy flow read from the rows (the load is two channels).
_FLOW_COLUMNS = {
    "imp": "import",
    "exp": "export",
    "sol": "solar_output",
    "home": "load_home",
    "smart": "load_smart_mtr",
}

Bucket = Literal["1h", "1d"]

#: the longest range per bucket width (more is a 422): 31 days of hours, 366 days
MAX_BUCKETS: dict[str, int] = {"1h": 31 * 24, "1d": 366}
DEFAULT_DAYS = 30  # bucket=1d without ``start``: the last 30 local days, today included
FLOWS = ("grid_import", "grid_export", "solar", "load", "battery_charge", "battery_discharge")


class RangeError(ValueError):
    """A range the endpoint refuses (the message says why)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # UTC, a local bucket boundary
    end: datetime  # UTC, a local bucket boundary, exclusive
    buckets: int


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def _floor(moment: datetime, *, bucket: Bucket, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    if bucket == "1d":
        return _local_midnight(local.date(), zone)
    return local.replace(minute=0, second=0, microsecond=0)


def _next(moment: datetime, *, bucket: Bucket, zone: ZoneInfo) -> datetime:
    """The bucket boundary after the boundary ``moment``."""
    if bucket == "1d":
        return _local_midnight(moment.astimezone(zone).date() + timedelta(days=1), zone)
    return (moment.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)


def window(
    *, bucket: Bucket, start: datetime | None, end: datetime | None, now: datetime, zone: ZoneInfo
) -> Window:
    """The UTC range of whole local buckets covering ``start``..``end`` (aware datetimes).

    Defaults: ``end`` the next local midnight; without ``start``, ``1h`` covers the local day
    before ``end`` (today), ``1d`` the 30 local days before it (today included). ``start`` is moved
    back to its bucket's start and ``end`` on to the next boundary."""
    if end is None:
        end_at = _next(_floor(now, bucket="1d", zone=zone), bucket="1d", zone=zone)
    else:
        end_at = _floor(end, bucket=bucket, zone=zone)
        if end_at < end:
            end_at = _next(end_at, bucket=bucket, zone=zone)
    if start is None:
        last_day = (end_at - timedelta(microseconds=1)).astimezone(zone).date()
        days = DEFAULT_DAYS if bucket == "1d" else 1
        start_at = _local_midnight(last_day - timedelta(days=days - 1), zone)
    else:
        start_at = _floor(start, bucket=bucket, zone=zone)
    # compared in UTC: within one zone Python compares wall times, blind to a repeated hour
    first, last = start_at.astimezone(UTC), end_at.astimezone(UTC)
    if first >= last:
        raise RangeError("start must be before end")
    buckets, at = 0, start_at
    while at.astimezone(UTC) < last:
        buckets += 1
        if buckets > MAX_BUCKETS[bucket]:
            raise RangeError(
                f"{start_at.isoformat()}..{end_at.isoformat()} is more than {MAX_BUCKETS[bucket]}"
                f" buckets of {bucket}: narrow the range" + (" or use bucket=1d" if bucket == "1h" else "")
            )
        at = _next(at, bucket=bucket, zone=zone)
    return Window(start=first, end=last, buckets=buckets)


def local_bucket_sql(bucket: Bucket) -> str:
    """SQL: the instant starting the local hour or day of the 5-minute row ``f`` (zone %(tz)s)."""
    if bucket == "1d":
        return daily_bucket("f.bucket", "%(tz)s")
    # minus the time past the local hour: distinct buckets for a repeated hour at a DST change
    return "f.bucket - ((f.bucket at time zone %(tz)s) - date_trunc('hour', f.bucket at time zone %(tz)s))"


def energy_query(*, bucket: Bucket, fleet: bool) -> sql.Composed:
    """Per local bucket: meters, Wh of each of :data:`FLOWS` (params tz, start, end, and meter_id
    unless ``fleet``). The fleet form reads each meter's rows by its primary key (``rollup_fold``
    lists every meter that has 5-minute rows), never the whole table."""
    five, fold = sql.Identifier(Tables.TELEMETRY_5M), sql.Identifier(Tables.ROLLUP_FOLD)
    rows = sql.SQL(
        "select f.* from {five} f where f.meter_id = %(meter_id)s"
        " and f.bucket >= %(start)s and f.bucket < %(end)s"
    ).format(five=five)
    if fleet:  # the closed and the open 5-minute table each by its primary key
        per_meter = five_minute_rows(
            "f5.meter_id = r.meter_id and f5.bucket >= %(start)s and f5.bucket < %(end)s"
        )
        rows = sql.SQL("select f.* from {fold} r cross join lateral {rows} f").format(
            fold=fold,
            rows=sql.SQL(per_meter),  # the catalogue's text: table names, no request value
        )
    return sql.SQL(
        """with f as ({rows}),
flows as (
  select f.meter_id, {local} as b, {imp} as imp, {exp} as exp, {sol} as sol,
    {home} + {smart} as load
  from f
)
select b, count(distinct meter_id), sum(imp), sum(exp), sum(sol), sum(load),
  sum(greatest(sol + imp - load - exp, 0)), sum(greatest(load + exp - sol - imp, 0))
from flows group by b order by b"""
    ).format(
        rows=rows,
        local=sql.SQL(local_bucket_sql(bucket)),
        **{k: sql.SQL(Tables.energy_wh_sql(sub, "f")) for k, sub in _FLOW_COLUMNS.items()},  # catalogue text
    )


def percent(part: float, whole: float) -> float | None:
    """``part / whole`` in %, clamped to 0-100; ``None`` when ``whole`` is not positive."""
    if whole <= 0:
        return None
    return min(100.0, max(0.0, 100.0 * part / whole))


def figures(wh: dict[str, float]) -> dict[str, Any]:
    """kWh of every flow plus the two percentages, from Wh per flow."""
    out: dict[str, Any] = {f"{name}_kwh": wh[name] / 1000 for name in FLOWS}
    out["self_consumption_pct"] = percent(wh["solar"] - wh["grid_export"], wh["solar"])
    out["self_sufficiency_pct"] = percent(wh["load"] - wh["grid_import"], wh["load"])
    return out


def summarise(rows: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of :func:`energy_query` as buckets (start, meters, figures) and the range's total."""
    buckets: list[dict[str, Any]] = []
    total = dict.fromkeys(FLOWS, 0.0)
    for start, meters, *values in rows:
        wh = {name: float(v or 0.0) for name, v in zip(FLOWS, values, strict=True)}
        for name in FLOWS:
            total[name] += wh[name]
        buckets.append({"start": start, "meters": int(meters), **figures(wh)})
    return buckets, figures(total)
