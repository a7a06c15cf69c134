"""A QoS 2 message cut off between the broker's PUBREC and the edge's PUBREL is still delivered.

The broker forwards a QoS 2 message only when it receives PUBREL. If the link breaks after PUBREC
and before PUBREL arrives, the message waits in the edge's session on the broker. The edge's
reconnects resume that session (Clean Start 0 after the process's first connection), and paho
finishes the exchange with PUBREL: delivered once. Had the broker lost the session (CONNACK session
present = 0), the publisher would send the message again as a whole PUBLISH instead of a bare
PUBREL (which the broker would answer with PUBCOMP and nothing to deliver). Acknowledged therefore
means delivered.

Here a loopback proxy that understands MQTT framing drops the first PUBREL and resets both sides,
which puts a message in exactly that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import uuid
from collections.abc import AsyncIterator

import pytest

from enerlink.config import MqttEndpoint
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publisher import Publisher
from enerlink.mqtt import client as mqtt_client
from tests.support.services import Broker, free_port

PUBREL = 0x62


def _packet_end(buf: bytearray) -> int:
    """End of the first complete MQTT packet in ``buf`` (0 if incomplete)."""
    length, mult, i = 0, 1, 1
    while True:
        if i >= len(buf):
            return 0
        byte = buf[i]
        length += (byte & 0x7F) * mult
        i += 1
        if not byte & 0x80:
            break
        mult *= 128
    return i + length if i + length <= len(buf) else 0


class PubrelCutter:
    """Forwards MQTT both ways; on the first PUBREL from the client, drops it and resets both links.
    Later connections are forwarded untouched."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = free_port()
        self.cut = asyncio.Event()
        self.reopen = asyncio.Event()
        """Connections after the cut wait for this (set: at once)."""
        self.reopen.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PubrelCutter]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        async with server:
            yield self

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.cut.is_set():
            await self.reopen.wait()
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        watching = not self.cut.is_set()

        async def upstream() -> None:
            buf = bytearray()
            while chunk := await client_r.read(65536):
                if not watching:
                    broker_w.write(chunk)
                    continue
                buf += chunk
                while end := _packet_end(buf):
                    if buf[0] == PUBREL:
                        self.cut.set()
                        raise ConnectionResetError("PUBREL dropped; link cut")
                    broker_w.write(bytes(buf[:end]))
                    del buf[:end]

        async def downstream() -> None:
            while chunk := await broker_r.read(65536):
                client_w.write(chunk)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, broker_w):
                writer.transport.abort()  # a reset, not a clean close


async def test_message_cut_between_pubrec_and_pubrel_is_delivered_after_reconnect(
    own_broker: Broker, topic_prefix: str
) -> None:
    broker = own_broker.start()
    topic = f"{topic_prefix}/meters/data"
    acked: list[bytes] = []
    got: list[bytes] = []
    async with (
        PubrelCutter(broker.port).running() as proxy,
        mqtt_client(MqttEndpoint.parse(broker.url), identifier=f"sub-{uuid.uuid4().hex[:6]}") as sub,
    ):
        await sub.subscribe(topic, qos=2)
        config = _through(proxy.port)
        async with Publisher(config=config, on_acked=lambda _t, p: acked.append(p)) as pub:
            async with asyncio.timeout(10):
                await pub.wait_connected()
            await pub.publish(topic, b"cut-after-pubrec")
            async with asyncio.timeout(20):
                await proxy.cut.wait()
                await pub.drain()
            stats = pub.stats
        assert stats.connects >= 2  # the link was really cut and the edge reconnected
        assert acked == [b"cut-after-pubrec"]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    got.append(bytes(message.payload))  # type: ignore[arg-type]
                    break
    assert got == [b"cut-after-pubrec"]  # acknowledged means delivered
    flags = _clean_start_flags(broker, config.client_id)
    assert flags[0] == "c1" and set(flags[1:]) == {"c0"}, flags  # the reconnects resumed the session


def _through(port: int) -> PublisherConfig:
    """A publisher of its own client id that connects through the proxy on ``port``, reconnecting fast."""
    return PublisherConfig(
        endpoint=MqttEndpoint.parse(f"mqtt://127.0.0.1:{port}"),
        client_id=f"edge-{uuid.uuid4().hex[:8]}",
        backoff_initial_s=0.1,
        backoff_cap_s=0.3,
    )


def _clean_start_flags(broker: Broker, client_id: str) -> list[str]:
    pattern = re.compile(rf"New client connected from \S+ as {re.escape(client_id)} \(p\d, (c\d)")
    return pattern.findall(broker.log())


async def test_session_lost_by_the_broker_message_cut_after_pubrec_is_sent_again_whole(
    own_broker: Broker, topic_prefix: str
) -> None:
    """The broker is killed and comes back without the session (CONNACK session present = 0):
    paho's bare PUBREL would be answered with PUBCOMP and deliver nothing; the publisher sends the
    message again as a whole PUBLISH."""
    broker = own_broker.start()
    topic = f"{topic_prefix}/meters/data"
    acked: list[bytes] = []
    got: list[bytes] = []
    async with PubrelCutter(broker.port).running() as proxy:
        proxy.reopen.clear()
        config = _through(proxy.port)
        async with Publisher(config=config, on_acked=lambda _t, p: acked.append(p)) as pub:
            async with asyncio.timeout(10):
                await pub.wait_connected()
            await pub.publish(topic, b"cut-then-session-lost")
            async with asyncio.timeout(20):
                await proxy.cut.wait()
            broker.stop(sig=signal.SIGKILL)  # a crash: the session and its PUBREC state are gone
            (broker.data_dir / "mosquitto.db").unlink(missing_ok=True)
            broker.start()
            identifier = f"sub-{uuid.uuid4().hex[:6]}"
            async with mqtt_client(MqttEndpoint.parse(broker.url), identifier=identifier) as sub:
                await sub.subscribe(topic, qos=2)
                proxy.reopen.set()
                async with asyncio.timeout(20):
                    await pub.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        async for message in sub.messages:
                            got.append(bytes(message.payload))  # type: ignore[arg-type]
                            break
    assert acked == [b"cut-then-session-lost"]
    assert got == [b"cut-then-session-lost"]
    assert _clean_start_flags(broker, config.client_id)[-1] == "c0"  # it asked to resume


async def test_two_publishers_on_one_client_id_log_the_takeover_loop_and_back_off(
    own_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = own_broker.start()
    client_id = f"twin-{uuid.uuid4().hex[:8]}"
    config = PublisherConfig(
        endpoint=MqttEndpoint.parse(broker.url),
        client_id=client_id,
        backoff_initial_s=0.05,
        backoff_cap_s=0.2,
    )
    with caplog.at_level(logging.ERROR, logger="enerlink.takeover"):
        async with Publisher(config=config) as one, Publisher(config=config) as two:
            await asyncio.sleep(12.0)
            attempts = one.stats.attempts + two.stats.attempts
    assert f"another client uses the same MQTT client id '{client_id}'" in caplog.text
    # without the takeover backoff each twin reconnects within 0.2 s: some 60 evictions in 12 s
    assert 4 <= attempts < 30, attempts
    assert len(_clean_start_flags(broker, client_id)) < 35
