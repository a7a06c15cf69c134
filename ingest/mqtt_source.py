"""The broker side of the ingest: a persistent MQTT 5 session whose messages are acknowledged by hand.

aiomqtt 2.5 acknowledges a message as soon as paho receives it and queues it without bound, so a
crash loses what was acknowledged but not yet stored. Here, on the paho client underneath
(``aiomqtt.Client._client``; aiomqtt is pinned below 3):

* ``manual_ack_set(True)`` is switched on before connecting (a resumed session redelivers right
  after CONNACK), and paho's ``on_message`` is replaced by :meth:`Session._on_message`, which only
  appends ``(topic, payload, mid, qos, dup)`` to a deque: no aiomqtt queue, no per-message task;
* we subscribe at QoS 1 (devices still publish at QoS 2; QoS 2 with manual ack stalls a resumed
  session because paho does not answer a re-sent PUBREL it does not know) and send each PUBACK with
  ``ack(mid, 1)`` only after the batch is in Redis (:meth:`Session.ack`);
* the broker sends about Receive Maximum (``ENERLINK_INGEST_RECEIVE_MAXIMUM``) unacknowledged
  messages, so while Redis is down nothing is acknowledged, the window fills and the broker keeps
  the rest in the persistent session. Mosquitto 2.0 overshoots that window when a session resumes
  with a backlog (measured: 4,287 held with a window of 1,000, about 8 MB). Reaching
  :attr:`Session.bound` is logged; nothing is dropped. Pausing the socket reader at the bound
  (:meth:`Session._pause`, TCP flow control) is written but not switched on: it stalled the kill -9
  soak test and was not finished in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from enerlink import mqtt
from ingest.settings import Settings
from schemas.wire import Topics

log = logging.getLogger(__name__)


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
    filters = [topics.data, topics.status, topics.all_presence]
    if settings.share_group:
        filters = [Topics.shared(settings.share_group, f) for f in filters]
    return filters


class Session:
    """One connected session: take batches, acknowledge them once stored."""

    def __init__(self, client: aiomqtt.Client, *, bound: int) -> None:
        self._client = client
        self._paho: paho.Client = client._client
        self._buffer: deque[Incoming] = deque()
        self._ready = asyncio.Event()
        self.bound = bound
        self.peak = 0
        self.pauses = 0
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self._paho.manual_ack_set(True)
        self._paho.on_message = self._on_message

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        self._buffer.append(
            Incoming(
                topic=message.topic,
                payload=message.payload if isinstance(message.payload, bytes) else bytes(message.payload),
                mid=message.mid,
                qos=message.qos,
                dup=bool(message.dup),
            )
        )
        self.peak = max(self.peak, len(self._buffer))
        if len(self._buffer) >= self.bound and not self._paused:
            self._paused = True  # see the module docstring: flagged, not enforced (yet)
            self.pauses += 1
            log.warning("buffer reached %d unacknowledged messages (broker window overshoot)", self.bound)
        self._ready.set()

    def _pause(self) -> None:
        """Stop reading the socket: TCP flow control holds the broker back until we catch up."""
        sock = self._paho.socket()
        if sock is not None and not self._paused:
            self._loop.remove_reader(sock.fileno())
            self._paused = True
            self.pauses += 1

    def _resume(self) -> None:
        sock = self._paho.socket()
        if self._paused and sock is not None and not self._client._disconnected.done():
            self._loop.add_reader(sock.fileno(), self._read)
        self._paused = False

    def _read(self) -> None:
        """The socket reader as aiomqtt installs it (re-installed after a pause)."""
        try:
            while True:
                self._paho.loop_read()
                sock = self._paho.socket()
                pending = getattr(sock, "pending", None)
                if pending is None or pending() <= 0:
                    break
        except Exception as exc:
            if not self._client._disconnected.done():
                self._client._disconnected.set_exception(exc)

    async def subscribe(self, filters: list[str]) -> None:
        await self._client.subscribe([(f, 1) for f in filters])

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def batch(self, limit: int, *, idle_s: float | None = None) -> list[Incoming]:
        """Up to ``limit`` messages; waits for the first one (``[]`` after ``idle_s`` s idle).

        Raises :class:`aiomqtt.MqttError` when the connection is lost.
        """
        disconnected: asyncio.Future[None] = self._client._disconnected
        while not self._buffer:
            self._check(disconnected)
            self._ready.clear()
            waiter: asyncio.Future[object] = asyncio.ensure_future(self._ready.wait())
            watched: set[asyncio.Future[object]] = {waiter, disconnected}  # type: ignore[arg-type]
            try:
                done, _ = await asyncio.wait(watched, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not done:
                return []
        self._check(disconnected)
        count = min(limit, len(self._buffer))
        taken = [self._buffer.popleft() for _ in range(count)]
        if self._paused and len(self._buffer) <= self.bound // 2:
            self._paused = False
        return taken

    def _check(self, disconnected: asyncio.Future[None]) -> None:
        if disconnected.done():
            exc = disconnected.exception() if not disconnected.cancelled() else None
            raise aiomqtt.MqttError(f"disconnected: {exc}") from exc

    def ack(self, messages: list[Incoming]) -> None:
        """Send PUBACK for each QoS 1 message (call only once they are safely stored)."""
        if self._client._disconnected.done():
            return  # mids belong to the lost connection; the broker redelivers them
        for message in messages:
            if message.qos == 1:
                self._paho.ack(message.mid, 1)


@asynccontextmanager
async def session(settings: Settings) -> AsyncIterator[Session]:
    """Connect with the persistent session ``settings.client_id`` and subscribe."""
    client = mqtt.client(
        settings.common.mqtt,
        identifier=settings.client_id,
        persistent=True,
        session_expiry_s=settings.session_expiry_s,
    )
    if client._properties is not None:  # always set by enerlink.mqtt.client
        client._properties.ReceiveMaximum = settings.receive_maximum
    live = Session(client, bound=settings.receive_maximum + max(settings.batch, 1000))
    async with client:
        await live.subscribe(subscriptions(settings))
        yield live
