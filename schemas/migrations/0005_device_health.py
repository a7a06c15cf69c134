"""``device_health_aggregates``: per-meter minute aggregates of status messages (device health).

Filled by the aggregator from the status time series in Redis; read by ``GET /meters/{id}/health``.
``reboots`` counts the times ``uptime`` went backwards against the meter's previous status message;
``sensors_connected_min`` counts INA219 and MAX17048 entries with ``connected = true``.
"""

from __future__ import annotations

# Fixed SQL: this migration creates exactly this, on every database, for ever.
STATEMENTS: tuple[str, ...] = (
    (
        'create table "device_health_aggregates" ( meter_id text not null, minute timestamptz not null, '
        "sample_count integer not null, rssi_avg double precision, rssi_min double precision, "
        "wifi_disconnected_ratio double precision, mqtt_disconnected_ratio double precision, "
        "mqtt_attempts_max integer, free_heap_min bigint, reboots integer not null default 0, "
        "sensors_connected_min integer, sensors_total integer, uptime_last_ms bigint, primary key "
        "(meter_id, minute))"
    ),
    'create index on "device_health_aggregates" (minute)',
)


def statements() -> list[str]:
    return list(STATEMENTS)
