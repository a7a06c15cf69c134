"""Talking to the simulated fleet process over MQTT (:mod:`enerlink.schemas.simulation`), for the API.

:func:`read_state` returns the fleet's retained state; :func:`send` subscribes to the state topic,
publishes a command (QoS 2, MQTT 5 message expiry = the timeout, so a fleet process that is down now
never acts on it later) and returns the state that answers it (the one echoing the command's id).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from enerlink.commands import BrokerError, new_command_id
from enerlink.config import MqttEndpoint
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.simulation import FleetCommand, FleetState
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)


def _state(payload: Any) -> FleetState | None:
    try:
        return FleetState.model_validate_json(bytes(payload))
    except (TypeError, ValueError, ValidationError):
        return None


def _identifier() -> str:
    return f"enerlink-fleet-ctl-{uuid.uuid4().hex[:8]}"


async def read_state(endpoint: MqttEndpoint, topics: Topics, *, wait_s: float = 1.0) -> FleetState | None:
    """The fleet's retained state, or ``None`` when none arrives within ``wait_s`` (no fleet process
    has ever run under this prefix). Raises :class:`BrokerError` when the broker is unreachable."""
    try:
        async with mqtt_client(endpoint, identifier=_identifier()) as client:
            await client.subscribe(topics.fleet_state, qos=1)
            try:
                async with asyncio.timeout(wait_s):
                    async for message in client.messages:
                        state = _state(message.payload)
                        if state is not None:
                            return state
            except TimeoutError:
                pass
    except aiomqtt.MqttError as exc:
        raise BrokerError(
            f"cannot read the simulated fleet's state via the MQTT broker {endpoint!r}: {exc}"
        ) from exc
    return None


async def send(
    endpoint: MqttEndpoint, topics: Topics, command: FleetCommand, *, timeout_s: float
) -> FleetState | None:
    """Publish ``command`` (given an id when it has none) on the fleet command topic; the state that
    answers it, or ``None`` when no fleet process answered within ``timeout_s``."""
    if command.id is None:
        command = command.model_copy(update={"id": new_command_id()})
    payload = command.model_dump_json(exclude_none=True).encode()
    started = time.monotonic()
    answer: FleetState | None = None
    try:
        async with mqtt_client(endpoint, identifier=_identifier()) as client:
            await client.subscribe(topics.fleet_state, qos=1)
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, math.ceil(timeout_s))
            await client.publish(topics.fleet_command, payload, qos=2, properties=properties)
            try:
                async with asyncio.timeout(max(0.0, timeout_s - (time.monotonic() - started))):
                    async for message in client.messages:
                        state = _state(message.payload)
                        if state is not None and state.id == command.id:
                            answer = state
                            break
            except TimeoutError:
                pass
    except aiomqtt.MqttError as exc:
        raise BrokerError(f"cannot send {command.cmd} via the MQTT broker {endpoint!r}: {exc}") from exc
    log.info(
        "fleet %s (id %s): %s in %.2f s",
        command.cmd,
        command.id,
        "no answer" if answer is None else ("refused" if answer.error else "ok"),
        time.monotonic() - started,
    )
    return answer
