"""Sensor events from the status messages' inventories (``ina219[]``, ``max17048[]``).

Each job reads ``latest_status`` once. Only meters whose newest status reports a disconnected
sensor, or which had one disconnected before (state in ``Tables.AGGREGATOR_EVENT_STATE``), are
parsed (validated with ``StatusMessage``), and of those only meters without a status series in
Redis: a series is read message by message by the device-health step (healthjob.py), which keeps
the same state, so a short disconnection between two jobs is not missed. A sensor newly reported
disconnected raises ``sensor_disconnected`` (warning), one back raises ``sensor_reconnected``
(info), stamped with the status message's time. (The battery gauge is also watched minute by
minute in the data messages.)
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import ValidationError

from enerlink import redis_parts as parts
from enerlink.aggregator.compute import ms_to_dt
from enerlink.aggregator.reader import read_events
from enerlink.aggregator.store import Conn, read_position, stream_row, write_position
from enerlink.db import quote
from enerlink.events import Event, insert_events
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.telemetry import StatusMessage
from enerlink.schemas.wire import Keys, Tables
from enerlink.shards import Shard

log = logging.getLogger(__name__)

_DISCONNECTED = re.compile(rb'"connected"\s*:\s*false')


def _sensor_key(bus: str, address: str, name: str) -> str:
    return f"{bus}:{address}:{name}"


async def sensor_events(conn: Conn, redis: AsyncRedis, keys: Keys, shard: Shard = Shard.WHOLE) -> list[Event]:
    """Compare the newest status of each meter (of ``shard``) with the stored state; update it;
    return events."""
    table = quote(Tables.AGGREGATOR_EVENT_STATE)
    cur = await conn.execute(
        f"select meter_id, disconnected, status_at from {table} where {shard.sql_filter('meter_id')}".encode()
    )
    state: dict[str, tuple[set[str], Any]] = {r[0]: (set(r[1]), r[2]) for r in await cur.fetchall()}
    latest = await parts.hgetall(redis, keys, lambda k: k.latest_status)
    events: list[Event] = []
    updates: list[tuple[str, list[str], Any]] = []
    candidates = {
        raw_meter.decode(): raw
        for raw_meter, raw in latest.items()
        if shard.owns(raw_meter.decode())
        and (state.get(raw_meter.decode(), (set(), None))[0] or _DISCONNECTED.search(raw))
    }
    pipe = redis.pipeline(transaction=False)
    for meter in candidates:
        pipe.exists(keys.of(meter).status_timeseries(meter))
    has_series = dict(zip(candidates, await pipe.execute(), strict=True)) if candidates else {}
    for meter, raw in candidates.items():
        if has_series[meter]:
            continue
        before, seen_at = state.get(meter, (set(), None))
        try:
            status = StatusMessage.model_validate_json(raw)
        except ValidationError:
            continue
        if status.meterId != meter or (seen_at is not None and status.datetime <= seen_at):
            continue
        now: dict[str, tuple[str, str, str]] = {}
        for bus, entries in (
            ("ina219", status.data.sensors.ina219),
            ("max17048", status.data.sensors.max17048),
        ):
            for entry in entries:
                if not entry.connected:
                    now[_sensor_key(bus, entry.address, entry.name)] = (bus, entry.address, entry.name)
        for key in sorted(set(now) - before):
            bus, address, name = now[key]
            details = {"bus": bus, "address": address, "sensor": name}
            events.append(Event(meter, status.datetime, "sensor_disconnected", "warning", details))
        for key in sorted(before - set(now)):
            bus, address, name = key.split(":", 2)
            details = {"bus": bus, "address": address, "sensor": name}
            events.append(Event(meter, status.datetime, "sensor_reconnected", "info", details))
        updates.append((meter, sorted(now), status.datetime))
    if updates:
        async with conn.cursor() as c:
            await c.executemany(
                f"insert into {table} (meter_id, disconnected, status_at) values (%s, %s, %s)"
                " on conflict (meter_id) do update set disconnected = excluded.disconnected,"
                " status_at = excluded.status_at".encode(),
                updates,
            )
    return events


def stream_event(fields: dict[str, str]) -> Event | None:
    """An ingest presence event (meter_id, kind online|offline, at ms, details payload)."""
    try:
        kind = fields["kind"]
        at = ms_to_dt(int(float(fields["at"])))
        meter = fields["meter_id"]
    except (KeyError, ValueError):
        log.warning("events stream: unusable entry %r skipped", fields)
        return None
    raw = fields.get("details", "")
    try:
        details: Any = json.loads(raw) if raw else {}
    except ValueError:
        details = {"payload": raw}
    if not isinstance(details, dict):
        details = {"payload": details}
    severity = "warning" if kind == "offline" else "info"
    return Event(meter, at, f"meter_{kind}", severity, details)


async def copy_stream(conn: Conn, redis: AsyncRedis, keys: Keys) -> int:
    """The ingest's online/offline stream (``keys.events``) from the stored position on into the
    events table, a batch a transaction with the new position; returns the events inserted."""
    total = 0
    for index, part in enumerate(keys.each_part()):
        row = stream_row(index if keys.parts else None)
        async with conn.transaction():
            position = await read_position(conn, row)
        while True:
            entries = await read_events(redis, part, position)
            if not entries:
                break
            parsed = [stream_event(fields) for _, fields in entries]
            async with conn.transaction():
                total += await insert_events(conn, [e for e in parsed if e is not None])
                position = entries[-1][0]
                await write_position(conn, position, row)
    return total
