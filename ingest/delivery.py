"""Confirmations to meters and gap repair, from the seq records in Redis (:mod:`enerlink.ingest.seq_record`).

Every worker runs :meth:`Delivery.run` beside its message loop (one named task of the worker's
TaskGroup). One round every ``ENERLINK_INGEST_CONFIRM_INTERVAL_S``:

1. **Confirm.** The store script schedules a meter in ``Keys.confirm_due`` whenever a data message with
   a ``seq`` of it was stored (or came again), no earlier than one interval after its last
   confirmation. The round claims the due meters atomically (``confirm_claim.lua``: any number of
   workers, each meter to one of them, at most once per interval; on a Redis Cluster once a replica
   holds them, :mod:`enerlink.ingest.claims`), publishes a
   :class:`~enerlink.schemas.delivery.Confirmation` per meter, retained at QoS 1 on ``Topics.confirm(meter)``,
   then releases them (``confirm_done.lua``: a meter whose record changed meanwhile stays due). A worker
   killed in between leaves its claims due again after :data:`CLAIM_S`: the confirmation is never lost,
   it comes later.
2. **Repair.** Meters whose record has holes are in ``Keys.resend_due``, first due after the grace
   period (``ENERLINK_INGEST_GAP_GRACE_S``). The round claims at most as many as it has free slots
   (``ENERLINK_INGEST_RESEND_CONCURRENCY`` meters with a request outstanding per worker), asks each
   for its oldest holes with a :class:`~enerlink.schemas.delivery.ResendCommand` (bounded by
   ``MAX_RESEND_RANGES``/``MAX_RESEND_READINGS``) on ``Topics.command(meter)``, QoS 1, expiring when the
   next attempt is due, and schedules the next attempt after a capped jittered exponential backoff
   (``ENERLINK_INGEST_RESEND_BACKOFF_S`` doubling up to ``..._BACKOFF_MAX_S``). The schedule is the
   cross-worker lease: a claimed meter is not due for anyone else. A request is outstanding until its
   ack reaches this worker or the next attempt is due (with a shared group, the ack may reach another
   worker: that one records it, this one frees the slot at expiry).

Publishing uses the worker's MQTT connection (:meth:`enerlink.ingest.mqtt_source.Session.publish`: queued in
paho, which keeps its in-flight window and sends the rest as PUBACKs return) and never holds up
ingestion: a round claims a bounded number of meters (:data:`CLAIM_BATCH` per call), publishes them,
waits for their PUBACKs, and only then releases them; while disconnected it claims nothing (the due
sets keep everything for later).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from enerlink.backoff import Backoff
from enerlink.ingest.claims import CLAIM_BATCH, CLAIM_S, Claims
from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.mqtt_source import Session
from enerlink.ingest.seq_record import SeqRecord, parse_ranges, script
from enerlink.ingest.settings import Settings
from enerlink.ingest.validate import ResendAck
from enerlink.redis_client import REDIS_ERRORS, AsyncRedis
from enerlink.schemas.delivery import (
    MAX_CONFIRM_RANGES,
    MAX_RESEND_RANGES,
    MAX_RESEND_READINGS,
    MAX_SEQ,
    ResendCommand,
    resend_size,
)
from enerlink.schemas.telemetry import METER_ID_PATTERN
from enerlink.schemas.wire import Keys

log = logging.getLogger(__name__)

MAX_CLAIMS_PER_ROUND = 20  # script calls per round (10,000 confirmations at most)
PUBACK_POLL_S = 0.02  # how often a round looks for the PUBACKs of what it published
PUBLISH_TIMEOUT_S = 10.0
LOGGED_MAX = 10_000  # meters whose bad acks are remembered as logged


@dataclass
class _Round:
    confirmed: int = 0
    asked: int = 0
    readings: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Delivery:
    settings: Settings
    client: AsyncRedis
    metrics: IngestMetrics
    mqtt: Callable[[], Session | None]
    """The worker's current MQTT client, ``None`` while disconnected."""
    outstanding: dict[str, tuple[str, float]] = field(default_factory=dict)
    """meter -> (request id, monotonic time it stops counting against the concurrency limit)."""
    _logged: set[str] = field(default_factory=set)  # meters (topics) whose bad ack was logged
    _claims: Claims = field(init=False)

    def __post_init__(self) -> None:
        self._done = self.client.register_script(script("confirm_done.lua"))
        self._resend = self.client.register_script(script("resend_claim.lua"))
        self._keys = self.settings.common.keys
        self._topics = self.settings.common.topics
        self._claims = Claims(self.settings, self.client, self.metrics)

    @property
    def enabled(self) -> bool:
        return self.settings.confirm_interval_s > 0

    async def run(self) -> None:
        """Rounds until cancelled; a failed round is logged, counted and retried at the next one."""
        if not self.enabled:
            return
        try:
            await self._rounds()
        finally:
            await self._claims.aclose()

    async def _rounds(self) -> None:
        await self.check_durability()
        interval = self.settings.confirm_interval_s
        backoff = Backoff(initial=interval, cap=max(60.0, interval))
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.round()
            except REDIS_ERRORS as exc:
                stage, detail = "redis", f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # the one boundary: a bad round must not stop ingestion
                log.exception("delivery: round failed")
                stage, detail = "round", f"{type(exc).__name__}: {exc}"
            else:
                if backoff.attempt:
                    log.info("delivery: rounds succeed again after %d failed attempt(s)", backoff.attempt)
                backoff.reset()
                delay = interval
                continue
            self.metrics.delivery_failures.labels(stage=stage).inc()
            delay = backoff.next_delay()
            log.warning(
                "delivery: round failed (%s); retry attempt %d in %.1f s", detail, backoff.attempt, delay
            )

    async def check_durability(self) -> bool | None:
        """Whether Redis keeps what is confirmed through a restart and a power cut (append-only file,
        fsync on every write): a meter deletes a confirmed reading. Said once, at start, and in
        ``enerlink_ingest_redis_durable``; None when Redis does not tell (CONFIG disabled)."""
        try:
            config = await self.client.config_get("append*")
        except REDIS_ERRORS as exc:
            log.info("delivery: Redis' persistence settings unknown (%s); see docs/delivery.md", exc)
            return None
        found = {_text(k): _text(v) for k, v in config.items()}
        aof, fsync = found.get("appendonly", "?"), found.get("appendfsync", "?")
        durable = aof == "yes" and fsync == "always"
        self.metrics.redis_durable.set(1 if durable else 0)
        if aof != "yes":
            log.warning(
                "delivery: Redis runs without its append-only file (appendonly %s): a restart of Redis loses"
                " readings already confirmed to their meters, which deleted them; run it with appendonly yes"
                " and appendfsync always (docs/delivery.md)",
                aof,
            )
        elif not durable:
            log.warning(
                "delivery: Redis syncs its append-only file %s, not always: a power cut can take back"
                " readings confirmed in the last second (docs/delivery.md)",
                fsync,
            )
        return durable

    async def round(self) -> None:
        client = self.mqtt()
        if client is None:
            return  # disconnected: everything stays due in Redis
        r = _Round()
        await self._confirm(client, r)
        await self._repair(client, r)
        if r.confirmed or r.asked or r.failed:
            log.info(
                "delivery: confirmed %d meters, asked %d meters for %d readings (%d outstanding), "
                "%d publishes failed, in %.1f ms",
                r.confirmed,
                r.asked,
                r.readings,
                len(self.outstanding),
                r.failed,
                1000 * (time.perf_counter() - r.started),
            )

    def on_ack(self, ack: ResendAck, *, lost: int) -> int:
        """A meter's answer to a resend request, its ``not_held`` already in the seq record (``lost`` seqs
        newly recorded as not held); frees the meter's slot. Returns ``lost``."""
        request = self.outstanding.get(ack.meter_id)
        if request is not None and request[0] == ack.command_id:
            del self.outstanding[ack.meter_id]
            self.metrics.resend_outstanding.set(len(self.outstanding))
        if not ack.ok:
            self.metrics.resend_acks.labels(outcome="refused").inc()
            self._log_once(
                ack.meter_id, f"meter {ack.meter_id} refused resend request {ack.command_id}: {ack.error}"
            )
            return 0
        self.metrics.resend_acks.labels(outcome="ok").inc()
        if lost:
            self.metrics.not_held.inc(lost)
            log.warning("meter %s no longer holds %d readings it was asked for: lost", ack.meter_id, lost)
        return lost

    def malformed_ack(self, topic: str, detail: str) -> None:
        """Counted (and rejected as ``invalid_ack`` by the store) and logged once per topic."""
        self.metrics.resend_acks.labels(outcome="malformed").inc()
        self._log_once(topic, f"malformed resend ack on {topic}: {detail}")

    def _log_once(self, key: str, line: str) -> None:
        if key not in self._logged and len(self._logged) < LOGGED_MAX:
            self._logged.add(key)
            log.warning("%s (further ones only counted)", line)

    # -- confirmations ------------------------------------------------------------------------

    async def _confirm(self, client: Session, r: _Round) -> None:
        self._claims.new_round()
        for keys in self._keys.each_part():
            await self._confirm_part(client, r, keys)

    async def _confirm_part(self, client: Session, r: _Round, keys: Keys) -> None:
        interval_ms = int(self.settings.confirm_interval_s * 1000)
        record_prefix = keys.seq_record("")
        for _ in range(MAX_CLAIMS_PER_ROUND):
            raw = await self._claims.due(keys)
            if raw is None:
                return
            claimed_at = int(raw[0])
            pairs = [(_text(m), _text(t)) for m, t in zip(raw[1::2], raw[2::2], strict=True)]
            if not pairs:
                return
            at = confirmation_at(claimed_at)
            messages: list[tuple[str, bytes, bool, int | None]] = []
            sendable: list[tuple[str, str]] = []
            unusable: list[tuple[str, str]] = []
            for meter, text in pairs:
                try:
                    payload = confirmation_payload(meter, text, at)
                except ValueError as exc:  # a record or meter id no confirmation can carry: drop it
                    self.metrics.delivery_failures.labels(stage="record").inc()
                    log.warning("delivery: no confirmation for %r (record %r): %s", meter, text, exc)
                    unusable.append((meter, text))
                    continue
                messages.append((self._topics.confirm(meter), payload, True, None))
                sendable.append((meter, text))
            sent = await self._publish_all(client, messages)
            confirmed = [pair for pair, done in zip(sendable, sent, strict=True) if done]
            r.confirmed += len(confirmed)
            r.failed += len(sendable) - len(confirmed)
            self.metrics.confirmations.inc(len(confirmed))
            ok = confirmed + unusable
            if ok:
                args: list[str | int] = [record_prefix, interval_ms, claimed_at]
                for meter, text in ok:
                    args += (meter, text)
                await self._done(keys=[keys.confirm_due], args=args)
            if len(confirmed) < len(sendable) or len(pairs) < CLAIM_BATCH:
                return  # failures stay claimed (due again after CLAIM_S); or nothing more is due

    # -- gap repair ---------------------------------------------------------------------------

    async def _repair(self, client: Session, r: _Round) -> None:
        now = time.monotonic()
        for meter in [m for m, (_, until) in self.outstanding.items() if until <= now]:
            del self.outstanding[meter]
        for keys in self._keys.each_part():
            free = self.settings.resend_concurrency - len(self.outstanding)
            if free <= 0:
                break
            raw = await self._resend(
                keys=[keys.resend_due],
                args=[
                    keys.seq_record(""),
                    free,
                    int(CLAIM_S * 1000),
                    int(self.settings.gap_grace_s * 1000),
                    MAX_RESEND_RANGES,
                    MAX_RESEND_READINGS,
                ],
            )
            await self._ask(client, r, int(raw[0]), raw[1:], keys=keys)
        self.metrics.resend_outstanding.set(len(self.outstanding))

    async def _ask(
        self, client: Session, r: _Round, claimed_at: int, raw: list[object], *, keys: Keys
    ) -> None:
        requests: list[tuple[str, ResendCommand, float]] = []
        for meter_raw, attempt, ranges in zip(raw[0::3], raw[1::3], raw[2::3], strict=True):
            meter = _text(meter_raw)
            backoff = Backoff(
                initial=self.settings.resend_backoff_s,
                cap=self.settings.resend_backoff_max_s,
                attempt=int(str(attempt)) - 1,
            )
            command = ResendCommand(ranges=parse_ranges(_text(ranges)), id=uuid.uuid4().hex[:16])
            requests.append((meter, command, backoff.next_delay()))
        if not requests:
            return
        sent = await self._publish_all(
            client,
            [
                (
                    self._topics.command(meter),
                    command.model_dump_json(exclude_none=True).encode(),
                    False,
                    max(1, math.ceil(delay)),
                )
                for meter, command, delay in requests
            ],
        )
        pipe = self.client.pipeline(transaction=False)
        now = time.monotonic()
        for (meter, command, delay), done in zip(requests, sent, strict=True):
            if not done:
                r.failed += 1  # claimed: asked again once the claim lapses
                continue
            size = resend_size(command.ranges)
            r.asked += 1
            r.readings += size
            self.metrics.resend_requests.inc()
            self.metrics.resend_requested_readings.inc(size)
            assert command.id is not None
            self.outstanding[meter] = (command.id, now + delay)
            pipe.zadd(keys.resend_due, {meter: claimed_at + int(delay * 1000)}, xx=True)
        await pipe.execute()

    # -- publishing ---------------------------------------------------------------------------

    async def _publish_all(
        self, live: Session, messages: list[tuple[str, bytes, bool, int | None]]
    ) -> list[bool]:
        """Publish at QoS 1 (paho keeps its in-flight window, the rest queued: at most one claim batch);
        True for each message the broker acknowledged within PUBLISH_TIMEOUT_S."""
        infos = [
            live.publish(topic, payload, retain=retain, expiry_s=expiry)
            for topic, payload, retain, expiry in messages
        ]
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        pending = [info for info in infos if info is not None]
        while pending and live.connected and time.monotonic() < deadline:
            await asyncio.sleep(PUBACK_POLL_S)
            pending = [info for info in pending if not info.is_published()]
        results = [info is not None and info.is_published() for info in infos]
        failed = results.count(False)
        if failed:
            self.metrics.delivery_failures.labels(stage="publish").inc(failed)
        return results


