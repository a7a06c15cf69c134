"""Live data for WebSocket clients: the API subscribes to the MQTT data topic itself and fans each
valid message out to every connected client through a bounded per-client queue.

A client whose queue is full is dropped (its ``dropped`` event is set and its socket closed by the
handler): publishing never waits for a client, so one slow client cannot slow the others. The
handler also drops a client whose socket accepts nothing for ``ENERLINK_API_WS_SEND_TIMEOUT_S``
(:meth:`LiveHub.drop`), so a peer that never reads holds at most its queue and one blocked frame.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

import aiomqtt
from pydantic import ValidationError

from enerlink import mqtt
from enerlink.backoff import Backoff
from enerlink.config import MqttEndpoint
from enerlink.schemas.telemetry import DataMessage
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class LiveClient:
    meter_id: str | None
    queue: asyncio.Queue[str]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""  # why it was dropped (for the close frame and the log)


@dataclass(slots=True)
class LiveStats:
    received: int = 0
    invalid: int = 0
    delivered: int = 0
    dropped_clients: int = 0


class LiveHub:
    """One MQTT subscription (QoS 0, clean session) shared by every WebSocket client."""

    def __init__(self, *, endpoint: MqttEndpoint, topics: Topics, queue_size: int) -> None:
        self._endpoint = endpoint
        self._topics = topics
        self._queue_size = queue_size
        self._clients: set[LiveClient] = set()
        self.stats = LiveStats()
        self.connected = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self, meter_id: str | None = None) -> LiveClient:
        client = LiveClient(meter_id=meter_id, queue=asyncio.Queue(self._queue_size))
        self._clients.add(client)
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        self._clients.discard(client)

    def publish(self, payload: bytes) -> int:
        """Validate one data message and queue it for every matching client; returns deliveries."""
        self.stats.received += 1
        try:
            message = DataMessage.model_validate_json(payload)
        except ValidationError as exc:
            self.stats.invalid += 1
            log.warning("live: invalid data message skipped: %s", exc.errors(include_url=False)[:1])
            return 0
        text = payload.decode()
        delivered = 0
        for client in list(self._clients):
            if client.meter_id is not None and client.meter_id != message.meterId:
                continue
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                self.drop(client, f"client too slow: {client.queue.qsize()} messages queued")
                continue
            delivered += 1
        self.stats.delivered += delivered
        return delivered

    def drop(self, client: LiveClient, reason: str) -> None:
        """Stop feeding ``client`` and tell its handler to close it (counted once)."""
        if client.dropped.is_set():
            return
        self._clients.discard(client)
        client.reason = reason
        client.dropped.set()
        self.stats.dropped_clients += 1
        log.warning("live: dropped a WebSocket client (%s); %d clients left", reason, len(self._clients))

    async def run(self) -> None:
        """Subscribe and fan out until cancelled; reconnect with backoff."""
        backoff = Backoff(initial=0.5, cap=15.0)
        identifier = f"enerlink-api-{uuid.uuid4().hex[:12]}"
        while True:
            try:
                async with mqtt.client(self._endpoint, identifier=identifier, persistent=False) as client:
                    await client.subscribe(self._topics.data, qos=0)
                    self.connected.set()
                    backoff.reset()
                    log.info("live: subscribed to %s on %r", self._topics.data, self._endpoint)
                    async for message in client.messages:
                        if isinstance(message.payload, bytes | bytearray):
                            self.publish(bytes(message.payload))
            except (aiomqtt.MqttError, OSError) as exc:
                self.connected.clear()
                delay = backoff.next_delay()
                log.warning(
                    "live: MQTT connection lost (%s); attempt %d in %.1f s", exc, backoff.attempt, delay
                )
                await asyncio.sleep(delay)
