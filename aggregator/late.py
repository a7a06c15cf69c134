"""Which late (meter, minute) pairs are left as stored rather than recomputed.

A late reading for a minute older than the live window (say a reading the meter re-sends hours later,
its confirmation lost) flags that minute; Redis may no longer hold the minute's other readings, nor
the following minute's. When Redis holds fewer readings of the minute than its stored row counted, or
not the reading its energy started from (its counter baseline: the last reading of the meter's row
before), a recomputation would replace the row (and the following one, whose baseline it moves) by
less: both stay as they are. Every reading is in the raw archive, from which ``enerlink aggregate
--from-raw DAY`` recomputes a day.
"""

from __future__ import annotations

import logging
from collections.abc import Set

from enerlink.aggregator import reader, store
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.wire import Keys

log = logging.getLogger(__name__)


async def kept_as_stored(
    conn: store.Conn, r: AsyncRedis, keys: Keys, pairs: Set[tuple[str, int]], *, horizon: int
) -> set[tuple[str, int]]:
    """The pairs of ``pairs`` before ``horizon`` (epoch ms: the live window's start) whose stored row
    counted more readings than Redis holds, or for which Redis lacks the row's counter baseline."""
    counted = await store.stored_counts(conn, sorted(p for p in pairs if p[1] < horizon))
    held = await reader.held_counts(r, keys, list(counted))
    kept = set()
    for pair, (n, base) in zip(counted, held, strict=True):
        stored, baseline = counted[pair]
        if n < stored or (baseline is not None and (base is None or base < baseline)):
            kept.add(pair)
    if kept:
        log.warning(
            "aggregate: late readings for %d stored minutes whose other readings left Redis: rows kept"
            " (every reading is in the raw archive: `enerlink aggregate --from-raw DAY`)",
            len(kept),
        )
    return kept
