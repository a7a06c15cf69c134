"""The device-health step of an aggregation job: Redis status series -> PostgreSQL.

It keeps a watermark of its own (``health_minutes`` in ``Tables.AGGREGATOR_WATERMARK``), so it
catches up, oldest first and within the Redis retention, exactly like the data minutes, and a
kill -9 at any point redoes at most the window it was writing. Per window of up to
:data:`WINDOW_MINUTES` closed minutes, one transaction holds the minute rows (COPY to a staging
table, one upsert), the events, the meters' event state and the watermark.

Which meters: those in ``latest_status_at`` whose newest status is not older than the window (the
others have nothing in it). One Lua call per chunk of :data:`READ_CHUNK` meters returns each one's
messages in the window and its last message before the window (the reboot baseline).

Late status: the ingest keeps no late index for status messages (unlike data), so a status message
stored after its minute was aggregated is not re-aggregated, and the events never go back in time
(they take messages newer than the state's ``status_at``). Status is aggregated on the live window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from enerlink import redis_parts as parts
from enerlink.aggregator import health, store
from enerlink.aggregator.compute import MINUTE_MS, ms_to_dt
from enerlink.aggregator.fastparse import BadSnapshot
from enerlink.aggregator.settings import Settings
from enerlink.db import quote
from enerlink.events import Event, insert_events
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.wire import Keys, Tables
from enerlink.shards import Shard
from enerlink.watermark import advance, read_named

log = logging.getLogger(__name__)

WINDOW_MINUTES = 10
WATERMARK = "health_minutes"


@dataclass(slots=True)
class HealthReport:
    minutes: int = 0
    rows: int = 0
    bad: int = 0
    events: int = 0
    seconds: float = 0.0


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_dt(ms)


async def _load_states(conn: store.Conn, shard: Shard) -> dict[str, health.State]:
    states: dict[str, health.State] = {}
    cur = await conn.execute(
        f"select meter_id, status_at, uptime_ms, weak_since, weak_raised, low_heap, reboots,"
        f" reboots_raised, silent from {quote(Tables.AGGREGATOR_HEALTH_STATE)}"
        f" where {shard.sql_filter('meter_id')}".encode()
    )
    for meter, at, uptime, weak, weak_raised, low, reboots, raised, silent in await cur.fetchall():
        states[meter] = health.State(
            status_at_ms=_ms(at),
            uptime_ms=uptime,
            weak_since_ms=_ms(weak),
            weak_raised=weak_raised,
            low_heap=low,
            reboots=[int(r.timestamp() * 1000) for r in reboots],
            reboots_raised=raised,
            silent=silent,
        )
    cur = await conn.execute(
        f"select meter_id, disconnected, status_at from {quote(Tables.AGGREGATOR_EVENT_STATE)}"
        f" where {shard.sql_filter('meter_id')}".encode()
    )
    for meter, disconnected, at in await cur.fetchall():
        state = states.setdefault(meter, health.State())
        state.disconnected, state.sensors_at_ms = set(disconnected), _ms(at)
    return states


async def _copy_upsert(
    conn: store.Conn,
    *,
    table: str,
    columns: Sequence[str],
    key: Sequence[str] = ("meter_id",),
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """COPY ``rows`` into a temporary copy of ``table``, then one upsert on ``key``."""
    temp = f"_enerlink_tmp_{table}"
    await conn.execute(
        sql.SQL("create temp table if not exists {} (like {}) on commit delete rows").format(
            sql.Identifier(temp), sql.Identifier(table)
        )
    )
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    async with conn.cursor().copy(
        sql.SQL("copy {} ({}) from stdin").format(sql.Identifier(temp), cols)
    ) as copy:
        for row in rows:
            await copy.write_row(row)
    sets = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in columns
        if c not in key
    )
    conflict = sql.SQL(", ").join(map(sql.Identifier, key))
    await conn.execute(
        sql.SQL("insert into {} ({}) select {} from {} on conflict ({}) do update set {}").format(
            sql.Identifier(table), cols, cols, sql.Identifier(temp), conflict, sets
        )
    )


async def _write_states(conn: store.Conn, states: dict[str, health.State]) -> None:
    rows, sensors = [], []
    for meter, s in states.items():
        if s.changed and s.status_at_ms is not None:
            rows.append(
                (
                    meter,
                    _dt(s.status_at_ms),
                    s.uptime_ms,
                    _dt(s.weak_since_ms),
                    s.weak_raised,
                    s.low_heap,
                    [ms_to_dt(t) for t in s.reboots],
                    s.reboots_raised,
                    s.silent,
                )
            )
        if s.sensors_changed and s.sensors_at_ms is not None:
            sensors.append((meter, sorted(s.disconnected), _dt(s.sensors_at_ms)))
    if rows:
        await _copy_upsert(
            conn,
            table=Tables.AGGREGATOR_HEALTH_STATE,
            columns=(
                "meter_id",
                "status_at",
                "uptime_ms",
                "weak_since",
                "weak_raised",
                "low_heap",
                "reboots",
                "reboots_raised",
                "silent",
            ),
            rows=rows,
        )
    if sensors:
        await _copy_upsert(
            conn,
            table=Tables.AGGREGATOR_EVENT_STATE,
            columns=("meter_id", "disconnected", "status_at"),
            rows=sensors,
        )


def _settled(states: dict[str, health.State]) -> None:
    for s in states.values():
        s.changed = s.sensors_changed = False


# KEYS: status series of each meter; ARGV: window start, window end (inclusive, ms). Per meter:
# {members in the window, the last member before it (or none)}. One script call per chunk of meters:
# status messages are few per meter, and the asyncio client's cost per command was the larger part.
_READ_STATUS = """
local out = {}
for i = 1, #KEYS do
  local msgs = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[1], ARGV[2])
  local base = redis.call('ZREVRANGEBYSCORE', KEYS[i], '(' .. ARGV[1], '-inf', 'LIMIT', 0, 1)
  out[i] = {msgs, base}
