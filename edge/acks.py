"""Publish and learn whether the broker accepted: MQTT 5 reason codes on PUBACK and PUBREC.

An MQTT 5 broker can refuse a QoS 1/2 message in its acknowledgement: PUBACK or PUBREC with a
reason code of 0x80 or more (Mosquitto sends 0x97 *quota exceeded* when a resumed session already
holds its Receive Maximum of incoming QoS 2 messages, 0x87 *not authorized* for a topic the ACL
denies). paho ignores the PUBREC's reason code and completes the exchange with PUBREL/PUBCOMP, and
aiomqtt's ``publish`` ignores every reason code, so a refused message looked delivered: the edge
dropped it from its queue and logged it as acknowledged, and it was lost.

:class:`AckTracker` hooks the paho client under aiomqtt: it reads the reason code of every PUBREC
(two bytes of packet id, then the reason code, absent when 0), and resolves a future per packet id
when the exchange completes (``on_publish``), with the refusal if there was one. Publishes that do
not go through :meth:`AckTracker.publish` (presence, command replies) keep aiomqtt's own handling.
A PUBCOMP's reason code is not a refusal: 0x92 *packet identifier not found* answers a PUBREL
resent after a reconnect for a message the broker had already taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from enerlink import mqtt_internals

log = logging.getLogger(__name__)

_REFUSED = 0x80
_NAMES = {
    0x80: "unspecified error",
    0x83: "implementation specific error",
    0x87: "not authorized",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
}


class Refused(Exception):
    """The broker answered a QoS 1/2 PUBLISH with a failure reason code: the message is not taken."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"broker refused the message: 0x{code:02x} {_NAMES.get(code, 'refused')}")


class AckTracker:
    """Per-packet-id outcome of QoS 1/2 publishes on one paho client (the one inside aiomqtt)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._inner: paho.Client = mqtt_internals.paho_client(client)
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._pubrec: dict[int, int] = {}
        self._install()

    def _install(self) -> None:
        inner = self._inner
        aiomqtt_on_publish = cast("Callable[..., None]", inner.on_publish)

        def on_refused(mid: int, code: int) -> None:
            self._pubrec[mid] = code

        def on_publish(
            paho_client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any = None
        ) -> None:
            refused = self._pubrec.pop(mid, 0)
            waiter = self._waiters.pop(mid, None)
            if waiter is None:
                aiomqtt_on_publish(paho_client, userdata, mid, reason_code, properties)
                return
            if (
                not refused
                and isinstance(reason_code, ReasonCode)
                and reason_code.value >= _REFUSED
                and mqtt_internals.outgoing_qos(paho_client, mid) == 1  # a PUBACK's (PUBCOMP's is not)
            ):
                refused = reason_code.value
            if not waiter.done():
                waiter.set_result(refused)

        mqtt_internals.install_pubrec_hook(inner, on_refused)
        inner.on_publish = on_publish

    async def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        """Publish and wait for the broker's acknowledgement; :class:`Refused` if it refused.

        Waits across reconnects (paho retransmits in the resumed session); cancel to give up.
        """
        info = self._inner.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if qos == 0:
            return
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pubrec.pop(info.mid, None)  # a refusal left from an earlier use of this packet id
        self._waiters[info.mid] = waiter
        try:
            refused = await waiter
        finally:
            self._waiters.pop(info.mid, None)
        if refused:
            raise Refused(refused)
