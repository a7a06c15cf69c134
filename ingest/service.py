"""The ingest worker: MQTT -> validate -> Redis, every message stored exactly once.

Design (nothing lost, nothing doubled):

1. The worker holds a persistent MQTT 5 session (``ENERLINK_INGEST_CLIENT_ID``, clean start off,
   session expiry 7 days) and subscribes at QoS 1, through ``$share/<group>/`` when
   ``ENERLINK_INGEST_SHARE_GROUP`` is set, so several workers split the load.
2. Messages are taken in batches (whatever has arrived, up to ``ENERLINK_INGEST_BATCH``), validated
   (:mod:`enerlink.ingest.validate`) and written to Redis with one atomic Lua script call per batch
   (:mod:`enerlink.ingest.redis_store`). Only after that call returns are the messages acknowledged (PUBACK).
3. A kill -9 at any moment therefore leaves every unstored message unacknowledged in the broker's
   session; the restarted worker (same client id) gets them again. A message stored but not yet
   acknowledged comes again too, and the write is idempotent: the member of the sorted set is the
   payload as received, so ``ZADD`` stores nothing new, the latest value is newer-wins and the
   redelivery is only counted (``duplicates``).
4. Backpressure: when Redis is down or slow the write is retried with capped exponential backoff
   and nothing is acknowledged; the broker stops sending once Receive Maximum messages are
   unacknowledged and keeps the rest queued in the session. Memory is bounded by a hard cap
   (``ENERLINK_INGEST_MAX_HELD`` messages / ``ENERLINK_INGEST_MAX_HELD_BYTES``), enforced by the
   socket reader because Mosquitto overshoots the window on resume (:mod:`enerlink.ingest.mqtt_source`).
   If the MQTT connection drops meanwhile, the batch is still written once Redis is back, and the
   broker redelivers it (a duplicate, absorbed).
5. Delivery to meters (:mod:`enerlink.ingest.delivery`): every stored data message with a ``seq`` goes into
the
   meter's seq record in the same script; a task beside the message loop confirms what is stored
   and asks meters to resend what is missing. Resent readings (``Topics.resent``) are ingested like
   data; resend acks (``Topics.all_command_acks``) record what a meter no longer holds.
6. A flooding device is cut to ``ENERLINK_INGEST_METER_RATE`` readings per second of its own clock,
   the rest rejected as ``rate_limited``, counted per meter and dead-lettered (:mod:`enerlink.ingest.limits`).

Operators running several workers in a shared group: Mosquitto keeps routing a share of the
traffic to a member whose persistent session is disconnected (e.g. killed), delivering it only when
that member comes back. Restart a failed worker promptly with the SAME client id (systemd
``Restart=always``; the default id ``enerlink-ingest-<host>-<n>`` comes back, see
:mod:`enerlink.identity`); a worker retired for good
must be started once with its id and stopped cleanly, or its queued share is lost when its
session expires (``ENERLINK_INGEST_SESSION_EXPIRY_S``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import aiomqtt

from enerlink.backoff import Backoff
from enerlink.identity import claim_client_id
from enerlink.ingest import mqtt_source
from enerlink.ingest.delivery import Delivery
from enerlink.ingest.limits import MeterLimiter
from enerlink.ingest.metrics import IngestMetrics
from enerlink.ingest.redis_store import (
    LATE_DATA,
    LATE_MINUTE,
    NEW,
    PRESENCE_CHANGED,
    RECORD_RESET,
    REPAIRED,
    SEQ_DUPLICATE,
    BatchResult,
    RedisStore,
    StoreRefused,
)
from enerlink.ingest.refused import write_apart
from enerlink.ingest.seq_record import MAX_RANGES
from enerlink.ingest.settings import Settings
from enerlink.ingest.validate import (
    INVALID_ACK,
    RATE_LIMITED,
    Ignored,
    Measurement,
    Outcome,
    Presence,
    Rejection,
    ResendAck,
    Validator,
)
from enerlink.metrics_server import metrics_server
from enerlink.redis_client import REDIS_ERRORS, async_client, lazily
from enerlink.runtime import ONCE_LIMIT_S, OnceLimitError
from enerlink.takeover import TakeoverWatch

log = logging.getLogger(__name__)
SUMMARY_EVERY_S = 30.0
STATE_DIR = "ENERLINK_INGEST_STATE_DIR"


@dataclass
class _Tally:
    """What happened since the last INFO summary line."""

    batches: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    repaired: int = 0
    lost: int = 0
    write_s: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)


async def run(
    settings: Settings,
    *,
    once: bool = False,
    idle_s: float = 1.0,
    ready: asyncio.Event | None = None,
    metrics: IngestMetrics | None = None,
    once_limit_s: float = ONCE_LIMIT_S,
) -> None:
    """Run until cancelled; with ``once``, stop after ``idle_s`` seconds without a message, or after
    ``once_limit_s`` (:class:`OnceLimitError` if no broker or Redis could be used by then).

    ``ready`` is set once the first subscription is in place (callers that publish right away).
    """
    if not settings.client_id:  # a default id of this worker's own (enerlink.identity)
        with claim_client_id("enerlink-ingest", state_dir=settings.state_dir, setting=STATE_DIR) as client_id:
            claimed = replace(settings, client_id=client_id)
            return await run(
                claimed, once=once, idle_s=idle_s, ready=ready, metrics=metrics, once_limit_s=once_limit_s
            )
    metrics = metrics or IngestMetrics()
    validator = Validator(
        topics=settings.common.topics,
        max_payload=settings.max_payload,
        max_future_ms=settings.max_future_s * 1000,
    )
    client = async_client(
        settings.common.redis_url, decode_responses=False, socket_timeout=10, socket_connect_timeout=5
    )
    async with (
        lazily(client),
        metrics_server(metrics.registry, port=settings.metrics_port, host=settings.metrics_host),
    ):
        store = RedisStore(
            client=client,
            keys=settings.common.keys,
            retention_ms=settings.retention_ms,
            rejected_maxlen=settings.rejected_maxlen,
            events_maxlen=settings.events_maxlen,
            publish_live=settings.publish_live,
            confirm_interval_ms=int(settings.confirm_interval_s * 1000),
            grace_ms=int(settings.gap_grace_s * 1000),
            record_ttl_ms=settings.seq_record_ttl_s * 1000,
            raw_hold_ms=settings.raw_hold_s * 1000,
            late_margin_ms=settings.late_margin_ms,
        )
        worker = _Worker(settings=settings, store=store, validator=validator, metrics=metrics, ready=ready)
        if once:
            worker.once_until = time.monotonic() + once_limit_s
        worker.delivery = Delivery(settings=settings, client=client, metrics=metrics, mqtt=worker.mqtt_client)
        async with asyncio.TaskGroup() as group:
            confirmer = group.create_task(worker.delivery.run(), name="delivery")
            pump = group.create_task(worker.loop(once=once, idle_s=idle_s), name="ingest")
            pump.add_done_callback(lambda _: confirmer.cancel())


@dataclass
class _Worker:
    settings: Settings
    store: RedisStore
    validator: Validator
    metrics: IngestMetrics
    ready: asyncio.Event | None = None
    peak: int = 0
    peak_bytes: int = 0
    pauses: int = 0
    tally: _Tally = field(default_factory=_Tally)
    limiter: MeterLimiter = field(init=False)
    delivery: Delivery | None = None
    live: mqtt_source.Session | None = None
    once_until: float = math.inf  # monotonic time at which a bounded run stops taking input

    def mqtt_client(self) -> mqtt_source.Session | None:
        """The current connection (for publishing), ``None`` while disconnected."""
        live = self.live
        return live if live is not None and live.connected else None

    def __post_init__(self) -> None:
        self.limiter = MeterLimiter(rate=self.settings.meter_rate)

    async def loop(self, *, once: bool, idle_s: float) -> None:
        backoff = Backoff(initial=0.2, cap=10.0)
        takeover = TakeoverWatch(self.settings.client_id, setting="ENERLINK_INGEST_CLIENT_ID")
        log.info(
            "ingest %s: subscribing %s (retention %d s)",
            self.settings.client_id,
            ", ".join(mqtt_source.subscriptions(self.settings)),
            self.settings.retention_s,
        )
        while True:
            since: float | None = None
            try:
                async with mqtt_source.session(self.settings) as live:
                    since = time.monotonic()
                    self.metrics.connected.set(1)
                    if backoff.attempt:
                        log.info("mqtt: reconnected after %d attempt(s)", backoff.attempt)
                    backoff.reset()
                    if self.ready is not None:
                        live.when_subscribed(self.ready.set)
                    self.live = live
                    try:
                        await self._pump(live, once=once, idle_s=idle_s)
                    finally:
                        self.live = None
                    return
            except aiomqtt.MqttError as exc:
                self.metrics.connected.set(0)
                uptime = None if since is None else time.monotonic() - since
                delay = max(backoff.next_delay(), takeover.disconnected(exc, uptime_s=uptime))
                if time.monotonic() + delay > self.once_until:
                    raise OnceLimitError(f"--once: no broker in the time allowed: {exc}") from exc
                log.warning("mqtt: %s; reconnect attempt %d in %.1f s", exc, backoff.attempt, delay)
                await asyncio.sleep(delay)
            finally:
                self.metrics.connected.set(0)
                self._summary(force=True)
                if self.peak:
                    log.info(
                        "mqtt: at most %d unacknowledged messages held in memory (cap %d); reading "
                        "paused %d time(s) at the cap",
                        self.peak,
                        self.settings.max_held,
                        self.pauses,
                    )

    async def _pump(self, live: mqtt_source.Session, *, once: bool, idle_s: float) -> None:
        try:
            await self._pump_batches(live, once=once, idle_s=idle_s)
        finally:
            self._held(live)
            self.peak = max(self.peak, live.peak)
            self.peak_bytes = max(self.peak_bytes, live.peak_bytes)
            self.pauses += live.pauses
            self.metrics.held.set(0)  # what this connection held is gone with it (the broker resends)
            self.metrics.held_bytes.set(0)

    async def _pump_batches(self, live: mqtt_source.Session, *, once: bool, idle_s: float) -> None:
        while True:
            batch = await live.batch(self.settings.batch, idle_s=idle_s if once else SUMMARY_EVERY_S)
            if not batch:
                if once:
                    return
                self._summary()
                continue
            now_ms = time.time_ns() // 1_000_000
            classify, admit = self.validator.classify, self._admit
            outcomes = [admit(classify(topic=m.topic, payload=m.payload, now_ms=now_ms)) for m in batch]
            self._held(live)
            outcomes, result = await self._write(outcomes)
            live.ack(batch)
            self._count(batch, outcomes, result)
            self._summary()
            if time.monotonic() >= self.once_until:
                log.info("ingest: --once stops at its time limit (steady traffic)")
                return

    def _admit(self, outcome: Outcome) -> Outcome:
        """The per-meter rate limit (:mod:`enerlink.ingest.limits`) on valid data and status messages."""
        if isinstance(outcome, Measurement) and not self.limiter.admit(outcome.meter_id, outcome.at_ms):
            topics = self.settings.common.topics
            topic = topics.resent if outcome.resent else topics.data
            return Rejection(
                reason=RATE_LIMITED,
                detail=f"over {self.limiter.rate} messages in one second of the meter's clock",
                topic=topics.status if outcome.kind == "status" else topic,
                payload=outcome.payload,
                meter_id=outcome.meter_id,
            )
        return outcome

    def _held(self, live: mqtt_source.Session) -> None:
        m = self.metrics
        m.held.set(live.held)
        m.held_bytes.set(live.held_bytes)
        m.held_peak.set(max(self.peak, live.peak))
        m.held_bytes_peak.set(max(self.peak_bytes, live.peak_bytes))
        m.reader_pauses.set(self.pauses + live.pauses)

    async def _write(self, outcomes: list[Outcome]) -> tuple[list[Outcome], BatchResult]:
        """Write until it succeeds: nothing is acknowledged (or read) meanwhile. Returns the outcomes
        as written: a message the store script refuses becomes a dead letter (:mod:`.refused`)."""
        backoff = Backoff(initial=0.1, cap=5.0)
        while True:
            try:
                result = await self.store.write(outcomes)
            except StoreRefused as exc:
                self.metrics.write_failures.inc()
                return await write_apart(self._write, outcomes, str(exc), topics=self.settings.common.topics)
            except REDIS_ERRORS as exc:
                self.metrics.write_failures.inc()
                delay = backoff.next_delay()
                if time.monotonic() + delay > self.once_until:  # nothing acknowledged: all comes again
                    raise OnceLimitError(f"--once: no Redis in the time allowed: {exc}") from exc
                log.warning(
                    "redis: write of %d messages failed (%s: %s); retry attempt %d in %.1f s",
                    len(outcomes),
                    type(exc).__name__,
                    exc,
                    backoff.attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if backoff.attempt:
                log.info("redis: write succeeded after %d attempt(s)", backoff.attempt)
            self.metrics.write_seconds.observe(result.seconds)
            self.metrics.batch_size.observe(len(outcomes))
            self.metrics.gap_missed.inc(result.seq_missed)
            self.metrics.gap_duplicates.inc(result.count(SEQ_DUPLICATE))
            self.tally.write_s += result.seconds
            for meter, n in result.given_up:
                self.metrics.given_up.inc(n)
                log.warning(
                    "meter %s: seq record full (%d ranges): %d readings of its oldest holes GIVEN UP (lost)",
                    meter,
                    MAX_RANGES,
                    n,
                )
            return outcomes, result

    def _count(self, batch: list[mqtt_source.Incoming], outcomes: list[Outcome], result: BatchResult) -> None:
        """Tally the batch locally, then touch each metric once (not once per message)."""
        m, t = self.metrics, self.tally
        t.batches += 1
        t.received += len(batch)
        received: Counter[str] = Counter()
        stored: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        redeliveries = duplicates = late = late_minutes = repaired = 0
        for incoming, outcome, flag in zip(batch, outcomes, result.flags, strict=True):
            if incoming.dup:
                redeliveries += 1
            if isinstance(outcome, Rejection):
                rejected[outcome.reason] += 1
                if outcome.reason == INVALID_ACK and self.delivery is not None:
                    self.delivery.malformed_ack(outcome.topic, outcome.detail)
                log.debug("rejected %s on %s: %s", outcome.reason, outcome.topic, outcome.detail)
                continue
            if isinstance(outcome, ResendAck):
                if self.delivery is not None:
                    self.tally.lost += self.delivery.on_ack(outcome, lost=flag)
                continue
            if isinstance(outcome, Ignored):
                continue
            if isinstance(outcome, Presence):
                received["presence"] += 1
                if flag & PRESENCE_CHANGED:
                    state = "online" if outcome.online else "offline"
                    m.presence_changes.labels(state=state).inc()
                    log.info("meter %s is %s", outcome.meter_id, state)
                continue
            received[outcome.kind] += 1
            if flag & NEW:
                stored[outcome.kind] += 1
            elif not flag & LATE_DATA:
                duplicates += 1
            if flag & LATE_DATA:
                late += 1
            if flag & LATE_MINUTE:
                late_minutes += 1
            if flag & REPAIRED:
                repaired += 1
            if flag & RECORD_RESET:
                m.record_resets.inc()
                log.info(
                    "meter %s restarted its seq at %s: its seq record starts again",
                    outcome.meter_id,
                    outcome.seq,
                )
        for kind, n in received.items():
            m.received.labels(kind=kind).inc(n)
        for kind, n in stored.items():
            m.stored.labels(kind=kind).inc(n)
        for reason, n in rejected.items():
            m.rejected.labels(reason=reason).inc(n)
        for counter, n in (
            (m.redeliveries, redeliveries),
            (m.duplicates, duplicates),
            (m.late, late),
            (m.late_minutes, late_minutes),
            (m.repaired, repaired),
        ):
            if n:
                counter.inc(n)
        t.stored += sum(stored.values())
        t.duplicates += duplicates
        t.late += late
        t.repaired += repaired
        t.rejected.update(rejected)

    def _summary(self, *, force: bool = False) -> None:
        t = self.tally
        elapsed = time.monotonic() - t.since
        if not t.received or (elapsed < SUMMARY_EVERY_S and not force):
            if elapsed >= SUMMARY_EVERY_S:
                self.tally = _Tally()
            return
        rejected = ", ".join(f"{reason} {n}" for reason, n in t.rejected.most_common()) or "none"
        log.info(
            "ingest: %d messages in %d batches over %.0f s: stored %d, duplicates %d, late %d, "
            "repaired %d, lost %d, rejected %s; redis %.1f ms per batch",
            t.received,
            t.batches,
            elapsed,
            t.stored,
            t.duplicates,
            t.late,
            t.repaired,
            t.lost,
            rejected,
            1000 * t.write_s / max(t.batches, 1),
        )
        self.tally = _Tally()
