"""The broker side of the ingest: a persistent MQTT 5 session whose messages are acknowledged by hand.

aiomqtt 2.5 acknowledges a message as soon as paho receives it and queues it without bound, so a
crash loses what was acknowledged but not yet stored. Here, on the paho client underneath
(reached, like every private name, through :mod:`enerlink.mqtt_internals`):

* ``manual_ack_set(True)`` is switched on before connecting (a resumed session redelivers right
  after CONNACK); the socket is read by :class:`enerlink.ingest.mqtt_reader.Reader`, installed in place of
  aiomqtt's reader when paho opens the socket: it decodes PUBLISH packets itself (many per wake-up)
  and appends ``(topic, payload, mid, qos, dup)`` to a deque: no aiomqtt queue, no per-message task;
* we subscribe at QoS 1 (devices still publish at QoS 2; QoS 2 with manual ack stalls a resumed
  session because paho does not answer a re-sent PUBREL it does not know), with retain handling 1
  (a retained message is delivered when the subscription is new, not at every reconnect), and
  acknowledge only after the batch is in Redis (:meth:`Session.ack`: the PUBACKs of a batch go out
  in one write);
* the subscription runs beside the worker's batches: a resumed session's backlog arrives ahead of
  the SUBACK, and must be stored and acknowledged for the reader to get to it.

Memory held is bounded (``ENERLINK_INGEST_MAX_HELD`` messages, ``ENERLINK_INGEST_MAX_HELD_BYTES``
payload bytes). "Held" is every message received and not yet acknowledged: in the deque or in the
batch being written. The broker is told a Receive Maximum (``ENERLINK_INGEST_RECEIVE_MAXIMUM``), but
Mosquitto 2.0 overshoots it when a session resumes with a backlog (measured with the cap lifted:
17,500 of a 20,000 backlog held at once, window 1,000; libmosquitto's own MQTT 5 client gives up with
a protocol error), so the window alone is no bound. The reader checks the cap before decoding each PUBLISH;
at the cap it removes itself from the event loop, and TCP flow control holds the broker back (the
rest waits in the session queue, where it belongs). Each acknowledgement makes room and resumes it,
with an immediate read of what is already buffered (bytes in the reader's buffer or an SSL object
raise no new readable event). So the peak held is at most ``max_held`` messages, and at most
``max_held_bytes`` plus one message (the broker's ``max_packet_size``, 1 MiB) of payload, plus the
reader's raw buffer (256 KB); a single message larger than the byte cap still goes through alone.
While the reader is stopped paho sees no bytes: a stop longer than about two keepalive intervals
(Redis down while the cap is reached) ends in a keepalive timeout, a reconnect with backoff and a
redelivery, nothing lost. Metrics: ``enerlink_ingest_held_messages``, ``..._held_messages_peak``,
``..._held_bytes_peak``, ``enerlink_ingest_reader_pauses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from enerlink import mqtt, mqtt_internals
from enerlink.ingest.mqtt_reader import Reader
from enerlink.ingest.settings import Settings
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)
SUBSCRIBE_TIMEOUT_S = 300.0
#: QoS 1 publishes (confirmations, resend requests) paho keeps in flight. Its default, 20, sends each of
#: the rest alone when a PUBACK comes back: a write, and a wakeup of the broker and of this worker, per
#: confirmation. 100 lets a claim's confirmations go out in bursts (the pipeline's CPU of confirming went
#: from about +44 to +20-30 us per message in the ingest bench). Mosquitto discards what a client sends
#: beyond the Receive Maximum it advertises (its ``max_inflight_messages``): keep that at least this
#: (mosquitto/mosquitto.conf: 100; a test checks).
PUBLISH_WINDOW = 100


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool


def subscriptions(settings: Settings) -> list[str]:
    """The topic filters the ingest subscribes to (shared when a group is configured)."""
    topics: Topics = settings.common.topics
    filters = [topics.data, topics.status, topics.all_presence, topics.resent]
    if settings.confirm_interval_s > 0:
        filters.append(topics.all_command_acks)  # resend acks (any worker may get a meter's ack)
    if settings.share_group:
        filters = [Topics.shared(settings.share_group, f) for f in filters]
    return filters


class Session:
    """One connected session: take batches, acknowledge them once stored.

    ``held`` counts messages received and not yet acknowledged (in the buffer or in the batch being
    written); the reader stops at ``max_held`` messages or ``max_held_bytes`` payload bytes.
    """

    def __init__(self, client: aiomqtt.Client, *, max_held: int, max_held_bytes: int) -> None:
        self._client = client
        self._paho: paho.Client = mqtt_internals.paho_client(client)
        self._buffer: deque[Incoming] = deque()
        self._ready = asyncio.Event()
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self.held = 0
        self.held_bytes = 0
        self.peak = 0
        self.peak_bytes = 0
        self._subscription: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._paho.manual_ack_set(True)
        self._paho.on_message = self._on_message  # QoS 2 deliveries only (paho's own flow)
        self._reader = Reader(self._paho, on_publish=self._take, full=self._full, on_error=self._fail)
        # after aiomqtt's own (its reader, misc (keepalive) task), ours replaces the reader
        mqtt_internals.chain_on_socket_open(
            self._paho, lambda sock: loop.call_soon_threadsafe(self._reader.attach, sock)
        )

    def _take(self, topic: str, payload: bytes, mid: int, qos: int, dup: bool) -> None:
        self._buffer.append(Incoming(topic=topic, payload=payload, mid=mid, qos=qos, dup=dup))
        self.held += 1
        self.held_bytes += len(payload)
        self.peak = max(self.peak, self.held)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        self._ready.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else bytes(message.payload)
        self._take(message.topic, payload, message.mid, message.qos, bool(message.dup))

    def _full(self) -> bool:
        return self.held >= self.max_held or self.held_bytes >= self.max_held_bytes

    def _fail(self, exc: BaseException) -> None:
        mqtt_internals.fail_connection(self._client, exc)

    @property
    def connected(self) -> bool:
        return not mqtt_internals.is_disconnected(self._client)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None
    ) -> paho.MQTTMessageInfo | None:
        """Queue a QoS 1 publish on this connection without waiting (confirmations, resend requests):
        paho keeps at most its in-flight window unacknowledged and sends the rest as PUBACKs come back;
        ``is_published()`` turns true on the PUBACK. ``None`` when disconnected (nothing queued)."""
        if not self.connected:
            return None
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry_s
        info = self._paho.publish(topic, payload, qos=1, retain=retain, properties=properties)
        return info if info.rc == paho.MQTT_ERR_SUCCESS else None

    @property
    def pauses(self) -> int:
        """How many times the reader stopped at the cap."""
        return self._reader.pauses

    async def subscribe(self, filters: list[str]) -> None:
        """Subscribe; runs beside :meth:`batch` (see :func:`session`), so it may take a while."""
        # QoS 1 (see the module docstring); retained messages only when the subscription is new (a
        # resumed session does not get the topic's retained message again at every reconnect).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        granted = await self._client.subscribe([(f, options) for f in filters], timeout=SUBSCRIBE_TIMEOUT_S)
        refused = [f"{f}: {code}" for f, code in zip(filters, granted, strict=False) if _code(code) >= 0x80]
        if refused:
            raise aiomqtt.MqttError(f"subscription refused ({'; '.join(refused)})")

    def when_subscribed(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the broker has acknowledged the subscription."""
        task = self._subscription
        if task is None:
            return

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is None:
                callback()

        task.add_done_callback(done)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def batch(self, limit: int, *, idle_s: float | None = None) -> list[Incoming]:
        """Up to ``limit`` messages; waits for the first one (``[]`` after ``idle_s`` s idle).

        Raises :class:`aiomqtt.MqttError` when the connection is lost.
        """
        disconnected = mqtt_internals.disconnected(self._client)
        while not self._buffer:
            self._check(disconnected)
            self._ready.clear()
            waiter: asyncio.Future[object] = asyncio.ensure_future(self._ready.wait())
            watched: set[asyncio.Future[object]] = {waiter, disconnected}  # type: ignore[arg-type]
            if self._subscription is not None and not self._subscription.done():
                watched.add(self._subscription)  # type: ignore[arg-type]
            try:
                done, _ = await asyncio.wait(watched, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not done:
                return []
        self._check(disconnected)
        buffer = self._buffer
        return [buffer.popleft() for _ in range(min(limit, len(buffer)))]

    def _check(self, disconnected: asyncio.Future[None]) -> None:
        task = self._subscription
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            raise aiomqtt.MqttError(f"subscription failed: {exc}") from exc
        if disconnected.done():
            exc = disconnected.exception() if not disconnected.cancelled() else None
            raise aiomqtt.MqttError(f"disconnected: {exc}") from exc

    def ack(self, messages: list[Incoming]) -> None:
        """Acknowledge ``messages`` (call only once they are safely stored) and read on if paused.

        The PUBACKs of a batch go out as one write (they are 4 bytes each).
        """
        self.held -= len(messages)
        self.held_bytes -= sum(len(m.payload) for m in messages)
        if mqtt_internals.is_disconnected(self._client):
            return  # mids belong to the lost connection; the broker redelivers them
        mqtt_internals.queue_pubacks(self._paho, [m.mid for m in messages if m.qos == 1])
        for message in messages:
            if message.qos == 2:
                self._paho.ack(message.mid, 2)
        if self._reader.paused and not self._full():
            self._reader.resume()


@asynccontextmanager
async def session(settings: Settings) -> AsyncIterator[Session]:
    """Connect with the persistent session ``settings.client_id`` and subscribe."""
    client = mqtt.client(
        settings.common.mqtt,
        identifier=settings.client_id,
        persistent=True,
        session_expiry_s=settings.session_expiry_s,
        receive_maximum=settings.receive_maximum,
        max_inflight_messages=PUBLISH_WINDOW,
    )
    live = Session(client, max_held=settings.max_held, max_held_bytes=settings.max_held_bytes)
    async with client:
        mqtt_internals.check_connected(client)
        # A resumed session's backlog arrives right after CONNACK, ahead of the SUBACK: the worker
        # must store (and acknowledge) while the subscription is pending, or the reader, stopped at
        # its cap, would never reach the SUBACK.
        live._subscription = asyncio.create_task(
            live.subscribe(subscriptions(settings)), name=f"subscribe-{settings.client_id}"
        )
        try:
            yield live
        finally:
            live._subscription.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await live._subscription


def _code(granted: object) -> int:
    """A SUBACK entry as a number (paho gives ``ReasonCode`` on MQTT 5, an int on 3.1.1)."""
    value = getattr(granted, "value", granted)
    return value if isinstance(value, int) else 0x80
