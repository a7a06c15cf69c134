"""The Home Assistant bridge: every meter on the broker becomes a Home Assistant device, no YAML.

Switched on with ``ENERLINK_HA_DISCOVERY=true`` (discovery prefix ``ENERLINK_HA_DISCOVERY_PREFIX``,
default ``homeassistant``); off, :func:`run` returns at once and nothing is published.

Where it runs, and why there: beside the ingest, server-side, with the broker and Redis the pipeline
already uses (``enerlink hass``, or inside ``enerlink up``). It subscribes to the data topic and the
meters' presence like any other client, so every meter publishing to the broker is discovered: the
simulated fleet of ``enerlink up`` and a Raspberry Pi meter alike, with no Home Assistant setting and
no durable state on the meter. Not the ingest itself: the ingest's workers split the messages through a
shared subscription (a meter's messages go to several workers, so its counter sums would need
cross-worker updates) and its exactly-once path and cost per message stay as they are. Not the edge: a
re-flash loses what the meter kept, which is exactly when the sums must carry on.

The bridge needs no persistent session: Home Assistant's state is a latest view and the counters are
cumulative, so messages missed while the bridge is down only make the next step longer. Each
connection starts clean and gets every retained presence message, so each meter's configs are
published again after every (re)connect, and again when Home Assistant announces itself
(``online`` on ``<discovery_prefix>/status``) -- they are retained anyway.

Per batch of messages: data messages are validated (:class:`enerlink.schemas.telemetry.DataMessage`), the
counter state of their meters is read from Redis (``Keys.ha_counters``, one HMGET), advanced
(:mod:`enerlink.hass.energy`), written back (one HSET) and only then is each meter's newest state published
(retained, QoS 1, on ``Topics.ha_state``), so a restart, even a kill -9, continues the same sums and
a published value never goes down. One bridge per topic prefix (two would each advance the sums).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
from pydantic import ValidationError

from enerlink import mqtt
from enerlink.backoff import Backoff
from enerlink.hass import discovery
from enerlink.hass.energy import MeterCounters, readings
from enerlink.hass.metrics import HassMetrics
from enerlink.hass.settings import Settings
from enerlink.metrics_server import metrics_server
from enerlink.redis_client import REDIS_ERRORS, AsyncRedis, async_client, lazily
from enerlink.runtime import ONCE_LIMIT_S, OnceLimitError
from enerlink.schemas.telemetry import METER_ID_PATTERN, DataMessage, epoch_ms
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)
SUMMARY_EVERY_S = 30.0
BATCH = 500
#: A data message dated further ahead is skipped (as the ingest rejects it): one bogus date would
#: otherwise hold back every later message of its meter (only messages newer than the last one count).
MAX_FUTURE_MS = 86_400_000
PUBLISH_WINDOW = 200  # publishes awaited together (paho keeps at most its in-flight window on the wire)
_METER_ID = re.compile(METER_ID_PATTERN)


def _presence_meter(topics: Topics, topic: str) -> str | None:
    """The meter a presence topic names, or None when ``topic`` is not one."""
    return topics.meter_of(topic, "presence")


@dataclass
class _Tally:
    """What happened since the last INFO summary line (the metrics count the same since start)."""

    received: Counter[str] = field(default_factory=Counter)
    states: int = 0
    configs: int = 0
    stale: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Batch:
    data: dict[str, list[DataMessage]] = field(default_factory=dict)
    meters: set[str] = field(default_factory=set)
    birth: bool = False


async def run(
    settings: Settings,
    *,
    once: bool = False,
    idle_s: float = 1.0,
    ready: asyncio.Event | None = None,
    metrics: HassMetrics | None = None,
    once_limit_s: float = ONCE_LIMIT_S,
) -> None:
    """Run until cancelled; with ``once``, stop after ``idle_s`` seconds without a message, or after
    ``once_limit_s`` (:class:`OnceLimitError` if no broker could be used by then).

    ``ready`` is set once the subscription is in place (at once when the bridge is off).
    """
    if not settings.enabled:
        log.info("hass: ENERLINK_HA_DISCOVERY is off; nothing is published for Home Assistant")
        if ready is not None:
            ready.set()
        return
    metrics = metrics or HassMetrics()
    client = async_client(
        settings.common.redis_url, decode_responses=False, socket_timeout=10, socket_connect_timeout=5
    )
    async with (
        lazily(client),
        metrics_server(metrics.registry, port=settings.metrics_port, host=settings.metrics_host),
    ):
        bridge = _Bridge(settings=settings, redis=client, metrics=metrics)
        until = time.monotonic() + once_limit_s if once else math.inf
        await bridge.loop(once=once, idle_s=idle_s, ready=ready, until=until)


@dataclass
class _Bridge:
    settings: Settings
    redis: AsyncRedis
    metrics: HassMetrics
    announced: set[str] = field(default_factory=set)
    tally: _Tally = field(default_factory=_Tally)

    async def loop(self, *, once: bool, idle_s: float, ready: asyncio.Event | None, until: float) -> None:
        s = self.settings
        topics = s.common.topics
        backoff = Backoff(initial=0.2, cap=10.0)
        will = aiomqtt.Will(topics.ha_bridge, discovery.OFFLINE, qos=1, retain=True)
        log.info("hass: discovery under %s/ for the meters of %s", s.discovery_prefix, topics.data)
        while True:
            client = mqtt.client(
                s.common.mqtt, identifier=s.client_id, will=will, max_queued_incoming=s.max_queued
            )
            client.pending_calls_threshold = PUBLISH_WINDOW + 10
            try:
                async with client:
                    filters = [topics.data, topics.all_presence, s.discovery.status]
                    await client.subscribe([(f, 1) for f in filters])
                    await client.publish(topics.ha_bridge, discovery.ONLINE, qos=1, retain=True)
                    if backoff.attempt:
                        log.info("mqtt: reconnected after %d attempt(s)", backoff.attempt)
                    backoff.reset()
                    self.metrics.connected.set(1)
                    self.announced.clear()  # configs again after every (re)connect
                    if ready is not None:
                        ready.set()
                    try:
                        await self._pump(client, once=once, idle_s=idle_s, until=until)
                    finally:
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            await client.publish(
                                topics.ha_bridge, discovery.OFFLINE, qos=1, retain=True, timeout=2.0
                            )
                    return
            except aiomqtt.MqttError as exc:
                self.metrics.connected.set(0)
                delay = backoff.next_delay()
                if time.monotonic() + delay > until:
                    raise OnceLimitError(f"--once: no broker in the time allowed: {exc}") from exc
                log.warning("mqtt: %s; reconnect attempt %d in %.1f s", exc, backoff.attempt, delay)
                await asyncio.sleep(delay)
            finally:
                self.metrics.connected.set(0)
                self._summary(force=True)

    async def _pump(self, client: aiomqtt.Client, *, once: bool, idle_s: float, until: float) -> None:
        messages = client.messages
        while True:
            try:
                first = await asyncio.wait_for(anext(messages), idle_s if once else SUMMARY_EVERY_S)
            except TimeoutError:
                if once:
                    return
                self._summary()
                continue
            batch = [first]
            while len(messages) and len(batch) < BATCH:
                batch.append(await anext(messages))
            await self._handle(client, batch)
            self._summary()
            if time.monotonic() >= until:
                log.info("hass: --once stops at its time limit (steady traffic)")
                return

    async def _handle(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        batch = self._sort(messages)
        fresh = (self.announced | batch.meters) if batch.birth else (batch.meters - self.announced)
        topics, prefix = self.settings.common.topics, self.settings.discovery
        publishes = []
        for meter in sorted(fresh):
            publishes += discovery.configs(meter, topics=topics, discovery=prefix)
        self.tally.configs += len(publishes)
        states = await self._advance(batch.data) if batch.data else []
        self.tally.states += len(states)
        out = publishes + states
        for i in range(0, len(out), PUBLISH_WINDOW):
            chunk = out[i : i + PUBLISH_WINDOW]
            await asyncio.gather(*(client.publish(t, p, qos=1, retain=True) for t, p in chunk))
        self.announced |= fresh
        self.metrics.configs.inc(len(publishes))
        self.metrics.states.inc(len(states))

    def _sort(self, messages: list[aiomqtt.Message]) -> _Batch:
        """Data messages per meter, meters seen, Home Assistant's birth; bad input counted and skipped."""
        s = self.settings
        topics = s.common.topics
        batch = _Batch()
        latest_ms = time.time_ns() // 1_000_000 + MAX_FUTURE_MS
        for message in messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if topic == topics.data:
                try:
                    data = DataMessage.model_validate_json(payload)
                except ValidationError as exc:
                    self._reject("invalid_data")
                    log.debug("hass: data message rejected: %s", exc.errors()[:1])
                    continue
                self._received("data")
                if epoch_ms(data.datetime) > latest_ms:
                    self._reject("future")
                    continue
                batch.data.setdefault(data.meterId, []).append(data)
                batch.meters.add(data.meterId)
            elif topic == s.discovery.status:
                if payload == discovery.ONLINE.encode():
                    batch.birth = True
                    self._received("birth")
            elif (meter := _presence_meter(topics, topic)) is not None:
                if _METER_ID.match(meter) is None:
                    self._reject("invalid_meter_id")
                    continue
                self._received("presence")
                batch.meters.add(meter)
        return batch

    async def _advance(self, data: dict[str, list[DataMessage]]) -> list[tuple[str, bytes]]:
        """Advance the meters' counter sums in Redis; the newest state message of each meter that moved."""
        key = self.settings.common.keys.ha_counters
        meters = sorted(data)
        backoff = Backoff(initial=0.1, cap=5.0)
        while True:
            try:
                stored: list[bytes | None] = await self.redis.hmget(key, meters)  # type: ignore[assignment]
                moved, states, stale = self._step(meters, stored, data)
                if moved:
                    await self.redis.hset(key, mapping=moved)
            except REDIS_ERRORS as exc:
                self.metrics.redis_failures.inc()
                delay = backoff.next_delay()
                name = type(exc).__name__
                log.warning("redis: %s: %s; retry attempt %d in %.1f s", name, exc, backoff.attempt, delay)
                await asyncio.sleep(delay)
                continue
            if backoff.attempt:
                log.info("redis: counter state written after %d attempt(s)", backoff.attempt)
            self.tally.stale += stale
            self.metrics.stale.inc(stale)
            return states

    def _step(
        self, meters: list[str], stored: list[bytes | None], data: dict[str, list[DataMessage]]
    ) -> tuple[dict[Any, bytes], list[tuple[str, bytes]], int]:
        """New counter state per meter that moved, its newest state message, messages not newer."""
        topics = self.settings.common.topics
        moved: dict[Any, bytes] = {}
        states: list[tuple[str, bytes]] = []
        stale = 0
        for meter, raw in zip(meters, stored, strict=True):
            counters = self._load(meter, raw)
            newest: DataMessage | None = None
            for message in data[meter]:
                at, current = epoch_ms(message.datetime), readings(message.data)
                if counters is None:
                    counters = MeterCounters.start(at, current)
                elif not counters.advance(at, current):
                    stale += 1
                    continue
                newest = message
            if newest is None or counters is None:
                continue
            moved[meter] = counters.dumps()
            at_text = newest.datetime.isoformat()
            states.append((topics.ha_state(meter), discovery.state(newest.data, counters, at=at_text)))
        return moved, states, stale

    def _load(self, meter: str, raw: bytes | None) -> MeterCounters | None:
        if raw is None:
            return None
        try:
            return MeterCounters.loads(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._reject("bad_counter_state")
            log.error("hass: counter state of %s unreadable (%s); starting from its counters", meter, exc)
            return None

    def _received(self, kind: str) -> None:
        self.tally.received[kind] += 1
        self.metrics.received.labels(kind=kind).inc()

    def _reject(self, reason: str) -> None:
        self.tally.rejected[reason] += 1
        self.metrics.rejected.labels(reason=reason).inc()

    def _summary(self, *, force: bool = False) -> None:
        t = self.tally
        elapsed = time.monotonic() - t.since
        if elapsed < SUMMARY_EVERY_S and not force:
            return
        if t.received or t.rejected:
            rejected = ", ".join(f"{r} {n}" for r, n in t.rejected.most_common()) or "none"
            log.info(
                "hass: %d data and %d presence messages over %.0f s: %d states, %d configs published, "
                "%d not newer than the last seen, rejected %s",
                t.received["data"],
                t.received["presence"],
                elapsed,
                t.states,
                t.configs,
                t.stale,
                rejected,
            )
        self.tally = _Tally()
