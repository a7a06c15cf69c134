"""What a worker process runs for one part of a batch: read its (meter, minute) pairs, compute them.

Reading, validation and statistics all run in parallel across the pool's processes
(:mod:`enerlink.aggregator.memory`); :mod:`enerlink.aggregator.compute` itself stays pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from enerlink.aggregator.compute import Result, Thresholds, compute
from enerlink.aggregator.reader import read_items_sync
from enerlink.redis_client import SyncRedis, sync_client
from enerlink.schemas.wire import Keys

_CLIENTS: dict[str, SyncRedis] = {}  # one client per Redis URL and worker process


def read_and_compute(
    redis_url: str,
    keys: Keys,
    pairs: Sequence[tuple[str, int]],
    thresholds: Thresholds,
    *,
    late: frozenset[str] | None = None,
    repaired: frozenset[str] | None = None,
) -> Result:
    """Worker-process entry: read a part of a batch of (meter, minute) pairs and compute them. ``late``: the
    part's meters that may hold late data, ``repaired`` those with repaired readings (None: any)."""
    client = _CLIENTS.get(redis_url)
    if client is None:
        client = _CLIENTS[redis_url] = sync_client(redis_url)
    items = read_items_sync(client, keys, pairs, late=late, repaired=repaired)
    return compute(items, thresholds, encode=True)