end
return out
"""
READ_CHUNK = 1000


async def _read(
    r: AsyncRedis, keys: Keys, meters: Sequence[str], lo: int, hi: int
) -> list[tuple[list[Any], list[Any]]]:
    """Per meter: the window's messages and the last one before it."""
    script = r.register_script(_READ_STATUS)
    found: dict[str, tuple[list[Any], list[Any]]] = {}
    for part, group in parts.by_part(keys, meters):
        calls = [
            ([part.status_timeseries(m) for m in group[i : i + READ_CHUNK]], [lo, hi])
            for i in range(0, len(group), READ_CHUNK)
        ]
        replies = await parts.run_scripts(r, script, calls)
        pairs = [(msgs, base) for reply in replies for msgs, base in reply]
        found.update(zip(group, pairs, strict=True))
    return [found[m] for m in meters]


def _statuses(meter: str, raws: list[Any], report: HealthReport) -> list[health.Status]:
    """Parse the messages (sorted by time); bad ones counted and skipped, one per moment."""
    out: list[health.Status] = []
    seen: set[int] = set()
    for raw in raws:
        try:
            status = health.parse_status(raw, meter)
        except BadSnapshot as exc:
            report.bad += 1
            log.debug("meter %s: status skipped: %s", meter, exc)
            continue
        if status.at_ms not in seen:
            seen.add(status.at_ms)
            out.append(status)
    return out


