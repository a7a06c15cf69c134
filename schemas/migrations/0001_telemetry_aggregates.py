"""``telemetry_aggregates``: one row per meter per minute, range-partitioned by month on ``bucket``.

Columns come from :mod:`aggregator.columns` (derived from schemas.fields). Partitions are UTC
calendar months named ``Tables.month_partition(table, y, m)``; the SQL function
``Tables.ENSURE_MONTH_PARTITION(parent, at)`` creates the one holding ``at`` when missing (the
aggregator calls it ahead of time for the coming months and for every month it writes; anyone
inserting old rows, e.g. tests, calls it first). This migration creates the previous month, the
current one and the next three.
"""

from __future__ import annotations

from aggregator.columns import column_ddl, quote
from schemas.wire import Tables


def statements() -> list[str]:
    table = quote(Tables.TELEMETRY_AGGREGATES)
    fn = quote(Tables.ENSURE_MONTH_PARTITION)
    columns = ",\n  ".join(column_ddl())
    return [
        f"create table {table} (\n  {columns},\n  primary key (meter_id, bucket)\n)"
        " partition by range (bucket)",
        f"""
create or replace function {fn}(parent text, at timestamptz) returns text
language plpgsql as $fn$
declare
  month_start timestamp := date_trunc('month', at at time zone 'UTC');
  part text := format('%s_p%s', parent, to_char(month_start, 'YYYYMM'));
begin
  if to_regclass(quote_ident(part)) is null then
    begin
      execute format(
        'create table if not exists %I partition of %I for values from (%L) to (%L)',
        part, parent,
        (month_start at time zone 'UTC'),
        ((month_start + interval '1 month') at time zone 'UTC'));
    exception when duplicate_table or unique_violation then
      null;  -- another session created it a moment ago
    end;
  end if;
  return part;
end
$fn$""",
        f"select {fn}('{Tables.TELEMETRY_AGGREGATES}', m)"
        " from generate_series(date_trunc('month', now()) - interval '1 month',"
        " date_trunc('month', now()) + interval '3 months', interval '1 month') as m",
    ]
