"""Writing a batch of classified messages to Redis in one atomic Lua script call.

One ``EVALSHA`` per batch (one network round trip) stores every item of the batch, or none of them:

* data ``d``: ``ZADD timeseries(meter) at_ms <payload bytes as received>`` (a redelivery is the same
  member, so ``ZADD`` returns 0 and nothing is stored twice), ``ZREMRANGEBYSCORE`` everything older
  than the retention window, ``PEXPIRE`` the key to the window. A message already older than the
  window goes to ``late_data(meter)`` instead (same layout, same TTL). Latest is newer-wins:
  ``latest_data[meter]`` is replaced only when the message's datetime is >= the one recorded in
  ``latest_data_at[meter]``. ``meters[meter]`` = last seen (Redis time, epoch ms). Data with ``seq``
  updates ``gaps[meter]`` (JSON ``{last_seq, last_at, missed, duplicates, resets}``).
* late-minute index: every newly stored data message whose minute had already ended when it was
  stored (Redis ``TIME`` >= minute start + 60 s) adds ``late_member(meter, minute_ms)`` to
  ``late_minutes`` with score = Redis ``TIME`` in ms (the clock the aggregator compares with),
  in the same script as the write, so the aggregator can never miss a minute that changed.
* status ``s``: the same with ``status_timeseries`` / ``latest_status`` (no late set for status).
* presence ``p``: ``presence[meter]`` = ``{online, since}`` and, when the state changed, an event
  (``XADD events`` meter_id, kind online|offline, at, details = the payload).
* rejected ``r``: ``XADD rejected`` (reason, topic, received_at, payload first 1 KB, detail) capped at
  ``rejected_maxlen`` and ``HINCRBY rejected_counts reason``.

Redis' own clock (``TIME`` inside the script) stamps receipt, trimming and the late index, so
several workers on several hosts agree with each other and with the aggregator.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from ingest.validate import Measurement, Outcome, Presence, Rejection
from schemas.wire import Keys

SCRIPT = resources.files("ingest").joinpath("store.lua").read_text(encoding="utf-8")
PAYLOAD_SAMPLE = 1024  # bytes of a rejected payload kept in the dead-letter stream

NEW = 1
LATE_DATA = 2
LATE_MINUTE = 4
LATEST = 8
PRESENCE_CHANGED = 16
SEQ_DUPLICATE = 32
SEQ_MISSED_UNIT = 64  # flags // 64 = sequence numbers skipped before this message


@dataclass(frozen=True, slots=True)
class BatchResult:
    flags: list[int]
    seconds: float

    def count(self, bit: int) -> int:
        return sum(1 for f in self.flags if f & bit)

    @property
    def seq_missed(self) -> int:
        return sum(f // SEQ_MISSED_UNIT for f in self.flags)


@dataclass(slots=True)
class RedisStore:
    """The ingest's writer; ``client`` must be created with ``decode_responses=False``."""

    client: aioredis.Redis
    keys: Keys
    retention_ms: int
    rejected_maxlen: int = 10_000
    events_maxlen: int = 100_000
    publish_live: bool = True
    _sha: str | None = None

    async def write(self, items: Sequence[Outcome]) -> BatchResult:
        """Store ``items`` atomically; raises a redis error if Redis is unavailable (nothing stored)."""
        keys, args = self._arguments(items)
        started = time.perf_counter()
        if self._sha is None:
            self._sha = await self.client.script_load(SCRIPT)
        try:
            flags = await self.client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load it again
            self._sha = await self.client.script_load(SCRIPT)
            flags = await self.client.evalsha(self._sha, len(keys), *keys, *args)
        return BatchResult(flags=[int(f) for f in flags], seconds=time.perf_counter() - started)

    def _arguments(self, items: Sequence[Outcome]) -> tuple[list[str], list[str | bytes | int]]:
        k = self.keys
        keys = [
            k.latest_data,
            k.latest_data_at,
            k.latest_status,
            k.latest_status_at,
            k.meters,
            k.gaps,
            k.late_minutes,
            k.rejected,
            k.rejected_counts,
            k.presence,
            k.events,
        ]
        args: list[str | bytes | int] = [
            self.retention_ms,
            self.rejected_maxlen,
            self.events_maxlen,
            k.live_channel if self.publish_live else "",
            len(items),
        ]
        for item in items:
            if isinstance(item, Measurement):
                if item.kind == "data":
                    keys += (k.timeseries(item.meter_id), k.late_data(item.meter_id))
                    minute = item.at_ms - item.at_ms % 60_000
                    seq = "" if item.seq is None else item.seq
                    late = Keys.late_member(item.meter_id, minute)
                    args += ("d", item.meter_id, item.at_ms, seq, late, item.payload)
                else:
                    keys.append(k.status_timeseries(item.meter_id))
                    args += ("s", item.meter_id, item.at_ms, item.payload)
            elif isinstance(item, Presence):
                args += ("p", item.meter_id, "1" if item.online else "0", item.payload)
            else:
                assert isinstance(item, Rejection)
                args += ("r", item.reason, item.topic, item.detail, item.payload[:PAYLOAD_SAMPLE])
        return keys, args
