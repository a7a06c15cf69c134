"""Reading the fleet-wide keys in either Redis layout (:class:`~enerlink.schemas.wire.Keys`).

On one Redis server each helper is the plain command on the plain key; on a Redis Cluster it reads the
key of every part in one pipeline (the cluster client sends each node its parts) and merges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis

from enerlink.redis_client import AsyncRedis, SyncRedis
from enerlink.schemas.wire import Keys

Name = Callable[[Keys], str]
"""Which key of a part, e.g. ``lambda k: k.latest_data``."""


async def hgetall(r: AsyncRedis, keys: Keys, name: Name) -> dict[Any, Any]:
    """A fleet-wide hash, merged over the parts (a meter is in one part only)."""
    if not keys.parts:
        found: dict[Any, Any] = await r.hgetall(name(keys))
        return found
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.hgetall(name(part))
    merged: dict[Any, Any] = {}
    for reply in await pipe.execute():
        merged.update(reply)
    return merged


async def hkeys(r: AsyncRedis, keys: Keys, names: Sequence[Name]) -> list[Any]:
    """The fields of the fleet-wide hashes of ``names`` over every part, in one pipeline."""
    pipe = r.pipeline(transaction=False)
    for name in names:
        for part in keys.each_part():
            pipe.hkeys(name(part))
    return [field for reply in await pipe.execute() for field in reply]


async def hmget(r: AsyncRedis, keys: Keys, names: Sequence[Name], meters: Iterable[str]) -> list[list[Any]]:
    """Per hash of ``names``: one field per meter of that fleet-wide hash, each from its meter's part, in
    the order given; one pipeline for all."""
    wanted = list(meters)
    if not wanted:
        return [[] for _ in names]
    pipe = r.pipeline(transaction=False)
    for name in names:
        if keys.parts:
            for meter in wanted:
                pipe.hget(name(keys.of(meter)), meter)
        else:
            pipe.hmget(name(keys), wanted)
    replies = await pipe.execute()
    if not keys.parts:
        return [list(reply) for reply in replies]
    n = len(wanted)
    return [list(replies[i * n : (i + 1) * n]) for i in range(len(names))]


def hgetall_sync(r: SyncRedis, keys: Keys, name: Name) -> dict[Any, Any]:
    """:func:`hgetall` for a blocking client."""
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.hgetall(name(part))
    merged: dict[Any, Any] = {}
    for reply in pipe.execute():
        merged.update(reply)
    return merged


_NOW = "local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"


async def clocks(r: AsyncRedis, keys: Keys) -> dict[str, int]:
    """Each part's clock now (Redis ms), by the part's key prefix: on a Redis Cluster the clock of the
    master that holds the part, whose scripts score the part's late flags by it (nodes' clocks may
    differ); on one server its TIME."""
    pipe = r.pipeline(transaction=False)
    for part in keys.each_part():
        pipe.eval(_NOW, 1, part.late_minutes)  # a key of the part: sent to the part's master
    return {part.prefix: int(ms) for part, ms in zip(keys.each_part(), await pipe.execute(), strict=True)}


def clocks_sync(r: SyncRedis, keys: Keys) -> dict[str, int]:
    """:func:`clocks` for a blocking client (one call a part: a blocking cluster pipeline runs no
    script)."""
    return {part.prefix: int(r.eval(_NOW, 1, part.late_minutes)) for part in keys.each_part()}


T = TypeVar("T")


def by_part(keys: Keys, items: Iterable[T], meter_of: Callable[[T], str] = str) -> list[tuple[Keys, list[T]]]:
    """``items`` (meter ids, or what ``meter_of`` reads one from) grouped by the part that holds their
    meter's keys (one group on one Redis server), each group in the order given."""
    if not keys.parts:
        return [(keys, list(items))]
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(keys.part_of(meter_of(item)), []).append(item)
    return [(keys.part(index), group) for index, group in sorted(groups.items())]


async def run_scripts(r: AsyncRedis, script: Any, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
    """Each (keys, args) call of a registered ``script``: pipelined on one server; on a Redis Cluster one
    call at a time (its client routes each by its keys, all in one slot, and loads the script on a node
    that lacks it; a cluster pipeline would not)."""
    if isinstance(r, aioredis.RedisCluster):
        return [await script(keys=k, args=a) for k, a in calls]
    pipe = r.pipeline(transaction=False)
    for k, a in calls:
        await script(keys=k, args=a, client=pipe)
    replies: list[Any] = await pipe.execute()
    return replies