def confirmation_at(claimed_at_ms: int) -> bytes:
    """The JSON of a confirmation's ``at``: the claim time on Redis' clock (the same for every worker),
    written as the model writes it."""
    return orjson.dumps(datetime.fromtimestamp(claimed_at_ms / 1000, UTC), option=orjson.OPT_UTC_Z)


_METER_ID = re.compile(METER_ID_PATTERN)
_USUAL = re.compile(r"t:\d+;c:(\d+)(?:;k:\d+)?(?:;u:\d+)?")


def confirmation_payload(meter: str, text: str, at: bytes) -> bytes:
    """The :class:`~enerlink.schemas.delivery.Confirmation` of a meter's seq record as JSON bytes (``at``:
    from
    :func:`confirmation_at`), written directly: a confirmation per meter every interval is the ingest's
    busiest path after the messages themselves, and building the model was most of its cost. The model
    stays the contract (a test checks these are the very bytes it writes). ``ValueError`` for a meter id
    or a record no confirmation can carry."""
    if _METER_ID.fullmatch(meter) is None:
        raise ValueError(f"not a meter id: {meter!r}")
    usual = _USUAL.fullmatch(text)
    if usual is not None:  # nothing beyond through
        through, kept = int(usual[1]), []
    else:
        record = SeqRecord.parse(text)
        through, kept = record.through, record.ranges[-MAX_CONFIRM_RANGES:]
    previous = through + 1  # ranges start above through + 1, ascending, disjoint
    for first, last in kept:
        if not previous < first <= last <= MAX_SEQ:
            raise ValueError(f"ranges no confirmation can carry in {text!r}")
        previous = last
    if through > MAX_SEQ:
        raise ValueError(f"a seq out of range in {text!r}")
    ranges = orjson.dumps(kept) if kept else b"[]"
    return b'{"meterId":"%s","through":%d,"ranges":%s,"at":%s}' % (meter.encode(), through, ranges, at)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
