"""The confirmation bytes the ingest writes directly are what the contract's model reads and writes; the
broker takes the window they are published with, and every one published is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enerlink import mqtt
from enerlink.config import MqttEndpoint
from enerlink.ingest.delivery import confirmation_at, confirmation_payload
from enerlink.ingest.mqtt_source import PUBLISH_WINDOW, session
from enerlink.schemas.delivery import MAX_CONFIRM_RANGES, MAX_SEQ, Confirmation
from tests.support.ingest_support import ingest_settings
from tests.support.services import Broker

AT = datetime(2026, 12, 6, 5, 30, 1, 234000, tzinfo=UTC)
AT_JSON = confirmation_at(int(AT.timestamp() * 1000))


def _model(meter: str, through: int, ranges: list[tuple[int, int]]) -> Confirmation:
    return Confirmation(meterId=meter, through=through, ranges=ranges, at=AT)


@pytest.mark.parametrize(
    ("text", "through", "ranges"),
    [
        ("t:1765000000000;c:500;k:1765000001234;u:1765000002000", 500, []),  # the usual record
        ("t:1765000000000;c:1;u:1765000002000", 1, []),  # never confirmed yet
        ("t:1765000000000;c:7", 7, []),
        ("t:1765000000000;c:3;r:6-7;k:1765000001234;a:1;g:7", 3, [(6, 7)]),
        ("t:1765000000000;c:0;r:5000-5003,5007", 0, [(5000, 5003), (5007, 5007)]),
        ("t:1765000000000;c:12;r:20-30;e:1765000000000;z:12", 12, [(20, 30)]),
        (f"t:1765000000000;c:{MAX_SEQ}", MAX_SEQ, []),
    ],
)
def test_payload_is_the_models_confirmation(text: str, through: int, ranges: list[tuple[int, int]]) -> None:
    payload = confirmation_payload("METER-01.a_b", text, AT_JSON)
    parsed = Confirmation.model_validate_json(payload)
    assert parsed == _model("METER-01.a_b", through, ranges)
    assert payload == parsed.model_dump_json().encode()  # the very bytes the model writes


def test_only_the_newest_ranges_are_sent() -> None:
    ranges = [(10 * i, 10 * i + 1) for i in range(1, 101)]
    text = "t:1765000000000;c:2;r:" + ",".join(f"{a}-{b}" for a, b in ranges)
    parsed = Confirmation.model_validate_json(confirmation_payload("M1", text, AT_JSON))
    assert parsed.through == 2 and parsed.ranges == ranges[-MAX_CONFIRM_RANGES:]


@pytest.mark.parametrize(
    ("meter", "text"),
    [
        ("bad meter", "t:1;c:5"),  # not a meter id
        ("M1\n", "t:1;c:5"),
        ('M1","through":9', "t:1;c:5"),
        ("M1", f"t:1;c:{MAX_SEQ + 1}"),  # beyond what a seq may be
        ("M1", f"t:1;c:3;r:5-{MAX_SEQ + 1}"),
        ("M1", "t:1;c:3;r:4-6"),  # adjacent to through: not a record the scripts write
    ],
)
def test_what_no_confirmation_can_carry_is_refused(meter: str, text: str) -> None:
    with pytest.raises(ValueError):
        confirmation_payload(meter, text, AT_JSON)


def test_the_broker_takes_the_ingests_publish_window() -> None:
    """Mosquitto discards what a client sends beyond its Receive Maximum (``max_inflight_messages``)
    while the client library reports success: the project's broker must take the ingest's whole window."""
    conf = (Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    values = [int(line.split()[1]) for line in conf.splitlines() if line.startswith("max_inflight_messages ")]
    assert values == [values[0]] and values[0] >= PUBLISH_WINDOW, values


async def _retained(url: str, topic_filter: str, count: int, uid: str) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    async with mqtt.client(MqttEndpoint.parse(url), identifier=f"retained-{uid}") as reader:
        await reader.subscribe(topic_filter, qos=1)
        async with asyncio.timeout(30):
            async for message in reader.messages:
                got[str(message.topic)] = bytes(message.payload)
                if len(got) == count:
                    break
    return got


async def test_publishes_beyond_the_window_are_all_acknowledged_and_retained(
    broker: Broker, topic_prefix: str, uid: str
) -> None:
    """Three windows and more at once, first with nobody subscribed (the broker answers "no matching
    subscribers"), then with a subscriber (plain success): each one is acknowledged (``is_published``,
    what a round waits for before it releases its meters) and the broker holds every one."""
    settings = ingest_settings(
        {"ENERLINK_MQTT_URL": broker.url, "ENERLINK_TOPIC_PREFIX": topic_prefix}, client_id=f"pub-{uid}"
    )
    topics = settings.common.topics
    n = 3 * PUBLISH_WINDOW + 7
    expected = {topics.confirm(f"M{i}"): b"%d" % i for i in range(2 * n)}
    async with contextlib.AsyncExitStack() as stack:
        live = await stack.enter_async_context(session(settings))
        for part in (range(n), range(n, 2 * n)):
            if part.start:  # a subscriber now: the broker acknowledges with plain success
                endpoint = MqttEndpoint.parse(broker.url)
                watcher = await stack.enter_async_context(mqtt.client(endpoint, identifier=f"watch-{uid}"))
                await watcher.subscribe(topics.confirm("+"), qos=1)
            infos = [live.publish(topics.confirm(f"M{i}"), b"%d" % i, retain=True) for i in part]
            assert all(info is not None for info in infos)
            deadline = time.monotonic() + 30
            while not all(info.is_published() for info in infos if info is not None):
                assert time.monotonic() < deadline, "publishes left unacknowledged"
                await asyncio.sleep(0.02)
        try:
            assert await _retained(broker.url, topics.confirm("+"), 2 * n, uid) == expected
        finally:
            for topic in expected:  # retained messages outlive the test: clear them
                live.publish(topic, b"", retain=True)
            await asyncio.sleep(0.5)
