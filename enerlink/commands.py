"""Commands to meters over MQTT and their acknowledgements, shared by the API, ``enerlink settle`` and
``enerlink edge scenario|settle|status-now``.

:func:`send` subscribes to the meters' ack topics first, then publishes the command (QoS 2) with one
command ``id`` that every ack echoes, and waits until every meter has answered or the timeout ends.
When it waits, the command carries an MQTT 5 *message expiry* equal to the timeout: a meter that is
offline now does not receive (and act on) a queued ``settle`` hours later, after the caller was told
it timed out. :func:`log_outcomes` records each meter's outcome in the events table (kind
``command``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg import AsyncConnection

from enerlink.config import ConfigError, Env, MqttEndpoint
from enerlink.events import Event, insert_events
from enerlink.mqtt import client as mqtt_client
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.wire import Keys, Topics

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "timeout"]
COMMAND_EVENT = "command"
#: above this many meters one wildcard subscription replaces the per-meter ones
_WILDCARD_ABOVE = 20


class BrokerError(RuntimeError):
    """The command could not be sent: the broker is unreachable or the connection broke."""


@dataclass(frozen=True, slots=True)
class CommandSettings:
    timeout_s: float  # how long a command waits for the meters' acks

    @classmethod
    def from_env(cls, env: Env) -> Self:
        settings = cls(timeout_s=env.float("COMMAND_TIMEOUT_S", 10.0))
        if not 0 < settings.timeout_s <= 600:
            raise ConfigError("ENERLINK_COMMAND_TIMEOUT_S must be in (0, 600]")
        return settings


@dataclass(frozen=True, slots=True)
class Answer:
    """One meter's answer to one command: its ack, or ``None`` when none came within the timeout."""

    meter_id: str
    ack: dict[str, Any] | None
    elapsed_s: float

    @property
    def outcome(self) -> Outcome:
        if self.ack is None:
            return "timeout"
        return "ok" if self.ack.get("ok") is True else "error"


def new_command_id() -> str:
    return uuid.uuid4().hex[:16]


def _expiring(timeout_s: float) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = max(1, math.ceil(timeout_s))
    return properties


def _parse_ack(payload: Any) -> dict[str, Any] | None:
    try:
        ack = json.loads(bytes(payload))
    except (TypeError, ValueError):
        return None
    return ack if isinstance(ack, dict) else None


async def send(
    endpoint: MqttEndpoint,
    topics: Topics,
    meters: Sequence[str],
    body: Mapping[str, Any],
    *,
    timeout_s: float,
    command_id: str | None = None,
) -> dict[str, Answer]:
    """Publish ``body`` (plus ``id``) to each meter's command topic; collect acks for ``timeout_s``.

    Returns one :class:`Answer` per meter, in the order given. ``timeout_s <= 0`` publishes without
    waiting (and without expiry: the command waits at the broker for the meter); every answer is then
    a ``timeout``.
    """
    meters = list(dict.fromkeys(meters))
    command = {**body, "id": command_id or new_command_id()}
    payload = orjson.dumps(command)
    started = time.monotonic()
    try:
        acks, elapsed = await _exchange(
            endpoint, topics, meters, payload, command_id=command["id"], timeout_s=timeout_s
        )
    except aiomqtt.MqttError as exc:
        raise BrokerError(
            f"cannot send {command.get('cmd')} via the MQTT broker {endpoint!r}: {exc}"
        ) from exc
    answers = {m: Answer(meter_id=m, ack=acks.get(m), elapsed_s=elapsed.get(m, timeout_s)) for m in meters}
    log.info(
        "command %s (id %s) to %d meters: %d acks in %.2f s",
        command.get("cmd"),
        command["id"],
        len(meters),
        len(acks),
        time.monotonic() - started,
    )
    return answers


async def _exchange(
    endpoint: MqttEndpoint,
    topics: Topics,
    meters: list[str],
    payload: bytes,
    *,
    command_id: str,
    timeout_s: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    wanted = set(meters)
    acks: dict[str, dict[str, Any]] = {}
    elapsed: dict[str, float] = {}
    started = time.monotonic()
    identifier = f"enerlink-ctl-{uuid.uuid4().hex[:8]}"
    async with mqtt_client(endpoint, identifier=identifier) as client:
        waiting = timeout_s > 0 and bool(meters)
        if waiting:
            if len(meters) > _WILDCARD_ABOVE:
                await client.subscribe(topics.command_ack("+"), qos=1)
            else:
                for meter in meters:
                    await client.subscribe(topics.command_ack(meter), qos=1)
        properties = _expiring(timeout_s) if waiting else None
        for meter in meters:
            await client.publish(topics.command(meter), payload, qos=2, properties=properties)
        if waiting:
            try:
                async with asyncio.timeout(max(0.0, timeout_s - (time.monotonic() - started))):
                    async for message in client.messages:
                        ack = _parse_ack(message.payload)
                        if ack is None or ack.get("id") != command_id:
                            continue
                        meter = str(ack.get("meterId"))
                        if meter in wanted and meter not in acks:
                            acks[meter] = ack
                            elapsed[meter] = time.monotonic() - started
                            if len(acks) == len(wanted):
                                break
            except TimeoutError:
                pass
    return acks, elapsed


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _iso_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def describe_meter(redis: AsyncRedis, keys: Keys, meter_id: str) -> str:
    """``last seen 2026-11-23T18:00:00Z, offline since …`` (or ``never seen``) from the ingest's hashes."""
    part = keys.of(meter_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(part.meters, meter_id)
        pipe.hget(part.presence, meter_id)
        seen_raw, presence_raw = await pipe.execute()
    parts: list[str] = []
    seen = _text(seen_raw)
    try:
        parts.append(f"last seen {_iso_ms(float(seen))}" if seen else "never seen")
    except ValueError:
        parts.append("last seen unknown")
    presence = _parse_ack(presence_raw.encode() if isinstance(presence_raw, str) else presence_raw or b"")
    if presence is not None and presence.get("online") is False:
        since = presence.get("since")  # the ingest writes epoch ms
        if isinstance(since, int | float) and not isinstance(since, bool) and since > 0:
            since = _iso_ms(since)
        parts.append(f"offline since {since}" if since else "offline")
    return ", ".join(parts)


def timeout_message(meter_id: str, cmd: str, timeout_s: float, described: str) -> str:
    return f"{meter_id} did not acknowledge {cmd} within {timeout_s:g} s ({described})"


async def log_outcomes(
    conn: AsyncConnection[Any],
    answers: Sequence[Answer],
    *,
    body: Mapping[str, Any],
    request_id: str,
    source: str,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """One ``command`` event per meter: the command, its request id, the outcome and the ack's result
    or error. ``extra`` adds details per meter (e.g. the settlement id). Returns the rows inserted."""
    rows: list[Event] = []
    for answer in answers:
        details: dict[str, Any] = {
            "cmd": body.get("cmd"),
            "args": {k: v for k, v in body.items() if k not in ("cmd", "id")},
            "request_id": request_id,
            "source": source,
            "outcome": answer.outcome,
            "elapsed_s": round(answer.elapsed_s, 3),
        }
        if answer.ack is not None:
            details["result" if answer.outcome == "ok" else "error"] = answer.ack.get(
                "result" if answer.outcome == "ok" else "error"
            )
        details.update((extra or {}).get(answer.meter_id, {}))
        severity = "info" if answer.outcome == "ok" else "warning"
        rows.append(Event(answer.meter_id, datetime.now(UTC), COMMAND_EVENT, severity, details))
    return await insert_events(conn, rows)
