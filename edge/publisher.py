"""The edge's MQTT publisher: QoS 2 over MQTT 5, a bounded in-flight window, store-and-forward.

    async with Publisher(config=PublisherConfig(endpoint=..., client_id="METER001",
                                                queue_path=state_dir / "outbox.sqlite3",
                                                presence_topic=topics.presence("METER001")),
                         on_connect=publish_status) as pub:
        await pub.subscribe(topics.command("METER001"))
        await pub.publish(topics.data, payload)
        async for message in pub.messages(): ...

Guarantees and how they are kept:

* **Never more QoS 2 messages in flight than the broker accepts.** The window is
  ``min(config.max_inflight, Receive Maximum from the CONNACK)``; ``publish`` waits for a free slot.
  (A publisher with more in flight than Mosquitto's ``max_inflight_messages`` has the excess dropped
  by the broker while the client library reports success.)
* **Exactly once across broker outages.** One paho session is kept for the publisher's lifetime
  (clean start only on the first connection of the process, session expiry > 0), so a message in
  flight when the link drops is retransmitted on reconnect with its packet id and the broker
  de-duplicates it. Messages published while disconnected go to the durable queue.
* **Store-and-forward.** The queue (:mod:`enerlink.edge.queue`, SQLite WAL) keeps the original payloads in
  order, with count/bytes/age caps, and survives a restart. Once connected again it is replayed
  oldest first at ``replay_rate`` messages/s, so live data keeps flowing; with ``strict_order`` live
  messages queue behind the backlog instead, so subscribers see one ordered stream.
* **Presence.** A retained ``{"online": false}`` last will on ``presence_topic`` (also sent on a
  clean exit); ``{"online": true}`` (retained) after
  every connect, then the ``on_connect`` hook (the edge publishes a status there).
* **Reconnects** use :class:`enerlink.backoff.Backoff`; ``stats.attempts`` counts failed attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Self

import aiomqtt

from enerlink import mqtt_internals
from enerlink.backoff import Backoff
from enerlink.edge.acks import AckTracker, Refused
from enerlink.edge.publish_config import (
    OFFLINE,
    ONLINE,
    OnAcked,
    OnConnect,
    Outgoing,
    PublisherConfig,
    PublisherStats,
)
from enerlink.edge.publish_session import Session
from enerlink.edge.queue import SpoolQueue
from enerlink.takeover import TakeoverWatch

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self,
        *,
        config: PublisherConfig,
        will: aiomqtt.Will | None = None,
        on_connect: OnConnect | None = None,
        on_acked: OnAcked | None = None,
    ) -> None:
        self.config = config
        self._on_acked = on_acked
        if will is None and config.presence_topic is not None:
            will = aiomqtt.Will(config.presence_topic, OFFLINE, qos=1, retain=True)
        self._will = will
        self._on_connect = on_connect
        self._stats = PublisherStats(window=max(1, config.max_inflight))
        self._connected = False
        self._closing = False
        self._slots = asyncio.Condition()
        self._queue_changed = asyncio.Event()
        self._changed = asyncio.Event()
        self._incoming: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self._subscriptions: dict[str, int] = {}
        self._inflight: dict[int, Outgoing] = {}
        self._deliveries: dict[int, asyncio.Task[None]] = {}
        self._next_key = 0
        self._replay_cursor = 0
        self._queue: SpoolQueue | None = None
        self._link: Session | None = None
        self._client: aiomqtt.Client | None = None
        self._acks: AckTracker | None = None
        self._refusals = Backoff(initial=config.backoff_initial_s, cap=config.backoff_cap_s)
        self._hold_until = 0.0
        self._tasks: asyncio.TaskGroup | None = None
        self._conn_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public API -------------------------------------------------------------------------

    @property
    def stats(self) -> PublisherStats:
        """A snapshot of the counters."""
        snap = replace(self._stats)
        snap.queued = len(self._queue) if self._queue is not None else 0
        snap.inflight = len(self._inflight)
        snap.connected = self._connected
        snap.dropped = self._queue.dropped if self._queue is not None else 0
        if self._link is not None:
            snap.window = self._link.limit
            snap.receive_maximum = self._link.receive_maximum
        return snap

    @property
    def connected(self) -> bool:
        return self._connected

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Send at QoS 2 when connected (waiting for a free window slot), else queue durably.

        Returns once the message is handed to the session or stored; delivery is confirmed
        asynchronously (``stats.published``).
        """
        if self._queue is None:
            raise RuntimeError("Publisher is not running (use 'async with Publisher(...)')")
        if self._must_spool() or not await self._acquire_slot():
            self._spool(topic, payload, retain)
            return
        self._start_delivery(Outgoing(topic, bytes(payload), retain))

    async def subscribe(self, topic: str, *, qos: int = 2) -> None:
        """Receive messages on ``topic`` (re-subscribed after every reconnect)."""
        self._subscriptions[topic] = qos
        if self._connected and self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.subscribe(topic, qos=qos)

    async def messages(self) -> AsyncIterator[aiomqtt.Message]:
        """Messages on the subscribed topics, across reconnects, until the publisher closes."""
        while True:
            yield await self._incoming.get()

    async def wait_connected(self) -> None:
        """Return once connected (wrap in ``asyncio.timeout`` to bound the wait)."""
        while not self._connected:
            self._changed.clear()
            await self._changed.wait()

    async def drain(self) -> None:
        """Wait until nothing is in flight and the queue is empty (tests, shutdown)."""
        while self._inflight or (self._queue is not None and len(self._queue) > 0):
            self._changed.clear()
            await self._changed.wait()

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._queue = SpoolQueue(self.config.queue_path, limits=self.config.queue_limits)
        if len(self._queue):
            log.info("store-and-forward queue holds %d messages from before", len(self._queue))
        self._link = Session(self.config, will=self._will, on_lost=self._lost)
        self._client = self._link.client
        self._acks = AckTracker(self._client)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._conn_task = self._tasks.create_task(self._connection_loop(), name="mqtt-connection")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        assert self._tasks is not None and self._queue is not None
        try:
            if self._connected and self._inflight:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_inflight_empty(), self.config.flush_timeout_s)
            if self._connected and self.config.presence_topic is not None and self._client is not None:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await self._client.publish(
                        self.config.presence_topic, OFFLINE, qos=1, retain=True, timeout=2.0
                    )
            if self._conn_task is not None:
                self._conn_task.cancel()
            for task in list(self._deliveries.values()):
                task.cancel()
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            leftovers = [m for m in self._inflight.values() if m.row_id is None and not m.done]
            if leftovers:
                self._queue.extend([(m.topic, m.payload, m.retain) for m in leftovers])
                log.warning("spooled %d unacknowledged messages on exit", len(leftovers))
            self._inflight.clear()
            self._queue.close()

    # --- connection -----------------------------------------------------------------------------

    def _lost(self) -> None:
        """paho saw the connection go (its network thread): stop handing out window slots."""
        self._connected = False
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_slots)

    async def _connection_loop(self) -> None:
        assert self._client is not None
        client = self._client
        backoff = Backoff(initial=self.config.backoff_initial_s, cap=self.config.backoff_cap_s)
        takeover = TakeoverWatch(self.config.client_id, setting="each meter its own client id")
        while True:
            mqtt_internals.renew_connected(client)
            since: float | None = None
            extra = 0.0
            try:
                async with client:
                    since = time.monotonic()
                    mqtt_internals.check_connected(client)
                    self._connected = True
                    self._changed.set()
                    self._stats.connects += 1
                    backoff.reset()
                    log.info(
                        "connected to %r as %s (window %d, receive maximum %s, queued %d)",
                        self.config.endpoint,
                        self.config.client_id,
                        self._window(),
                        self._link.receive_maximum if self._link else None,
                        len(self._queue or ()),
                    )
                    await self._session(client)
            except* aiomqtt.MqttError as group:
                self._stats.attempts += 1
                uptime = None if since is None else time.monotonic() - since
                extra = takeover.disconnected(group, uptime_s=uptime)
                log.warning(
                    "MQTT connection to %r lost or refused (attempt %d): %s",
                    self.config.endpoint,
                    backoff.attempt + 1,
                    group.exceptions[0],
                )
            except* Exception as group:
                # One boundary for everything else (a full disk under the queue, a bug): the
                # edge runs unattended for years, so log it, reconnect and carry on.
                self._stats.attempts += 1
                log.error("MQTT session failed; reconnecting", exc_info=group.exceptions[0])
            finally:
                self._connected = False
                self._wake_slots()
                mqtt_internals.release_stuck(client)
            await backoff.sleep()
            if extra:
                await asyncio.sleep(extra)  # another client uses this id: slow the takeover loop down

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic, qos in self._subscriptions.items():
            await client.subscribe(topic, qos=qos)
        if self.config.presence_topic is not None:
            await client.publish(self.config.presence_topic, ONLINE, qos=1, retain=True)
        if self._on_connect is not None:
            try:
                await self._on_connect()
            except aiomqtt.MqttError:
                raise
            except Exception:
                log.exception("on_connect hook failed")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name="mqtt-receive")
            tg.create_task(self._replay(), name="mqtt-replay")

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._incoming.put_nowait(message)

    # --- window and delivery --------------------------------------------------------------------

    def _wake_slots(self) -> None:
        async def _notify() -> None:
            async with self._slots:
                self._slots.notify_all()

        if self._tasks is not None and not self._closing:
            with contextlib.suppress(RuntimeError):
                self._tasks.create_task(_notify(), name="mqtt-wake")

    async def _acquire_slot(self) -> bool:
        """Wait for a free in-flight slot; False when the connection is (or goes) down."""
        async with self._slots:
            while self._connected and len(self._inflight) >= self._window():
                await self._slots.wait()
        return self._connected and not self._closing

    def _window(self) -> int:
        return self._link.limit if self._link is not None else max(1, self.config.max_inflight)

    async def _release_slot(self) -> None:
        async with self._slots:
            self._slots.notify_all()

    async def _wait_inflight_empty(self) -> None:
        async with self._slots:
            while self._inflight:
                await self._slots.wait()

    def _must_spool(self) -> bool:
        if not self._connected or self._closing or time.monotonic() < self._hold_until:
            return True
        return self.config.strict_order and self._queue is not None and len(self._queue) > 0

    def _spool(self, topic: str, payload: bytes, retain: bool) -> None:
        assert self._queue is not None
        self._queue.append(topic, bytes(payload), retain=retain)
        self._stats.spooled += 1
        self._queue_changed.set()
        self._changed.set()

    def _start_delivery(self, message: Outgoing) -> None:
        assert self._tasks is not None
        key = self._next_key
        self._next_key += 1
        self._inflight[key] = message
        task = self._tasks.create_task(self._deliver(key, message), name=f"mqtt-deliver-{key}")
        self._deliveries[key] = task
        task.add_done_callback(functools.partial(self._forget_delivery, key))

    def _forget_delivery(self, key: int, _task: asyncio.Task[None]) -> None:
        self._deliveries.pop(key, None)

    async def _deliver(self, key: int, message: Outgoing) -> None:
        assert self._acks is not None and self._queue is not None
        try:
            # No await between the check and paho's publish: the session either takes the
            # message (and will retransmit it after a reconnect) or we queue it ourselves.
            if not self._connected:
                self._requeue(key, message)
                return
            await self._acks.publish(
                message.topic, message.payload, qos=self.config.qos, retain=message.retain
            )
        except Refused as exc:
            self._refused(key, message, exc)
            return
        except aiomqtt.MqttCodeError as exc:
            log.warning("publish refused by the session (%s); queued for replay", exc)
            self._requeue(key, message)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("publish to %s failed; queued for replay", message.topic)
            self._requeue(key, message)
            return
        message.done = True
        self._refusals.reset()
        self._stats.published += 1
        if self._on_acked is not None:
            self._on_acked(message.topic, message.payload)
        if message.row_id is not None:
            self._stats.replayed += 1
            self._queue.delete([message.row_id])
        self._inflight.pop(key, None)
        self._changed.set()
        await self._release_slot()

    def _refused(self, key: int, message: Outgoing, exc: Refused) -> None:
        """The broker did not take the message: keep it (queue) and hold sending for a backoff."""
        self._stats.refused += 1
        now = time.monotonic()
        if now >= self._hold_until:
            delay = self._refusals.next_delay()
            self._hold_until = now + delay
            log.warning(
                "%s on %s (%d refused so far): queued again, sending resumes in %.1f s (attempt %d)",
                exc,
                message.topic,
                self._stats.refused,
                delay,
                self._refusals.attempt,
            )
        self._requeue(key, message)

    async def _wait_hold(self) -> None:
        """After a refusal, send nothing until the hold is over (live messages are queued)."""
        wait = self._hold_until - time.monotonic()
        if wait > 0:  # one sleep: a refusal meanwhile only moves _hold_until while we sleep
            await asyncio.sleep(wait)
            await self._wait_hold()

    def _requeue(self, key: int, message: Outgoing) -> None:
        self._inflight.pop(key, None)
        self._changed.set()
        if message.row_id is None:
            self._spool(message.topic, message.payload, message.retain)
        else:
            # Still in the queue: let the replay pick it up again.
            self._replay_cursor = min(self._replay_cursor, message.row_id - 1)
            self._queue_changed.set()
        self._wake_slots()

    async def _replay(self) -> None:
        assert self._queue is not None
        queue = self._queue
        interval = 1.0 / self.config.replay_rate if self.config.replay_rate > 0 else 0.0
        inflight_rows = {m.row_id for m in self._inflight.values() if m.row_id is not None}
        while True:
            batch = [
                m
                for m in queue.peek(after_id=self._replay_cursor, limit=self.config.replay_batch)
                if m.id not in inflight_rows
            ]
            if not batch:
                self._queue_changed.clear()
                await self._queue_changed.wait()
                continue
            started = time.monotonic()
            for row in batch:
                await self._wait_hold()
                if not await self._acquire_slot():
                    return
                self._replay_cursor = row.id
                self._start_delivery(Outgoing(row.topic, row.payload, row.retain, row_id=row.id))
                if interval:
                    await asyncio.sleep(interval)
            inflight_rows = {m.row_id for m in self._inflight.values() if m.row_id is not None}
            log.info(
                "replayed %d queued messages in %.2f s (%d left)",
                len(batch),
                time.monotonic() - started,
                len(queue),
            )
