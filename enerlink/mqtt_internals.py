"""Every use of aiomqtt's and paho's private names, in one place.

The delivery machinery needs a few things neither library offers publicly: the reason code of a
PUBREC (paho ignores it), a socket reader of our own for the ingest (paho reads one packet per
call), acknowledgements batched into one write, the state of aiomqtt's connection futures, and
paho's resend of an unfinished QoS 2 exchange when the broker lost the session. Each access below
is marked ``# private: <library> <name>``; :data:`PRIVATE_NAMES` lists them all and
:func:`missing_names` checks them against the installed libraries (tests/test_mqtt_internals.py),
so an upgrade that renames one fails a test naming it instead of silently breaking delivery.

Pinned: aiomqtt 2.5 (``aiomqtt>=2.5,<3``), paho-mqtt 2.x. What the public API covers is used
directly by the callers (``paho.Client.manual_ack_set``/``ack``/``on_socket_open``/``on_connect``/
``protocol``/``socket()``/``is_connected()``, ``aiomqtt.Client.messages``).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    # (library, owner, name)
    ("aiomqtt", "Client", "_client"),
    ("aiomqtt", "Client", "_clean_start"),
    ("aiomqtt", "Client", "_connected"),
    ("aiomqtt", "Client", "_disconnected"),
    ("aiomqtt", "Client", "_lock"),
    ("paho", "Client", "_handle_pubrec"),
    ("paho", "Client", "_in_packet"),
    ("paho", "Client", "_out_messages"),
    ("paho", "Client", "_out_message_mutex"),
    ("paho", "Client", "_packet_queue"),
    ("paho", "Client", "_sock_recv"),
    ("paho", "Client", "_last_bytes_received"),
    ("paho", "Client", "_call_socket_register_write"),
    ("paho", "Client", "_do_on_publish"),
    ("paho", "MQTTMessage", "state"),
    ("paho", "module", "mqtt_ms_publish"),
    ("paho", "module", "mqtt_ms_resend_pubrel"),
)
"""Every private name used here; :func:`missing_names` checks them on real instances."""

_PUBACK = PacketTypes.PUBACK << 4
_PUBACK_PACKET = struct.Struct("!BBH")


# --- aiomqtt -------------------------------------------------------------------------------------


def paho_client(client: aiomqtt.Client) -> paho.Client:
    """The paho client under an aiomqtt client."""
    inner: paho.Client = client._client  # private: aiomqtt Client._client
    return inner


def set_clean_start(client: aiomqtt.Client, clean_start: bool) -> None:
    """The Clean Start flag of the next CONNECT (aiomqtt passes its constructor value to every
    ``connect()``, and paho treats every ``connect()`` as a first connection)."""
    client._clean_start = clean_start  # private: aiomqtt Client._clean_start


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The current connection's "disconnected" future (an exception when the link was lost)."""
    future: asyncio.Future[None] = client._disconnected  # private: aiomqtt Client._disconnected
    return future


def is_disconnected(client: aiomqtt.Client) -> bool:
    return disconnected(client).done()


def fail_connection(client: aiomqtt.Client, exc: BaseException) -> None:
    """End the current connection with ``exc`` (what aiomqtt's own reader does on a socket error)."""
    future = disconnected(client)
    if not future.done():
        future.set_exception(exc)


def check_connected(client: aiomqtt.Client) -> None:
    """Call right after ``async with client`` is entered: :class:`aiomqtt.MqttError` if the link is
    already gone. aiomqtt 2.5's ``__aenter__`` drops a disconnect that arrives between the CONNACK
    and its return (it replaces a completed "disconnected" future with a fresh one), which leaves a
    client that believes it is connected on a closed socket, for ever (seen when the broker closes a
    connection at once because another client took the id over)."""
    if not paho_client(client).is_connected():
        future = disconnected(client)
        if not future.done():
            future.set_result(None)  # lets ``async with`` exit without a DISCONNECT on a closed socket
        raise aiomqtt.MqttError("connection lost right after the CONNACK")


def renew_connected(client: aiomqtt.Client) -> None:
    """aiomqtt leaves the previous connection's "connected" future resolved after an unexpected
    disconnect; a fresh one makes the next ``async with`` wait for the new CONNACK."""
    if client._connected.done():  # private: aiomqtt Client._connected
        client._connected = asyncio.get_running_loop().create_future()  # private: aiomqtt Client._connected


def release_stuck(client: aiomqtt.Client) -> None:
    """aiomqtt keeps its reuse lock when a graceful DISCONNECT times out on a dead socket; without
    this the next ``async with client`` fails forever with "not reentrant"."""
    lock: asyncio.Lock = client._lock  # private: aiomqtt Client._lock
    if lock.locked():
        future = disconnected(client)
        if not future.done():
            future.set_result(None)
        lock.release()


# --- paho: outgoing acknowledgements -------------------------------------------------------------


def install_pubrec_hook(client: paho.Client, on_refused: Callable[[int, int], None]) -> None:
    """Call ``on_refused(mid, reason_code)`` for every PUBREC with a failure reason code (>= 0x80)
    for a message paho has in flight; paho then handles the PUBREC as usual."""
    handle_pubrec = client._handle_pubrec  # private: paho Client._handle_pubrec

    def on_pubrec() -> MQTTErrorCode:
        packet = bytes(client._in_packet["packet"][:3])  # private: paho Client._in_packet
        if len(packet) > 2 and packet[2] >= 0x80:
            (mid,) = struct.unpack("!H", packet[:2])
            if mid in client._out_messages:  # private: paho Client._out_messages
                on_refused(mid, packet[2])
        return handle_pubrec()

    client._handle_pubrec = on_pubrec  # type: ignore[method-assign]  # private: paho Client._handle_pubrec


