"""Simulated readings stored in Redis the way the ingest keeps them, and the raw archive read back, for
the raw-archive tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql

from enerlink.archiver import raw_objects
from enerlink.archiver.raw_format import to_messages
from enerlink.archiver.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.fleet import generate
from enerlink.edge.sim.messages import data_messages
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Tables

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Stored:
    meter_id: str
    at_ms: int
    message: bytes


def every_part(keys: Keys, ms: int) -> dict[str, int]:
    """The same cutoff for every Redis part of ``keys`` (by key prefix, as the reader's clean-ups take it)."""
    return {part.prefix: ms for part in keys.each_part()}


def redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def simulate(meters: int, *, start_ms: int, seconds: int, interval_s: float = 10.0) -> list[Stored]:
    """A simulated fleet's data messages from ``start_ms`` for ``seconds``, with ``seq``."""
    sim = Simulator.create(generate(meters, seed=7))
    sim.step(start_ms / 1000 - interval_s)
    out = []
    for k in range(int(seconds / interval_s)):
        step = sim.step(start_ms / 1000 + k * interval_s)
        for message in data_messages(sim, step, seqs=[k + 1] * meters):
            at = start_ms + int(k * interval_s * 1000)
            out.append(Stored(message["meterId"], at, orjson.dumps(message)))
    return out


def store(client: redis.Redis, keys: Keys, readings: list[Stored], *, late: bool = False) -> None:
    """Into each meter's live (or late) sorted set, and the meters hash (last seen)."""
    pipe = client.pipeline(transaction=False)
    last: dict[str, int] = {}
    for r in readings:
        key = keys.late_data(r.meter_id) if late else keys.timeseries(r.meter_id)
        pipe.zadd(key, {encode_snapshot(r.message): r.at_ms})
        last[r.meter_id] = max(last.get(r.meter_id, 0), r.at_ms)
    for meter, at in last.items():
        pipe.hset(keys.meters, meter, str(max(at, redis_now_ms(client) - 1000)))
    pipe.execute()


def flag_late(client: redis.Redis, keys: Keys, reading: Stored, *, at_ms: int) -> None:
    """What the ingest adds for a reading stored after its minute ended."""
    minute = reading.at_ms // 60_000 * 60_000
    client.zadd(keys.late_minutes, {Keys.late_member(reading.meter_id, minute): at_ms})


def previous_hour(client: redis.Redis) -> int:
    return redis_now_ms(client) // HOUR_MS * HOUR_MS - HOUR_MS


def raw_manifest(url: str) -> list[dict[str, Any]]:
    """The raw archive's manifest rows, in the order of their objects."""
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        query = sql.SQL("select * from {} order by day, grp, hour, part")
        return cur.execute(query.format(sql.Identifier(Tables.RAW_MANIFEST))).fetchall()


def archived_readings(settings: Settings, rows: list[dict[str, Any]]) -> list[tuple[str, int, Any]]:
    """Every reading of the manifest ``rows`` as (meter, ms, message dict), read back from the store."""
    store = open_store(settings.storage)
    out = []
    for row in rows:
        for meter, ms, message in to_messages(raw_objects.load(store, row)):
            out.append((meter, ms, orjson.loads(message)))
    return out
