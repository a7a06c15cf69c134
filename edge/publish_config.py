"""What the edge's MQTT publisher is configured with and reports (:mod:`enerlink.edge.publisher`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from enerlink.config import MqttEndpoint
from enerlink.edge.queue import QueueLimits

ONLINE = b'{"online": true}'  # what the ingest expects on topics.presence(meter)
OFFLINE = b'{"online": false}'

OnConnect = Callable[[], Awaitable[None]]
OnAcked = Callable[[str, bytes], None]
"""Called with (topic, payload) once the broker acknowledged a message (QoS 2: PUBCOMP)."""


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    endpoint: MqttEndpoint
    client_id: str
    queue_path: Path | None = None
    """SQLite file of the store-and-forward queue; ``None`` keeps it in memory (lost on exit)."""
    max_inflight: int = 20
    """Upper bound of the QoS 2 window; the broker's Receive Maximum lowers it further."""
    queue_limits: QueueLimits = field(default_factory=QueueLimits)
    replay_rate: float = 20.0
    """Queued messages sent per second after a reconnect (live data is not held back)."""
    replay_batch: int = 50
    strict_order: bool = False
    """Queue live messages behind an existing backlog, so subscribers see one ordered stream."""
    presence_topic: str | None = None
    qos: int = 2
    keepalive: int = 30
    session_expiry_s: int = 24 * 3600
    backoff_initial_s: float = 0.5
    backoff_cap_s: float = 60.0
    connect_timeout_s: float = 10.0
    flush_timeout_s: float = 5.0
    """On exit, how long to wait for in-flight messages to be acknowledged before spooling them."""


@dataclass(slots=True)
class PublisherStats:
    published: int = 0
    """Messages acknowledged by the broker (QoS 2 completed), live and replayed."""
    queued: int = 0
    """Messages waiting in the store-and-forward queue."""
    inflight: int = 0
    attempts: int = 0
    """Connection attempts refused or lost since start (the status message's ``mqtt.attempts``)."""
    connects: int = 0
    connected: bool = False
    replayed: int = 0
    spooled: int = 0
    """Messages that went to the queue because the broker was unreachable."""
    dropped: int = 0
    """Queued messages removed by the size/age caps."""
    refused: int = 0
    """Messages the broker refused in its PUBREC/PUBACK (e.g. 0x97 quota exceeded), queued again."""
    window: int = 0
    receive_maximum: int | None = None


@dataclass(slots=True)
class Outgoing:
    """One message on its way: live (``row_id`` None) or replayed from the durable queue."""

    topic: str
    payload: bytes
    retain: bool
    row_id: int | None = None
    """Row in the durable queue (deleted once acknowledged); ``None`` for live messages."""
    done: bool = field(default=False)
