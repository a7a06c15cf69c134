"""WS /ws/telemetry: data published on the real broker reaches WebSocket clients through the API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from enerlink import mqtt
from enerlink.api.live import LiveHub
from enerlink.config import MqttEndpoint
from enerlink.schemas.wire import Topics
from tests.support.apiserver import LiveApi, serve_api
from tests.support.services import ServiceProcess, free_port, wait_port


async def _live(api: LiveApi) -> None:
    for _ in range(200):
        if (await api.client.get("/health")).json()["live_mqtt"] == "connected":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the API never subscribed to MQTT")


async def _publish(environ: dict[str, str], *payloads: bytes) -> None:
    endpoint = MqttEndpoint.parse(environ["ENERLINK_MQTT_URL"])
    async with mqtt.client(endpoint, identifier="test-ws-publisher") as client:
        for payload in payloads:
            await client.publish(Topics(environ["ENERLINK_TOPIC_PREFIX"]).data, payload, qos=1)


async def _next_data(ws: object) -> dict[str, object]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[attr-defined]
        if message.get("type") != "ping":
            return message  # type: ignore[no-any-return]


def _as(data: bytes, meter_id: str) -> bytes:
    message = json.loads(data)
    message["meterId"] = meter_id
    return json.dumps(message).encode()


async def test_websocket_receives_mqtt_data_with_filter(
    environ: dict[str, str], data_fixture_bytes: bytes
) -> None:
    async with serve_api(environ) as api:
        await _live(api)
        async with (
            connect(f"{api.ws_url}/ws/telemetry") as every,
            connect(f"{api.ws_url}/ws/telemetry?meter_id=METER.2") as only_two,
        ):
            await asyncio.sleep(0.1)  # both handlers registered with the hub
            await _publish(environ, b"{not json", data_fixture_bytes, _as(data_fixture_bytes, "METER.2"))
            first, second = await _next_data(every), await _next_data(every)
            assert first == json.loads(data_fixture_bytes)  # exactly as published
            assert second["meterId"] == "METER.2"
            assert (await _next_data(only_two))["meterId"] == "METER.2"
        stats = api.settings  # the invalid message was counted, not forwarded
        metrics = (await api.client.get("/metrics")).text
        assert "enerlink_api_live_invalid 1.0" in metrics and stats is not None


async def test_what_a_client_sends_is_ignored_text_or_binary(
    environ: dict[str, str], data_fixture_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_api(environ) as api:
        await _live(api)
        async with connect(f"{api.ws_url}/ws/telemetry") as ws:
            await ws.send(b"\xff\xfe binary")
            await ws.send("some text")
            await asyncio.sleep(0.1)
            await _publish(environ, data_fixture_bytes)
            assert await _next_data(ws) == json.loads(data_fixture_bytes)  # still served
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_websocket_keepalive_ping_and_token(environ: dict[str, str]) -> None:
    async with serve_api(environ, ENERLINK_API_TOKEN="s3cret", ENERLINK_API_WS_PING_S="0.2") as api:
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"{api.ws_url}/ws/telemetry"):
                pass
        assert denied.value.response.status_code == 403
        async with connect(f"{api.ws_url}/ws/telemetry?token=s3cret") as ws:
            ping = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert ping["type"] == "ping" and ping["at"].endswith("Z")
        headers = {"Authorization": "Bearer s3cret"}
        async with connect(f"{api.ws_url}/ws/telemetry", additional_headers=headers) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "ping"


async def test_slow_client_is_dropped_without_slowing_others(data_fixture_bytes: bytes) -> None:
    hub = LiveHub(endpoint=MqttEndpoint.parse("mqtt://127.0.0.1:1"), topics=Topics("unused"), queue_size=5)
    slow, fast = hub.subscribe(), hub.subscribe("METER001")
    received = 0
    for _ in range(20):
        hub.publish(data_fixture_bytes)
        while not fast.queue.empty():  # the fast client keeps up
            fast.queue.get_nowait()
            received += 1
    assert received == 20
    assert slow.dropped.is_set() and hub.clients == 1 and hub.stats.dropped_clients == 1


async def test_slow_websocket_is_closed_end_to_end(
    environ: dict[str, str], data_fixture_bytes: bytes
) -> None:
    """A client that stops reading is closed with 1013 while a reading client gets every message."""
    async with serve_api(environ, ENERLINK_API_WS_QUEUE="4") as api:
        await _live(api)
        big = json.loads(data_fixture_bytes)
        # unknown fields are kept; random text defeats per-message deflate and fills socket buffers
        big["padding"] = base64.b64encode(os.urandom(90_000)).decode()
        payload = json.dumps(big).encode()
        count = 400
        async with (
            connect(f"{api.ws_url}/ws/telemetry", max_queue=1, max_size=None) as slow,
            connect(f"{api.ws_url}/ws/telemetry", max_size=None) as fast,
        ):
            await asyncio.sleep(0.1)

            async def read_all() -> int:
                got = 0
                while got < count:
                    if (await _next_data(fast)).get("padding"):
                        got += 1
                return got

            reader = asyncio.create_task(read_all())
            for _ in range(count):
                await _publish(environ, payload)
            assert await asyncio.wait_for(reader, 30) == count
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


def _raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket opened by hand on a tiny receive buffer, after which nothing is ever read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # the handshake answer only, byte by byte
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _drain(sock: socket.socket, *, timeout: float) -> tuple[int, bool]:
    """Read until the server closes the connection: (bytes read, whether it ended)."""
    total = 0
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        return total, True
    except TimeoutError:
        return total, False
    return total, True


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_never_reading_raw_client_is_dropped_and_memory_stays_bounded(
    environ: dict[str, str], uid: str, data_fixture_bytes: bytes
) -> None:
    """A peer that completes the handshake and then never reads (kernel buffers fill, the server's
    send blocks): the API (a real ``enerlink api`` process) drops it by the send timeout or the
    queue bound, counts it, keeps its memory flat, and a reading client gets every message.

    Memory: the same flood runs twice, first with the reading client alone (the process grows to
    its working size), then with the never-reading peer as well: an unbounded server would keep the
    whole second flood (~33 MB) for that peer; a bounded one at most its queue (~2 MB)."""
    port = free_port()
    env = {
        **environ,
        "ENERLINK_API_HOST": "127.0.0.1",
        "ENERLINK_API_PORT": str(port),
        "ENERLINK_API_WS_QUEUE": "100",
        "ENERLINK_API_WS_SEND_TIMEOUT_S": "2",
    }
    topic = Topics(environ["ENERLINK_TOPIC_PREFIX"]).data
    message = json.loads(data_fixture_bytes)
    count = 1500
    payloads = []
    for i in range(count):
        message["padding"] = base64.b64encode(os.urandom(16_000)).decode()
        message["seq"] = i
        payloads.append(json.dumps(message).encode())
    total = sum(map(len, payloads))
    process = ServiceProcess(args=["api"], env=env).start()
    assert process.process is not None
    try:
        await asyncio.to_thread(wait_port, port, timeout=60)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
            connect(f"ws://127.0.0.1:{port}/ws/telemetry", max_size=None) as fast,
            mqtt.client(
                MqttEndpoint.parse(environ["ENERLINK_MQTT_URL"]), identifier=f"flood-{uid}"
            ) as client,
        ):
            for _ in range(400):
                if (await http.get("/health")).json()["live_mqtt"] == "connected":
                    break
                await asyncio.sleep(0.05)

            async def clients(n: int) -> None:
                for _ in range(400):
                    if _metric((await http.get("/metrics")).text, "enerlink_api_ws_clients") == n:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"never {n} WebSocket clients")

            async def flood() -> None:
                async def read_all() -> list[int]:
                    seen: list[int] = []
                    while len(seen) < count:
                        data = await _next_data(fast)
                        if "padding" in data:
                            seen.append(int(data["seq"]))  # type: ignore[call-overload]
                    return seen

                reader = asyncio.create_task(read_all())
                for i, payload in enumerate(payloads):
                    await client.publish(topic, payload, qos=1)
                    if i % 25 == 24:  # bursts at ~1000 messages/s: a reading client keeps up
                        await asyncio.sleep(0.02)
                assert await asyncio.wait_for(reader, 180) == list(range(count))  # every one, in order

            await clients(1)
            await flood()
            rss_before = _rss_kb(process.process.pid)
            slow = await asyncio.to_thread(_raw_websocket, port, "/ws/telemetry")
            try:
                await clients(2)
                await flood()
                rss_after = _rss_kb(process.process.pid)
                metrics = (await http.get("/metrics")).text
                assert _metric(metrics, "enerlink_api_live_dropped_clients") == 1
                assert _metric(metrics, "enerlink_api_live_received") >= 2 * count
                await clients(1)  # the reading one
                assert (rss_after - rss_before) * 1024 < total / 4, (rss_before, rss_after, total)
                print(f"api RSS {rss_before} -> {rss_after} kB over a {total / 1e6:.1f} MB flood")
                read, ended = await asyncio.to_thread(_drain, slow, timeout=30)
                assert ended and read < total / 2  # cut off, and the server let go of the connection
            finally:
                slow.close()
        dropped = [line for line in process.output().splitlines() if "dropped a WebSocket client" in line]
        assert len(dropped) == 1, dropped
        print(dropped[0])
    finally:
        process.terminate()


async def test_blocked_send_drops_the_client_even_when_its_queue_has_room(
    environ: dict[str, str], uid: str, data_fixture_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Few but large messages to a peer that never reads: the queue (10,000) never fills, the
    kernel buffers do; the send timeout drops the client and its handler ends."""
    message = json.loads(data_fixture_bytes)
    message["padding"] = base64.b64encode(os.urandom(48_000)).decode()  # ~64 kB frames
    payload = json.dumps(message).encode()
    async with serve_api(environ, ENERLINK_API_WS_QUEUE="10000", ENERLINK_API_WS_SEND_TIMEOUT_S="1") as api:
        await _live(api)
        port = int(api.url.rsplit(":", 1)[1])
        slow = await asyncio.to_thread(_raw_websocket, port, "/ws/telemetry")
        try:
            for _ in range(200):
                if "enerlink_api_ws_clients 1.0" in (await api.client.get("/metrics")).text:
                    break
                await asyncio.sleep(0.05)
            endpoint = MqttEndpoint.parse(environ["ENERLINK_MQTT_URL"])
            async with mqtt.client(endpoint, identifier=f"blocked-{uid}") as client:
                for i in range(200):  # ~13 MB: more than the socket buffers take
                    await client.publish(Topics(environ["ENERLINK_TOPIC_PREFIX"]).data, payload, qos=1)
                    if i % 10 == 9:
                        await asyncio.sleep(0.05)
            for _ in range(400):
                metrics = (await api.client.get("/metrics")).text
                if "enerlink_api_live_dropped_clients 1.0" in metrics:
                    break
                await asyncio.sleep(0.05)
            assert "enerlink_api_live_dropped_clients 1.0" in metrics
            assert "enerlink_api_ws_clients 0.0" in metrics
            assert any("client not reading: a send blocked for 1 s" in r.getMessage() for r in caplog.records)
            read, ended = await asyncio.to_thread(_drain, slow, timeout=30)
            assert ended and read < len(payload) * 200
        finally:
            slow.close()


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete server frame (unmasked, no extensions) in ``data``."""
    out: list[tuple[int, bytes]] = []
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[at + 2 : at + 10], "big"), 10
        if at + head + length > len(data):
            break
        out.append((opcode, data[at + head : at + head + length]))
        at += head + length
    return out


def _read_to_end(sock: socket.socket, *, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_a_stalled_client_that_reads_again_gets_the_close_reason(
    environ: dict[str, str], uid: str, data_fixture_bytes: bytes
) -> None:
    """The close is not lost when the peer can still take it: a client that stalls until it is
    dropped and then reads again finds the 1013 close frame with the reason after its data."""
    message = json.loads(data_fixture_bytes)
    message["padding"] = base64.b64encode(os.urandom(48_000)).decode()
    payload = json.dumps(message).encode()
    async with serve_api(environ, ENERLINK_API_WS_QUEUE="20", ENERLINK_API_WS_SEND_TIMEOUT_S="20") as api:
        await _live(api)
        port = int(api.url.rsplit(":", 1)[1])
        stalled = await asyncio.to_thread(_raw_websocket, port, "/ws/telemetry")
        try:
            endpoint = MqttEndpoint.parse(environ["ENERLINK_MQTT_URL"])
            async with mqtt.client(endpoint, identifier=f"stall-{uid}") as client:
                for _ in range(400):  # until the queue of 20 overflows behind the full socket
                    await client.publish(Topics(environ["ENERLINK_TOPIC_PREFIX"]).data, payload, qos=1)
                    if "enerlink_api_live_dropped_clients 1.0" in (await api.client.get("/metrics")).text:
                        break
            assert "enerlink_api_live_dropped_clients 1.0" in (await api.client.get("/metrics")).text
            data = await asyncio.to_thread(_read_to_end, stalled, timeout=30)
        finally:
            stalled.close()
    frames = _frames(data)
    assert frames and all(opcode in (1, 8, 9) for opcode, _ in frames)  # text, close, ping
    opcode, close = frames[-1]
    assert opcode == 8
    assert int.from_bytes(close[:2], "big") == 1013
    assert close[2:].decode() == "client too slow: 20 messages queued; reconnect"
