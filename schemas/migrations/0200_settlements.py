"""``settlements``: one row per billing period per meter (``POST /meters/{id}/settlements``).

Life of a row (see :mod:`enerlink.settlement.records`): ``requested`` while the ``settle`` command waits for
the meter's acknowledgement (deleted again on timeout or refusal), ``pending`` once the meter has
acknowledged (``period_end`` = the ack's datetime, the device's readings stored) and ``final`` once
the aggregator's watermark has passed ``period_end`` and the pipeline's energies are computed.

No period is lost or counted twice: ``seq`` numbers a meter's settlements 1, 2, 3 … (unique), each
period starts where the previous one ended, and at most one request per meter is in flight (partial
unique index). ``request_id`` (the ``Idempotency-Key``) is unique per meter, so a retried request
returns the recorded settlement instead of settling again.
"""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'create table "settlements" ( id bigserial primary key, meter_id text not null, seq integer not '
        "null check (seq > 0), request_id text not null, status text not null check (status in "
        "('requested', 'pending', 'final')), source text not null default 'api', period_start "
        "timestamptz, period_end timestamptz, requested_at timestamptz not null default now(), acked_at "
        "timestamptz, finalized_at timestamptz, import_wh double precision, export_wh double precision, "
        "net_wh double precision, minutes integer, device_import_wh double precision, device_export_wh "
        "double precision, diff_import_wh double precision, diff_export_wh double precision, "
        "tolerance_wh double precision, mismatch boolean, ack jsonb, unique (meter_id, seq), unique "
        "(meter_id, request_id), check (period_end is null or period_start is null or period_end >= "
        "period_start))"
    ),
    'create unique index "settlements_in_flight" on "settlements" (meter_id) where status = \'requested\'',
    "create index on \"settlements\" (status) where status <> 'final'",
)


def statements() -> list[str]:
    return list(STATEMENTS)