class HealthStep:
    """Runs inside the aggregator's job, under its advisory lock, beside the data minutes on a
    connection of its own (its tables are its own; events are unique per meter, kind and time)."""

    def __init__(self, settings: Settings, redis: AsyncRedis) -> None:
        self.settings = settings
        self.redis = redis
        self.keys: Keys = settings.common.keys
        self.limits = settings.health

    async def run(
        self, conn: store.Conn, *, t0: int, closed_end: int, shard: Shard = Shard.WHOLE
    ) -> HealthReport:
        """The closed minutes after ``shard``'s health watermark, for its meters."""
        began = time.monotonic()
        report = HealthReport()
        raw = await parts.hgetall(self.redis, self.keys, lambda k: k.latest_status_at)
        latest = {k.decode(): int(float(v)) for k, v in raw.items() if shard.owns(k.decode())}
        oldest = (t0 - self.settings.retention_s * 1000 + MINUTE_MS - 1) // MINUTE_MS * MINUTE_MS
        watermark = await read_named(conn, shard.row_name(WATERMARK), fallback=WATERMARK)
        start = oldest if watermark is None else int(watermark.timestamp() * 1000) + MINUTE_MS
        start = max(start, oldest)
        states = await _load_states(conn, shard)
        window = start
        while window < closed_end:
            end = min(window + WINDOW_MINUTES * MINUTE_MS, closed_end)
            await self._window(conn, states, latest, lo=window, end=end, report=report, shard=shard)
            report.minutes += (end - window) // MINUTE_MS
            window = end
        found: list[Event] = []
        for meter, at in latest.items():
            state = states.setdefault(meter, health.State())
            health.silence(meter, state, latest_ms=at, now_ms=t0, limits=self.limits, out=found)
        async with conn.transaction():
            report.events += await insert_events(conn, found)
            await _write_states(conn, states)
        _settled(states)
        report.seconds = time.monotonic() - began
        log.info(
            "health%s: %d minutes, %d rows, %d bad status messages, %d events in %.2f s",
            shard.label,
            report.minutes,
            report.rows,
            report.bad,
            report.events,
            report.seconds,
        )
        return report

    async def _window(
        self,
        conn: store.Conn,
        states: dict[str, health.State],
        latest: dict[str, int],
        *,
        lo: int,
        end: int,
        report: HealthReport,
        shard: Shard,
    ) -> None:
        meters = sorted(m for m, at in latest.items() if at >= lo)
        replies = await self._read(meters, lo, end - 1) if meters else []
        # decoding in a thread: the event loop meanwhile goes on writing the data minute's parts
        rows, found = await asyncio.to_thread(self._compute, meters, replies, states, report)
        async with conn.transaction():
            if rows:
                await _copy_upsert(
                    conn,
                    table=Tables.DEVICE_HEALTH,
                    columns=health.COLUMNS,
                    key=("meter_id", "minute"),
                    rows=rows,
                )
            report.events += await insert_events(conn, found)
            await _write_states(conn, states)
            await advance(conn, shard.row_name(WATERMARK), ms_to_dt(end - MINUTE_MS))
        _settled(states)
        report.rows += len(rows)

    def _compute(
        self,
        meters: Sequence[str],
        replies: Sequence[tuple[list[Any], list[Any]]],
        states: dict[str, health.State],
        report: HealthReport,
    ) -> tuple[list[tuple[Any, ...]], list[Event]]:
        """A window's minute rows and events from each meter's messages; advances ``states``."""
        rows: list[tuple[Any, ...]] = []
        found: list[Event] = []
        for meter, (msgs, base) in zip(meters, replies, strict=True):
            statuses = _statuses(meter, msgs, report)
            if not statuses:
                continue
            baseline = next(iter(_statuses(meter, base, HealthReport())), None)
            rows.extend(health.minute_rows(meter, statuses, baseline))
            state = states.setdefault(meter, health.State())
            if baseline is not None and (state.status_at_ms is None or baseline.at_ms > state.status_at_ms):
                state.uptime_ms = baseline.uptime  # the stored position lags: a reboot since counts
            health.advance(meter, state, statuses, limits=self.limits, out=found)
        return rows, found

    async def _read(self, meters: Sequence[str], lo: int, hi: int) -> list[tuple[list[Any], list[Any]]]:
        return await _read(self.redis, self.keys, meters, lo, hi)