def outgoing_qos(client: paho.Client, mid: int) -> int | None:
    """The QoS of the outgoing message ``mid`` paho still holds (``None`` if it holds none)."""
    message = client._out_messages.get(mid)  # private: paho Client._out_messages
    return None if message is None else int(message.qos)


def resend_unfinished_as_publish(client: paho.Client) -> int:
    """Call from ``on_connect`` when the CONNACK says *session present = 0* on a resumed session:
    paho would finish each QoS 2 exchange already past PUBREC with a bare PUBREL, which a broker
    without the session answers with PUBCOMP and delivers nothing. Send those as whole PUBLISH
    (DUP set) instead; returns how many."""
    moved = 0
    with client._out_message_mutex:  # private: paho Client._out_message_mutex
        for message in client._out_messages.values():  # private: paho Client._out_messages
            # private: paho MQTTMessage.state, mqtt_ms_resend_pubrel
            if message.qos == 2 and message.state == paho.mqtt_ms_resend_pubrel:
                message.state = paho.mqtt_ms_publish  # private: paho MQTTMessage.state, mqtt_ms_publish
                message.dup = True
                moved += 1
    return moved


# --- paho: incoming, for a reader of our own -----------------------------------------------------


def queue_pubacks(client: paho.Client, mids: Iterable[int]) -> None:
    """Send the PUBACKs of QoS 1 messages received under ``manual_ack_set(True)`` in ONE write
    (paho's public ``ack()`` makes one write per message)."""
    pubacks = b"".join(_PUBACK_PACKET.pack(_PUBACK, 2, mid) for mid in mids)
    if pubacks:
        client._packet_queue(_PUBACK, pubacks, 0, 0)  # private: paho Client._packet_queue


#: PUBACK reason codes of a message delivered: success, and "no matching subscribers" (MQTT 5; what
#: Mosquitto answers for a retained confirmation no edge is subscribed to at that moment)
PUBACK_DELIVERED = (0x00, 0x10)


def puback_handler(client: paho.Client) -> Callable[[int, int], None]:
    """What paho does with the PUBACK (packet id, reason code of :data:`PUBACK_DELIVERED`, no
    properties) of a QoS 1 message this client published: the message is done (``is_published()``),
    and paho sends the next one it queued beyond its in-flight window. paho's own reader would read the
    packet in four ``recv`` calls and build a reason code and properties for each one. The reason codes
    and the (empty) properties passed on are built once: the one ``on_publish`` callback, aiomqtt's,
    does not look at them."""
    reasons = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in PUBACK_DELIVERED}
    nothing = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
    out_messages = client._out_messages  # private: paho Client._out_messages
    mutex = client._out_message_mutex  # private: paho Client._out_message_mutex
    done = client._do_on_publish  # private: paho Client._do_on_publish

    def on_puback(mid: int, reason: int) -> None:
        with mutex:
            if mid in out_messages:  # else one paho no longer waits for: ignored, as paho does
                done(mid, reasons[reason], nothing)

    return on_puback


def replace_socket_recv(client: paho.Client, recv: Callable[[int], bytes]) -> None:
    """paho reads the socket through ``recv``: a reader of our own serves it whole packets."""
    client._sock_recv = recv  # type: ignore[method-assign,assignment]  # private: paho Client._sock_recv


def note_bytes_received(client: paho.Client) -> None:
    """Tell paho's keepalive that the broker sent something (bytes read by our reader)."""
    client._last_bytes_received = time.monotonic()  # private: paho Client._last_bytes_received


def request_write(client: paho.Client) -> None:
    """Ask for a writable-socket callback (an SSL socket that must write before it can read)."""
    client._call_socket_register_write()  # private: paho Client._call_socket_register_write


# --- public hooks, chained -----------------------------------------------------------------------


def chain_on_socket_open(client: paho.Client, hook: Callable[[Any], object]) -> None:
    """Call ``hook(sock)`` after aiomqtt's own ``on_socket_open`` (public paho property)."""
    previous = client.on_socket_open

    def on_socket_open(paho_client: paho.Client, userdata: Any, sock: Any) -> None:
        if previous is not None:
            previous(paho_client, userdata, sock)
        hook(sock)

    client.on_socket_open = on_socket_open


# --- checking the names against the installed libraries -----------------------------------------


async def missing_names() -> list[str]:
    """Each name of :data:`PRIVATE_NAMES` the installed aiomqtt/paho no longer has (as
    ``"<library> <owner>.<name>"``), checked on a real, unconnected aiomqtt client."""
    client = aiomqtt.Client("127.0.0.1", identifier="enerlink-introspection")
    inner = paho_client(client) if hasattr(client, "_client") else None
    owners: dict[tuple[str, str], object] = {
        ("aiomqtt", "Client"): client,
        ("paho", "Client"): inner,
        ("paho", "MQTTMessage"): paho.MQTTMessage(mid=1, topic=b"t"),
        ("paho", "module"): paho,
    }
    missing = []
    for library, owner, name in PRIVATE_NAMES:
        instance = owners[(library, owner)]
        if instance is None or not hasattr(instance, name):
            missing.append(f"{library} {owner}.{name}")
    if inner is not None and "packet" not in getattr(inner, "_in_packet", {}):
        missing.append("paho Client._in_packet['packet']")
    return missing
