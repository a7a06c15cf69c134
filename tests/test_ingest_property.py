"""Property: whatever is thrown at the live worker (random bytes, random JSON, mutated fixtures), it
stays alive, every valid message is stored, and every message is either stored or dead-lettered."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enerlink.ingest.validate import Measurement, Validator
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Topics
from tests.conftest import TEST_REDIS_URL, load_fixture
from tests.support.services import Broker, ServiceProcess

FIXTURE = load_fixture("meter-data.json")
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(FIXTURE)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = json.loads(json.dumps(FIXTURE))
    body["meterId"] = draw(st.sampled_from(["P1", "P2", "P3"]))
    body["datetime"] = (datetime.now(UTC) - timedelta(seconds=draw(st.integers(0, 3000)))).isoformat()
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(PATHS))
        node = body
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            if draw(st.booleans()):
                del node[path[-1]]
            else:
                node[path[-1]] = draw(_json)
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=8))] = draw(_json)
    return json.dumps(body).encode()


payloads = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()), mutated())


def test_random_payloads_never_kill_the_worker_and_valid_ones_are_stored(
    *, broker: Broker, environ: dict[str, str], key_prefix: str, topic_prefix: str, uid: str
) -> None:
    keys, topics = Keys(key_prefix), Topics(topic_prefix)
    worker = ServiceProcess(args=["ingest"], env={**environ, "ENERLINK_INGEST_CLIENT_ID": f"prop-{uid}"})
    worker.start()
    port = int(broker.url.rsplit(":", 1)[1])
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uid}", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    db = redis.Redis.from_url(TEST_REDIS_URL)
    validator = Validator(topics=topics)
    sent: list[bytes] = []
    try:
        probe = json.dumps({**FIXTURE, "meterId": "PROBE", "datetime": datetime.now(UTC).isoformat()})
        deadline = time.monotonic() + 30
        while not db.hexists(keys.latest_data, "PROBE"):
            assert time.monotonic() < deadline, worker.output()
            client.publish(topics.data, probe, qos=1).wait_for_publish()
            time.sleep(0.2)

        @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
        @given(payload=payloads)
        def throw(payload: bytes) -> None:
            client.publish(topics.data, payload, qos=1).wait_for_publish()
            sent.append(payload)

        throw()
        marker = json.dumps({**FIXTURE, "meterId": f"END{uuid.uuid4().hex[:6]}"}).encode()
        marker = json.dumps({**json.loads(marker), "datetime": datetime.now(UTC).isoformat()}).encode()
        client.publish(topics.data, marker, qos=1).wait_for_publish()
        deadline = time.monotonic() + 60
        end = json.loads(marker)["meterId"]
        while not db.hexists(keys.latest_data, end):  # the worker handles messages in order
            assert worker.process is not None and worker.process.poll() is None, worker.output()
            assert time.monotonic() < deadline, "worker stopped storing"
            time.sleep(0.1)
        assert worker.process is not None and worker.process.poll() is None  # alive
        now_ms = int(time.time() * 1000)
        valid = 0
        for payload in sent:
            outcome = validator.classify(topic=topics.data, payload=payload, now_ms=now_ms)
            if isinstance(outcome, Measurement):
                valid += 1
                member = encode_snapshot(payload)
                in_series = db.zscore(keys.timeseries(outcome.meter_id), member)
                in_late = db.zscore(keys.late_data(outcome.meter_id), member)
                assert in_series is not None or in_late is not None, payload[:200]
        rejected = sum(int(v) for v in db.hvals(keys.rejected_counts))
        assert rejected == len(sent) - valid
        print(f"{len(sent)} payloads: {valid} valid and stored, {rejected} rejected")
    finally:
        client.loop_stop()
        client.disconnect()
        worker.kill()
        db.close()
