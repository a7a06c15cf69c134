"""The publisher's paho session: building the client and reading every CONNACK.

aiomqtt drops the CONNACK's properties and reconnects with Clean Start 1; :class:`Session` builds the
client so that only the first connection of the process starts clean, reads the broker's Receive
Maximum, re-sends unfinished exchanges as whole PUBLISH when the broker lost the session, and reports a
disconnect the moment paho sees it. Every private paho/aiomqtt access goes through
:mod:`enerlink.mqtt_internals`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from enerlink import mqtt_internals
from enerlink.edge.publish_config import PublisherConfig
from enerlink.mqtt import tls_context

log = logging.getLogger(__name__)

MQTT_MAX_RECEIVE = 65535


class Session:
    """One paho client for the publisher's lifetime and what its CONNACKs said."""

    def __init__(
        self, config: PublisherConfig, *, will: aiomqtt.Will | None, on_lost: Callable[[], None]
    ) -> None:
        self.config = config
        self.receive_maximum: int | None = None
        self.limit = max(1, config.max_inflight)
        """The in-flight window: ``min(config.max_inflight, Receive Maximum)``."""
        self._resuming = False  # a connection of this process succeeded: reconnects resume the session
        self._on_lost = on_lost
        self.client = self._build_client(will)

    def _build_client(self, will: aiomqtt.Will | None) -> aiomqtt.Client:
        cfg = self.config
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = cfg.session_expiry_s
        client = aiomqtt.Client(
            hostname=cfg.endpoint.host,
            port=cfg.endpoint.port,
            username=cfg.endpoint.username,
            password=cfg.endpoint.password,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # The first connection of the process starts clean (a previous process's packet ids
            # never collide with ours); every reconnect resumes the session (Clean Start 0, set in
            # on_connect: paho resets its "first connect" flag in every connect(), which aiomqtt
            # calls on every reconnect), so an exchange cut after PUBREC is finished with PUBREL and
            # delivered once. If the broker lost the session (CONNACK session present = 0) those
            # exchanges go again as whole PUBLISH, never a bare PUBREL the broker would answer with
            # PUBCOMP and nothing to deliver (tests/test_publisher_session.py).
            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            tls_context=tls_context(cfg.endpoint),
            will=will,
            keepalive=cfg.keepalive,
            timeout=cfg.connect_timeout_s,
            max_inflight_messages=max(1, cfg.max_inflight),
        )
        # aiomqtt warns once more than this many calls are pending; a full window is normal here.
        client.pending_calls_threshold = 2 * max(1, cfg.max_inflight) + 10
        self._install_hooks(client)
        return client

    def _install_hooks(self, client: aiomqtt.Client) -> None:
        """Read the CONNACK's Receive Maximum and see disconnects the moment paho does."""
        inner = mqtt_internals.paho_client(client)  # aiomqtt drops the CONNACK properties
        aiomqtt_on_connect = cast("Callable[..., None]", inner.on_connect)
        aiomqtt_on_disconnect = cast("Callable[..., None]", inner.on_disconnect)

        def on_connect(
            paho_client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
        ) -> None:
            if not getattr(reason_code, "is_failure", False):
                received = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
                self.receive_maximum = int(received) if received else None
                self.limit = max(1, min(self.config.max_inflight, int(received or MQTT_MAX_RECEIVE)))
                if self._resuming and not getattr(flags, "session_present", False):
                    resent = mqtt_internals.resend_unfinished_as_publish(paho_client)
                    if resent:
                        log.warning("the broker lost the session: %d messages in flight sent again", resent)
                self._resuming = True
                mqtt_internals.set_clean_start(client, False)  # reconnects resume the session
            aiomqtt_on_connect(paho_client, userdata, flags, reason_code, properties)

        def on_disconnect(
            paho_client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
        ) -> None:
            self._on_lost()
            aiomqtt_on_disconnect(paho_client, userdata, flags, reason_code, properties)

        inner.on_connect = on_connect
        inner.on_disconnect = on_disconnect
