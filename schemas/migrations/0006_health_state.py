"""``aggregator_health_state``: per-meter state of the device-health events (aggregator/health.py).

``status_at`` is the newest status message the events have seen (older ones are not replayed),
``uptime_ms`` its uptime (a reboot is uptime going backwards), ``weak_since`` the first message of
the current run of weak-RSSI messages, ``reboots`` the reboot moments inside the reboot window, and
the ``*_raised`` / ``low_heap`` / ``silent`` flags say which events are raised and not yet cleared.
Sensor state stays in ``aggregator_event_state`` (shared with the latest-status sensor events).
"""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'create table "aggregator_health_state" ( meter_id text primary key, status_at timestamptz not '
        "null, uptime_ms bigint, weak_since timestamptz, weak_raised boolean not null default false, "
        "low_heap boolean not null default false, reboots timestamptz[] not null default '{}', "
        "reboots_raised boolean not null default false, silent boolean not null default false)"
    ),
)


def statements() -> list[str]:
    return list(STATEMENTS)
