"""The aggregator's watermark (last fully aggregated minute, events stream position) and ``events``."""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'create table "aggregator_watermark" ( name text primary key, minute timestamptz, position text, '
        "updated_at timestamptz not null default now())"
    ),
    (
        'create table "events" ( id bigserial primary key, meter_id text not null, at timestamptz not '
        "null, kind text not null, severity text not null, details jsonb not null default '{}', unique "
        "(meter_id, kind, at))"
    ),
    'create index on "events" (at)',
)


def statements() -> list[str]:
    return list(STATEMENTS)
