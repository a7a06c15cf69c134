"""Per-meter sensor state the aggregator compares status messages with (for sensor events)."""

from __future__ import annotations

from aggregator.columns import quote
from schemas.wire import Tables


def statements() -> list[str]:
    return [
        f"create table {quote(Tables.AGGREGATOR_EVENT_STATE)} ("
        " meter_id text primary key, disconnected text[] not null default '{}',"
        " status_at timestamptz not null)"
    ]
