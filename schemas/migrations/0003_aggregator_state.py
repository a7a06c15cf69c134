"""The aggregator's watermark (last fully aggregated minute, events stream position) and ``events``."""

from __future__ import annotations

from aggregator.columns import quote
from schemas.wire import Tables


def statements() -> list[str]:
    events = quote(Tables.EVENTS)
    return [
        f"create table {quote(Tables.AGGREGATOR_WATERMARK)} ("
        " name text primary key, minute timestamptz, position text,"
        " updated_at timestamptz not null default now())",
        f"create table {events} ("
        " id bigserial primary key, meter_id text not null, at timestamptz not null,"
        " kind text not null, severity text not null, details jsonb not null default '{}',"
        " unique (meter_id, kind, at))",
        f"create index on {events} (at)",
    ]
