"""Redis side of a job: one pipelined round trip per batch, and the Lua scripts that clean up.

A (meter, minute) item's snapshots are the members of ``timeseries(meter)`` and ``late_data(meter)``
with scores inside the minute; its baseline (for counter deltas) is the newest member of either
key before the minute (the live one when both have the same score); its repaired count the members
of ``repaired(meter)`` inside the minute (read only for meters that have that key).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis

from enerlink import redis_parts as parts
from enerlink.aggregator.compute import MINUTE_MS, Item
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.wire import Keys

Redis = AsyncRedis

# Remove each given late-minute member only if its score is still <= T0 (a newer flag survives).
_REMOVE_IF_NOT_NEWER = """
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) <= tonumber(ARGV[1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n
"""

# For each key: drop members scored below ARGV[1] but always keep the newest (the next baseline).
_TRIM_KEEP_NEWEST = """
local n = 0
for i = 1, #KEYS do
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if #last > 0 then
    local cut = math.min(tonumber(ARGV[1]), tonumber(last[2]))
    n = n + redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. string.format('%d', cut))
  end
end
return n
"""

# late_done entries scored up to ARGV[1] whose pair is not flagged again: delete that minute of
# late data (ARGV[2] is the late-data key prefix), then the entry; entries of minutes from ARGV[3]
# on (not in the raw archive yet) stay.
_DROP_DONE_LATE = """
local done = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = 0
for _, member in ipairs(done) do
  local sep = string.find(member, '|[^|]*$')
  local meter, minute = string.sub(member, 1, sep - 1), tonumber(string.sub(member, sep + 1))
  if minute < tonumber(ARGV[3]) then
    if not redis.call('ZSCORE', KEYS[2], member) then
      n = n + redis.call('ZREMRANGEBYSCORE', ARGV[2] .. meter, minute, minute + 59999)
    end
    redis.call('ZREM', KEYS[1], member)
  end
end
return n
"""


async def redis_time_ms(r: Redis) -> int:
    seconds, micros = await r.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def meters(r: Redis, keys: Keys) -> dict[str, int]:
    """meterId -> last seen (epoch ms) from the ingest's meters hash."""
    raw = await parts.hgetall(r, keys, lambda k: k.meters)
    return {k.decode(): int(float(v)) for k, v in raw.items()}


# KEYS: timeseries, late-data and repaired key of each item, ARGV: each item's minute start (ms).
# Returns per item {snapshots..., baseline-or-false, repaired count}: one EVALSHA per chunk instead
# of five commands per item.
_READ_ITEMS = """
local out = {}
for i = 1, #ARGV do
  local lo = tonumber(ARGV[i])
  local hi = lo + 59999
  local live, late = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local snaps = redis.call('ZRANGEBYSCORE', live, lo, hi)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', late, lo, hi)) do snaps[#snaps + 1] = m end
  local a = redis.call('ZREVRANGEBYSCORE', live, '(' .. ARGV[i], '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local b = redis.call('ZREVRANGEBYSCORE', late, '(' .. ARGV[i], '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local base = false
  if #a > 0 and (#b == 0 or tonumber(a[2]) >= tonumber(b[2])) then base = a[1]
  elseif #b > 0 then base = b[1] end
  out[i] = {snaps, base, redis.call('ZCOUNT', KEYS[3 * i], lo, hi)}
end
return out
"""

# The given keys that exist (KEYS: one chunk of meters' repaired keys).
_EXISTING = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then out[#out + 1] = KEYS[i] end
end
return out
"""
READ_CHUNK = 500


async def read_items(r: Redis, keys: Keys, pairs: Sequence[tuple[str, int]]) -> list[Item]:
    """Snapshots and baseline of every (meter, minute) pair, in this process: one script call per
    chunk of :data:`READ_CHUNK` items (the asyncio client's cost per command is high)."""
    script = r.register_script(_READ_ITEMS)
    found: dict[tuple[str, int], Item] = {}
    for part, group in parts.by_part(keys, pairs, lambda pair: pair[0]):
        calls = []
        for i in range(0, len(group), READ_CHUNK):
            chunk = group[i : i + READ_CHUNK]
            chunk_keys = [
                k
                for meter, _ in chunk
                for k in (part.timeseries(meter), part.late_data(meter), part.repaired(meter))
            ]
            calls.append((chunk_keys, [minute for _, minute in chunk]))
        flat = [entry for reply in await parts.run_scripts(r, script, calls) for entry in reply]
        for (meter, minute), (snapshots, baseline, repaired) in zip(group, flat, strict=True):
            found[(meter, minute)] = Item(meter, minute, snapshots, baseline or None, int(repaired))
    return [found[pair] for pair in pairs]


async def repaired_meters(r: Redis, keys: Keys, meter_ids: Sequence[str]) -> frozenset[str]:
    """The meters with a ``repaired`` key (readings stored from ``Topics.resent`` in the live window):
    only their minutes read it. One script call per 1,000 meters."""
    found: set[str] = set()
    for part, group in parts.by_part(keys, meter_ids):
        prefix = len(part.repaired(""))
        for i in range(0, len(group), 1000):
            chunk = [part.repaired(m) for m in group[i : i + 1000]]
            existing: list[bytes] = await r.eval(_EXISTING, len(chunk), *chunk)
            found.update(k.decode()[prefix:] for k in existing)
    return frozenset(found)


async def late_meters(r: Redis, keys: Keys) -> frozenset[str]:
    """Every meter that may hold late data: those with a minute in ``late_minutes`` or
    ``late_done``. The ingest flags the minute of every late data message it stores (in the same
    script; a message older than the live window is always in a closed minute, the window being at
    least a minute), the flag moves to ``late_done`` when re-aggregated, and a minute's late data is
    deleted together with its ``late_done`` entry. A message stored after this read is flagged, so
    the next job's late pass takes it, as it would one stored after the snapshots were read."""
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.zrange(part.late_minutes, 0, -1)
        pipe.zrange(part.late_done, 0, -1)
    return frozenset(Keys.parse_late_member(m.decode())[0] for reply in await pipe.execute() for m in reply)


def read_items_sync(
    r: redis.Redis | redis.RedisCluster,
    keys: Keys,
    pairs: Sequence[tuple[str, int]],
    *,
    late: Collection[str] | None = None,
    repaired: Collection[str] | None = None,
) -> list[Item]:
    """The same for worker processes (a plain blocking client): per item the in-minute members of
    the live key and its newest member before the minute, the same of the late key for the
    meters in ``late`` (None: every meter; see :func:`late_meters`), and the in-minute count of the
    repaired key for the meters in ``repaired`` (None: every meter; see :func:`repaired_meters`).
    Plain pipelined commands are cheaper for the single-threaded server than the script, which
    copies every member into Lua and back: with several workers reading at once, the server is the
    serial part.

    The commands are packed by hiredis and sent in one write, and the raw replies read back on one
    pooled connection: redis-py's pipeline object (a Python object per command, response callbacks)
    cost twice the rest of the read."""
    commands: list[tuple[str | int, ...]] = []
    with_late = [late is None or meter in late for meter, _ in pairs]
    with_repaired = [repaired is None or meter in repaired for meter, _ in pairs]
    for (meter, minute), also_late, also_repaired in zip(pairs, with_late, with_repaired, strict=True):
        hi, before = minute + MINUTE_MS - 1, f"({minute}"
        part = keys.of(meter)
        if also_repaired:
            commands.append(("ZCOUNT", part.repaired(meter), minute, hi))
        series = (part.timeseries(meter), part.late_data(meter)) if also_late else (part.timeseries(meter),)
        for key in series:
            commands += (
                ("ZRANGEBYSCORE", key, minute, hi),
                ("ZREVRANGEBYSCORE", key, before, "-inf", "WITHSCORES", "LIMIT", 0, 1),
            )
    replies = iter(_roundtrip(r, commands))
    out = []
    for (meter, minute), also_late, also_repaired in zip(pairs, with_late, with_repaired, strict=True):
        count = int(next(replies)) if also_repaired else 0
        live_m, base_live = next(replies), next(replies)
        late_m, base_late = (next(replies), next(replies)) if also_late else ([], None)
        a, b = _newest(base_live), _newest(base_late)
        baseline = None
        if a is not None and (b is None or a[1] >= b[1]):
            baseline = a[0]
        elif b is not None:
            baseline = b[0]
        out.append(Item(meter, minute, live_m + late_m if late_m else live_m, baseline, count))
    return out


def _roundtrip(r: redis.Redis | redis.RedisCluster, commands: list[tuple[str | int, ...]]) -> list[Any]:
    """Send the commands packed in one write, read every reply (an error reply raises). A connection
    left mid-reply is closed, never returned to the pool in that state. A cluster client pipelines
    them instead (one write per node), with no reply callbacks: the same raw replies."""
    if isinstance(r, redis.RedisCluster):
        pipe = r.pipeline(transaction=False)  # type: ignore[no-untyped-call]
        for command in commands:
            pipe.execute_command(*command)
        found: list[Any] = pipe.execute()
        return found
    packed = [_pack(command) for command in commands]
    pool = r.connection_pool
    conn: Any = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(packed)])
        replies = [conn.read_response(disable_decoding=True) for _ in packed]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies


def _pack(args: tuple[str | int, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # the stub allows 1-tuples only
    return packed


def _newest(reply: Any) -> tuple[bytes, float] | None:
    """(member, score) of a ``WITHSCORES LIMIT 0 1`` reply: flat in RESP2, a pair in RESP3."""
    if not reply:
        return None
    if isinstance(reply[0], list):
        reply = reply[0]
    return reply[0], float(reply[1])


async def earliest_ms(r: Redis, keys: Keys, meter_ids: Sequence[str]) -> int | None:
    pipe = r.pipeline(transaction=False)
    for meter in meter_ids:
        pipe.zrange(keys.of(meter).timeseries(meter), 0, 0, withscores=True)
    found = [int(reply[0][1]) for reply in await pipe.execute() if reply]
    return min(found) if found else None


async def next_minutes(r: Redis, keys: Keys, pairs: Sequence[tuple[str, int]]) -> list[int | None]:
    """For each (meter, minute): the next minute holding a snapshot of that meter (its baseline changes)."""
    pipe = r.pipeline(transaction=False)
    for meter, minute in pairs:
        part = keys.of(meter)
        for key in (part.timeseries(meter), part.late_data(meter)):
            pipe.zrangebyscore(key, minute + MINUTE_MS, "+inf", start=0, num=1, withscores=True)
    replies: list[Any] = await pipe.execute()
    out: list[int | None] = []
    for i in range(len(pairs)):
        scores = [int(rep[0][1]) for rep in replies[2 * i : 2 * i + 2] if rep]
        out.append(min(scores) // MINUTE_MS * MINUTE_MS if scores else None)
    return out


async def held_counts(r: Redis, keys: Keys, pairs: Sequence[tuple[str, int]]) -> list[tuple[int, int | None]]:
    """For each (meter, minute): how many snapshots of that minute Redis holds (live and late), and the
    time (epoch ms) of the newest it holds before the minute (the counter baseline), if any."""
    pipe = r.pipeline(transaction=False)
    for meter, minute in pairs:
        part = keys.of(meter)
        for key in (part.timeseries(meter), part.late_data(meter)):
            pipe.zcount(key, minute, f"({minute + MINUTE_MS}")
            pipe.zrevrangebyscore(key, f"({minute}", "-inf", start=0, num=1, withscores=True)
    replies: list[Any] = await pipe.execute()
    out: list[tuple[int, int | None]] = []
    for i in range(len(pairs)):
        live, live_before, late, late_before = replies[4 * i : 4 * i + 4]
        before = [int(score) for found in (live_before, late_before) for _, score in found]
        out.append((int(live) + int(late), max(before) if before else None))
    return out


def _meter_of_flag(member: str) -> str:
    return Keys.parse_late_member(member)[0]


async def part_clocks(r: Redis, keys: Keys, t0_ms: int) -> dict[str, int]:
    """Each part's T0, by the part's key prefix: on a Redis Cluster the clock of the part's master now
    (its late flags are scored by that clock), on one server ``t0_ms``. Read at a job's start, before
    any snapshot: a flag scored up to it was raised before the job read the minutes."""
    if not keys.parts:
        return {keys.prefix: t0_ms}
    return await parts.clocks(r, keys)


async def late_flags(r: Redis, keys: Keys, clocks: dict[str, int]) -> list[str]:
    """The late flags scored up to each part's T0 (:func:`part_clocks`)."""
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.zrangebyscore(part.late_minutes, "-inf", clocks[part.prefix])
    return [m.decode() for reply in await pipe.execute() for m in reply]


async def clear_late_flags(r: Redis, keys: Keys, members: Sequence[str], clocks: dict[str, int]) -> int:
    n = 0
    for part, group in parts.by_part(keys, members, _meter_of_flag):
        if group:
            n += int(await r.eval(_REMOVE_IF_NOT_NEWER, 1, part.late_minutes, clocks[part.prefix], *group))
    return n


async def mark_late_done(r: Redis, keys: Keys, members: Sequence[str], clocks: dict[str, int]) -> None:
    """Move handled flags to ``late_done``, each scored by its part's T0 (:func:`part_clocks`): the
    raw export's late cursor compares it with that part's clock."""
    for part, group in parts.by_part(keys, members, _meter_of_flag):
        if group:
            await r.zadd(part.late_done, dict.fromkeys(group, clocks[part.prefix]))


async def drop_done_late(
    r: Redis, keys: Keys, before_ms: dict[str, int], *, archived: RawHorizon | None = None
) -> int:
    """Delete the late data of minutes re-aggregated up to ``before_ms`` of their part (by the part's
    key prefix, on the part's master's clock, which scored them: :func:`mark_late_done`); with a raw
    export running (``archived``), only those its late pass has taken and of hours it exported."""
    through = 2**62 if archived is None else archived.through
    n = 0
    for part in keys.each_part():
        before = before_ms[part.prefix]
        if archived is not None:
            # late_done scored before the cursor: handled before the export's run began on every part
            before = min(before, archived.late_cursor - 1)
        late_prefix = part.late_data("")
        n += int(
            await r.eval(_DROP_DONE_LATE, 2, part.late_done, part.late_minutes, before, late_prefix, through)
        )
    return n


@dataclass(frozen=True, slots=True)
class RawHorizon:
    """What the raw export (``Keys.raw_export``) holds: every reading before ``through`` stored before
    its hour was exported, and the late readings flagged before ``late_cursor`` (Redis ms, no later
    than any part's clock at the start of the export's last run); ``keep_from``: nothing from here on
    may be trimmed (``through``, or the oldest minute flagged late from ``late_cursor`` on: maybe not
    archived yet)."""

    through: int
    late_cursor: int
    keep_from: int


async def raw_horizon(r: Redis, keys: Keys) -> RawHorizon | None:
    """The raw export's state, None when no raw export runs (the key is absent)."""
    state: dict[Any, Any] = await r.hgetall(keys.part(0).raw_export)  # the archiver writes every part's
    if b"through" not in state:
        return None
    through, cursor = int(state[b"through"]), int(state.get(b"late", b"0"))
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.zrangebyscore(part.late_minutes, cursor, "+inf")
        pipe.zrangebyscore(part.late_done, cursor, "+inf")
    flagged = [Keys.parse_late_member(m.decode())[1] for reply in await pipe.execute() for m in reply]
    return RawHorizon(through, cursor, min([through, *flagged]))


async def trim_live(
    r: Redis,
    keys: Keys,
    meter_ids: Sequence[str],
    before_ms: dict[str, int],
    *,
    archived: RawHorizon | None = None,
) -> int:
    """Remove snapshots older than ``before_ms`` of their part (by the part's key prefix: already
    aggregated, and outside the window by the part's master's clock) except each meter's newest; with
    a raw export running (``archived``), none it does not hold yet."""
    total = 0
    for part, group in parts.by_part(keys, meter_ids):
        before = before_ms[part.prefix]
        if archived is not None:
            before = min(before, archived.keep_from)
        for i in range(0, len(group), 1000):
            chunk = [part.timeseries(m) for m in group[i : i + 1000]]
            total += int(await r.eval(_TRIM_KEEP_NEWEST, len(chunk), *chunk, before))
    return total


async def read_events(
    r: Redis, keys: Keys, after: str, count: int = 10_000
) -> list[tuple[str, dict[str, str]]]:
    entries: Any = await r.xrange(keys.events, min=f"({after}", max="+", count=count)
    return [
        (eid.decode(), {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
        for eid, fields in entries
    ]
