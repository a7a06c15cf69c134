"""WS /ws/telemetry: data published on the real broker reaches WebSocket clients through the API."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.live import LiveHub
from enerlink import mqtt
from enerlink.config import MqttEndpoint
from schemas.wire import Topics
from tests.support.apiserver import LiveApi, serve_api


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
