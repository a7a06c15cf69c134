"""Per-meter sensor state the aggregator compares status messages with (for sensor events)."""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'create table "aggregator_event_state" ( meter_id text primary key, disconnected text[] not null '
        "default '{}', status_at timestamptz not null)"
    ),
)


def statements() -> list[str]:
    return list(STATEMENTS)
