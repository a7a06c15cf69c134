"""Writing a batch of classified messages to Redis in one atomic Lua script call.

One ``EVALSHA`` per batch (one network round trip) stores every item of the batch, or none of them:

* data ``d``: ``ZADD timeseries(meter) at_ms <member>``, the member being the message's compact
  stored form (:func:`enerlink.schemas.snapshot.encode_snapshot`, deterministic: a redelivery is the same
  member, so ``ZADD`` returns 0 and nothing is stored twice), ``ZREMRANGEBYSCORE`` everything older
  than the retention window, ``PEXPIRE`` the key to the window. A message already older than the
  window, or of a closed minute in the window's oldest ``late_margin_ms``, goes to ``late_data(meter)``
  instead (same layout, same TTL). Latest is newer-wins:
  ``latest_data[meter]`` is replaced only when the message's datetime is >= the one recorded in
  ``latest_data_at[meter]`` (the latest hashes keep the JSON as received). ``meters[meter]`` = last
  seen (Redis time, epoch ms). Data with ``seq`` updates ``gaps[meter]`` (JSON ``{last_seq, last_at,
  missed, duplicates, resets}``).
* seq record (when ``confirm_interval_ms`` > 0; :mod:`enerlink.ingest.seq_record`): every data message with a
  ``seq`` (stored now or already there) is added to ``seq_record(meter)``, the meter is scheduled in
  ``confirm_due`` (no earlier than one interval after its last confirmation) and, while its record has
  holes, in ``resend_due`` (after the grace period). A data message newly stored from
  ``Topics.resent`` is also added to ``repaired(meter)`` (score = datetime, member = seq, same TTL as the
  timeseries). A resend ack's ``not_held`` ranges (item ``n``) become known in the record (lost).
* late-minute index: every newly stored data message whose minute had already ended when it was
  stored (Redis ``TIME`` >= minute start + 60 s) adds ``late_member(meter, minute_ms)`` to
  ``late_minutes`` with score = Redis ``TIME`` in ms (the clock the aggregator compares with),
  in the same script as the write, so the aggregator can never miss a minute that changed.
* status ``s``: the same with ``status_timeseries`` / ``latest_status`` (no late set for status).
* presence ``p``: ``presence[meter]`` = ``{online, since}`` and, when the state changed, an event
  (``XADD events`` meter_id, kind online|offline, at, details = the payload).
* rejected ``r``: ``XADD rejected`` (reason, topic, received_at, payload first 1 KB, detail) capped at
  ``rejected_maxlen`` and ``HINCRBY rejected_counts reason``.
* rate-limited ``l`` (:mod:`enerlink.ingest.limits`): the rejections of reason ``rate_limited`` of one batch
  are folded into one item per meter: one ``XADD rejected`` (the first payload, ``meter_id`` and
  ``count``), ``HINCRBY rejected_counts rate_limited count`` and ``HINCRBY rate_limited meter count``.

Redis' own clock (``TIME`` inside the script) stamps receipt, trimming and the late index, so
several workers on several hosts agree with each other and with the aggregator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError

from enerlink.ingest.seq_record import ranges_text, script
from enerlink.ingest.validate import RATE_LIMITED, Measurement, Outcome, Presence, Rejection, ResendAck
from enerlink.redis_client import UNREACHABLE, AsyncRedis, unavailable
from enerlink.schemas.snapshot import encode_snapshots
from enerlink.schemas.wire import Keys

SCRIPT = script("store.lua")
PAYLOAD_SAMPLE = 1024  # bytes of a rejected payload kept in the dead-letter stream

NEW = 1
LATE_DATA = 2
LATE_MINUTE = 4
LATEST = 8
PRESENCE_CHANGED = 16
SEQ_DUPLICATE = 32
REPAIRED = 64
RECORD_RESET = 128
SEQ_MISSED_UNIT = 1024  # flags // 1024 = sequence numbers skipped before this message


@dataclass(frozen=True, slots=True)
class BatchResult:
    flags: list[int]
    seconds: float
    given_up: list[tuple[str, int]] = field(default_factory=list)
    """Meters whose seq record reached its size bound, and how many readings were given up."""

    def count(self, bit: int) -> int:
        return sum(1 for f in self.flags if f & bit)

    @property
    def seq_missed(self) -> int:
        return sum(f // SEQ_MISSED_UNIT for f in self.flags)


class StoreRefused(Exception):
    """The store script itself failed on the batch (not Redis: it would fail the same way again), for
    example on a key of the wrong type. The items before the failing one are applied (Redis does not
    roll a script back); written again, a reading is recognised as stored (counted as a duplicate) and
    a dead letter among them is recorded twice."""


def _refused_by_script(exc: ResponseError) -> bool:
    """An error raised inside the script, not one of Redis' own states that pass (out of memory, busy,
    loading, read-only replica: redis-py raises subclasses for those)."""
    return type(exc) is ResponseError and "@user_script" in str(exc)


@dataclass(slots=True)
class RedisStore:
    """The ingest's writer; ``client`` must be created with ``decode_responses=False``."""

    client: AsyncRedis
    keys: Keys
    retention_ms: int
    rejected_maxlen: int = 10_000
    events_maxlen: int = 100_000
    publish_live: bool = True
    confirm_interval_ms: int = 0  # 0 = no seq records (no confirmations, no gap repair)
    grace_ms: int = 10_000
    record_ttl_ms: int = 8 * 86_400_000
    raw_hold_ms: int = 0  # while the raw export runs, keep live readings it lacks this long past the window
    late_margin_ms: int = 0  # a reading of a closed minute this close to the window's start: late data
    _sha: str | None = None

    async def write(self, items: Sequence[Outcome]) -> BatchResult:
        """Store ``items`` atomically; raises a redis error if Redis is unavailable (nothing stored),
        :class:`StoreRefused` if the script fails on them.

        On a Redis Cluster the batch is one script call per part of the key layout, each atomic, sent at
        once: if one fails, the others stay stored and the whole batch comes again, recognised as stored
        where it was."""
        try:
            if not self.keys.parts:
                return await self._write_part(self.keys, items)
            return await self._write_parts(items)
        except UNREACHABLE as exc:
            raise unavailable(exc) from exc
        except RedisClusterException as exc:  # the client refused the call itself: it would again
            raise StoreRefused(str(exc)) from exc

    async def _write_parts(self, items: Sequence[Outcome]) -> BatchResult:
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.keys.part_of(_meter_of(item)), []).append(i)
        started = time.perf_counter()
        results = await asyncio.gather(  # the parts' masters work at once; every call ends here
            *(
                self._write_part(self.keys.part(part), [items[i] for i in indexes])
                for part, indexes in groups.items()
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        flags = [0] * len(items)
        given_up: list[tuple[str, int]] = []
        for indexes, result in zip(groups.values(), results, strict=True):
            assert isinstance(result, BatchResult)
            for i, f in zip(indexes, result.flags, strict=True):
                flags[i] = f
            given_up += result.given_up
        return BatchResult(flags=flags, seconds=time.perf_counter() - started, given_up=given_up)

    async def _write_part(self, keys: Keys, items: Sequence[Outcome]) -> BatchResult:
        limited = [i for i, item in enumerate(items) if _is_limited(item)]
        if limited:
            return await self._write_limited(keys, items, limited)
        names, args = self._arguments(keys, items)
        started = time.perf_counter()
        raw = await self._evalsha(names, args)
        return BatchResult(
            flags=[int(f) for f in raw[: len(items)]],
            seconds=time.perf_counter() - started,
            given_up=_given_up(raw[len(items) :]),
        )

    async def _write_limited(self, keys: Keys, items: Sequence[Outcome], limited: list[int]) -> BatchResult:
        """The batch with its ``rate_limited`` rejections folded into one item per meter."""
        skip = set(limited)
        kept = [item for i, item in enumerate(items) if i not in skip]
        by_meter: dict[str, list[Rejection]] = {}
        for i in limited:
            item = items[i]
            assert isinstance(item, Rejection)
            by_meter.setdefault(item.meter_id, []).append(item)
        folded = [_Limited(meter_id=meter, rejections=r) for meter, r in by_meter.items()]
        names, args = self._arguments(keys, kept, folded)
        started = time.perf_counter()
        raw = await self._evalsha(names, args)
        kept_flags = iter(int(f) for f in raw[: len(kept)])
        flags = [1 if i in skip else next(kept_flags) for i in range(len(items))]
        extras = raw[len(kept) + len(folded) :]
        return BatchResult(flags=flags, seconds=time.perf_counter() - started, given_up=_given_up(extras))

    async def _evalsha(self, keys: list[str], args: list[str | bytes | int]) -> list[int]:
        if self._sha is None:
            self._sha = await self.client.script_load(SCRIPT)
        try:
            try:
                return await self._call(("EVALSHA", self._sha, len(keys), *keys, *args))
            except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load it again
                self._sha = await self.client.script_load(SCRIPT)
                return await self._call(("EVALSHA", self._sha, len(keys), *keys, *args))
        except ResponseError as exc:
            if _refused_by_script(exc):
                raise StoreRefused(str(exc)) from exc
            raise

    async def _call(self, command: tuple[str | bytes | int, ...]) -> list[int]:
        """One command packed by hiredis (C; redis-py's asyncio packer is Python and was a tenth of
        the worker's time at fleet rates), sent on a pooled connection. redis-py's own
        ``send_packed_command``/``read_response`` drop the connection on any error. A cluster client
        routes the command by its first key itself."""
        if isinstance(self.client, aioredis.RedisCluster):
            routed: list[int] = await self.client.execute_command(*command)
            return routed
        packed = hiredis.pack_command(command)  # type: ignore[arg-type]
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(packed)
            response: list[int] = await connection.read_response()
        finally:
            await pool.release(connection)
        return response

    def _arguments(
        self, k: Keys, items: Sequence[Outcome], folded: Sequence[_Limited] = ()
    ) -> tuple[list[str], list[str | bytes | int]]:
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
            k.rate_limited,
            k.confirm_due,
            k.resend_due,
            k.raw_export,
        ]
        args: list[str | bytes | int] = [
            self.retention_ms,
            self.rejected_maxlen,
            self.events_maxlen,
            k.live_channel if self.publish_live else "",
            len(items) + len(folded),
            self.confirm_interval_ms,
            self.grace_ms,
            self.record_ttl_ms,
            self.raw_hold_ms,
            self.late_margin_ms,
        ]
        data = [item.payload for item in items if isinstance(item, Measurement) and item.kind == "data"]
        members = iter(encode_snapshots(data) if data else ())
        for item in items:
            if isinstance(item, Measurement):
                if item.kind == "data":
                    meter = item.meter_id
                    keys += (k.timeseries(meter), k.late_data(meter), k.seq_record(meter), k.repaired(meter))
                    minute = item.at_ms - item.at_ms % 60_000
                    seq = "" if item.seq is None else item.seq
                    late = Keys.late_member(meter, minute)
                    member = next(members)
                    args += (
                        "d",
                        meter,
                        item.at_ms,
                        seq,
                        late,
                        member,
                        item.payload,
                        "1" if item.resent else "",
                    )
                else:
                    keys.append(k.status_timeseries(item.meter_id))
                    args += ("s", item.meter_id, item.at_ms, item.payload)
            elif isinstance(item, Presence):
                args += ("p", item.meter_id, "1" if item.online else "0", item.payload)
            elif isinstance(item, ResendAck):
                if item.ok and item.not_held:
                    keys.append(k.seq_record(item.meter_id))
                    args += ("n", item.meter_id, ranges_text(item.not_held))
                else:
                    args.append("x")
            elif not isinstance(item, Rejection):
                args.append("x")  # nothing to store
            else:
                assert isinstance(item, Rejection)
                args += ("r", item.reason, item.topic, item.detail, item.payload[:PAYLOAD_SAMPLE])
        for group in folded:
            first = group.rejections[0]
            detail = f"{len(group.rejections)} messages dropped, first shown: {first.detail}"
            args += (
                "l",
                group.meter_id,
                len(group.rejections),
                first.topic,
                detail,
                first.payload[:PAYLOAD_SAMPLE],
            )
        return keys, args


@dataclass(frozen=True, slots=True)
class _Limited:
    meter_id: str
    rejections: list[Rejection]


def _given_up(extras: Sequence[object]) -> list[tuple[str, int]]:
    """The trailing (meter, count) pairs after the total (see store.lua)."""
    pairs = extras[1:]
    return [
        (bytes(m).decode() if isinstance(m, bytes) else str(m), int(str(n)))
        for m, n in zip(pairs[::2], pairs[1::2], strict=True)
    ]


def _meter_of(item: Outcome) -> str:
    """The meter whose part stores ``item`` (a dead letter of no known meter: part of "")."""
    meter: str = getattr(item, "meter_id", "")
    return meter


def _is_limited(item: Outcome) -> bool:
    return isinstance(item, Rejection) and item.reason == RATE_LIMITED
