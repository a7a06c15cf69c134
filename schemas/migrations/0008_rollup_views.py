"""Hourly and daily rollups become views over folded tables (aggregator/fold.py).

Every job rewrote each meter's open 5-minute, hourly and daily row: three wide rows per meter and
minute, most of a minute's PostgreSQL work. The hourly and daily tables are renamed ``..._folded``
and the old names become views that add the 5-minute rows not folded yet, so readers see the same
rows as before; the aggregator now folds a fifth of the fleet's complete 5-minute rows per minute.

Existing rows hold every minute aggregated so far, so each meter's ``folded_until`` starts at the
end of its newest 5-minute bucket (minutes still to come in that bucket are merged into the folded
rows too: rows inside the folded range always are). The daily view's zone is recorded by the
aggregator at each job (``ENERLINK_TIMEZONE``); UTC until then.
"""

from __future__ import annotations

from aggregator import fold
from aggregator.columns import quote
from schemas.wire import Tables

FILLFACTOR = 50  # as the rollup tables (migration 0007): the fold row is updated every 5 minutes


def statements() -> list[str]:
    out = []
    for view, (folded, _) in fold.LEVELS.items():
        out += [
            f"alter table {quote(view)} rename to {quote(folded)}",
            f"alter index {quote(view + '_pkey')} rename to {quote(folded + '_pkey')}",
        ]
    fold_table, five = quote(Tables.ROLLUP_FOLD), quote(Tables.TELEMETRY_5M)
    out += [
        f"create table {fold_table} (meter_id text primary key, phase smallint not null,"
        f" folded_until timestamptz not null) with (fillfactor = {FILLFACTOR})",
        f"insert into {fold_table} (meter_id, phase, folded_until)"
        f" select meter_id, {fold.phase_sql('meter_id')}, max(bucket) + interval '5 minutes'"
        f" from {five} group by meter_id",
        f"create table {quote(Tables.ROLLUP_STATE)} (id boolean primary key default true check (id),"
        " timezone text not null)",
        f"insert into {quote(Tables.ROLLUP_STATE)} (id, timezone) values (true, 'UTC')",
    ]
    out += [fold.view_sql(view) for view in fold.LEVELS]
    return out
