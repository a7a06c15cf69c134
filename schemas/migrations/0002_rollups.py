"""Rollup tables ``telemetry_aggregates_5m``, ``_1h`` and ``_1d``: the minute table's columns over a
longer bucket (sample-weighted avg and ratios, min of mins, max of maxes, summed energy, last values
of the bucket's last minute). ``_1d`` buckets start at local midnight of ``ENERLINK_TIMEZONE``."""

from __future__ import annotations

from aggregator.columns import column_ddl, quote
from schemas.wire import Tables


def statements() -> list[str]:
    columns = ",\n  ".join(column_ddl())
    return [
        f"create table {quote(t)} (\n  {columns},\n  primary key (meter_id, bucket)\n)"
        for t in (Tables.TELEMETRY_5M, Tables.TELEMETRY_1H, Tables.TELEMETRY_1D)
    ]
