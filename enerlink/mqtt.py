"""Building aiomqtt clients from an :class:`~enerlink.config.MqttEndpoint`."""

from __future__ import annotations

import ssl
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from enerlink.config import MqttEndpoint


def tls_context(endpoint: MqttEndpoint) -> ssl.SSLContext | None:
    if not endpoint.tls:
        return None
    return ssl.create_default_context(cafile=endpoint.ca_file)


def client(
    endpoint: MqttEndpoint,
    *,
    identifier: str,
    persistent: bool = False,
    session_expiry_s: int = 7 * 24 * 3600,
    will: aiomqtt.Will | None = None,
    keepalive: int = 30,
    max_queued_incoming: int = 0,
    receive_maximum: int | None = None,
    **kwargs: Any,
) -> aiomqtt.Client:
    """An MQTT 5 client. ``persistent`` keeps the broker-side session (and its queue) across
    disconnects for ``session_expiry_s`` seconds, so QoS 1/2 messages wait for us; every CONNECT
    then has Clean Start 0. ``receive_maximum`` is the CONNECT's Receive Maximum (the broker's
    in-flight window towards us)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return aiomqtt.Client(
        hostname=endpoint.host,
        port=endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
        tls_context=tls_context(endpoint),
        will=will,
        keepalive=keepalive,
        max_queued_incoming_messages=max_queued_incoming or None,
        **kwargs,
    )
