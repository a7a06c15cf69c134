"""The worker's broker session on a real Mosquitto: Clean Start 0 and a subscription renewed after every
CONNACK (Mosquitto 2.0 resumes the session after a restart but forgets its ``$share`` subscriptions), a
default client id of each worker's own that survives its restarts, and a loud, slowed-down reconnect
when two clients are forced onto one id."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import redis.asyncio as aioredis

from enerlink.identity import host_label
from enerlink.ingest.service import run
from enerlink.ingest.settings import Settings
from enerlink.schemas.snapshot import encode_snapshot
from enerlink.schemas.wire import Keys, Topics
from tests.support.ingest_support import ago, data_message, ingest_settings, publisher, wait_until
from tests.support.services import Broker, ServiceProcess

CONNECTED = re.compile(r"^(\S+): New client connected from \S+ as (\S+) \((p\d), (c\d)", re.M)


def _connects(broker: Broker, client_id: str) -> list[tuple[float, str]]:
    """(epoch s, clean start flag) of every connection ``client_id`` made to ``broker``."""
    found = CONNECTED.findall(broker.log())
    return [(datetime.fromisoformat(t).timestamp(), c) for t, cid, _p, c in found if cid == client_id]


@contextlib.asynccontextmanager
async def _worker(settings: Settings, ready: asyncio.Event) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as group:
        task = group.create_task(run(settings, ready=ready), name="ingest-under-test")
        try:
            await asyncio.wait_for(ready.wait(), 30)
            yield
        finally:
            task.cancel()


async def _stored(client: aioredis.Redis, keys: Keys, meter: str, payload: bytes) -> bool:
    return await client.zscore(keys.timeseries(meter), encode_snapshot(payload)) is not None


async def test_broker_restart_resumed_session_is_subscribed_again(
    *, own_broker: Broker, environ: dict[str, str], uid: str, redis_client: aioredis.Redis
) -> None:
    broker = own_broker.start()
    keys, topics = Keys(environ["ENERLINK_KEY_PREFIX"]), Topics(environ["ENERLINK_TOPIC_PREFIX"])
    client_id = f"resub-{uid}"
    settings = ingest_settings({**environ, "ENERLINK_MQTT_URL": broker.url}, client_id=client_id)
    assert settings.share_group  # the case Mosquitto forgets across a restart
    ready = asyncio.Event()
    before, after = data_message("RESUB", at=ago(seconds=20)), data_message("RESUB", at=ago(seconds=10))
    async with _worker(settings, ready):
        async with publisher(broker.url) as pub:
            await pub.one(topics.data, before)
        await wait_until(lambda: _stored(redis_client, keys, "RESUB", before), what="stored before")
        ready.clear()
        broker.restart(sig=signal.SIGTERM, down_s=0.5)  # sessions saved, $share subscriptions not
        await asyncio.wait_for(ready.wait(), 30)  # SUBACK on the new connection
        async with publisher(broker.url) as pub:
            await pub.one(topics.data, after)
        await wait_until(lambda: _stored(redis_client, keys, "RESUB", after), what="stored after restart")
    connects = _connects(broker, client_id)
    assert len(connects) == 2, connects
    assert all(clean == "c0" for _t, clean in connects), connects  # Clean Start 0 every time
    assert await redis_client.zcard(keys.timeseries("RESUB")) == 2


def _service(environ: dict[str, str], broker: Broker, state_dir: Path, **extra: str) -> ServiceProcess:
    env = {k: v for k, v in environ.items() if k != "ENERLINK_INGEST_CLIENT_ID"}
    env.update({"ENERLINK_MQTT_URL": broker.url, "ENERLINK_INGEST_STATE_DIR": str(state_dir), **extra})
    return ServiceProcess(args=["ingest"], env=env)


async def _until_connected(broker: Broker, client_id: str, times: int = 1) -> None:
    async def check() -> bool:
        return len(_connects(broker, client_id)) >= times

    await wait_until(check, limit_s=60, what=f"{client_id} connected {times} time(s)")


async def test_two_default_workers_keep_their_own_sessions_and_a_restart_reclaims_its_id(
    *, own_broker: Broker, environ: dict[str, str], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    broker = own_broker.start()
    keys, topics = Keys(environ["ENERLINK_KEY_PREFIX"]), Topics(environ["ENERLINK_TOPIC_PREFIX"])
    state = tmp_path / "ingest-state"
    first_id, second_id = (f"enerlink-ingest-{host_label()}-{n}" for n in (1, 2))
    first = _service(environ, broker, state).start()
    second = None
    try:
        await _until_connected(broker, first_id)
        second = _service(environ, broker, state).start()
        await _until_connected(broker, second_id)
        await asyncio.sleep(5.0)  # evicting each other would take seconds at most
        assert len(_connects(broker, first_id)) == 1, broker.log()[-2000:]
        assert len(_connects(broker, second_id)) == 1, broker.log()[-2000:]
        assert "already connected, closing old connection" not in broker.log()
        assert f"ingest {first_id}: subscribing" in first.output()
        assert f"ingest {second_id}: subscribing" in second.output()

        # both receive: a few meters' readings spread over the shared group, every one stored
        payloads = [(f"M{i}", data_message(f"M{i}", at=ago(seconds=5))) for i in range(20)]
        async with publisher(broker.url) as pub:
            for _meter, payload in payloads:
                await pub.one(topics.data, payload)

        async def all_stored() -> bool:
            return all([await _stored(redis_client, keys, m, p) for m, p in payloads])

        await wait_until(all_stored, what="readings stored by the two workers")

        first.kill()  # kill -9: the lock goes with the process
        restarted = _service(environ, broker, state).start()
        try:
            await _until_connected(broker, first_id, times=2)  # its old id (and session) back
            assert f"ingest {first_id}: subscribing" in restarted.output()
            assert len(_connects(broker, second_id)) == 1
            assert all(clean == "c0" for _t, clean in _connects(broker, first_id))
        finally:
            restarted.kill()
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_two_workers_forced_onto_one_id_log_the_takeover_loop_and_back_off(
    *, own_broker: Broker, environ: dict[str, str], uid: str, tmp_path: Path
) -> None:
    broker = own_broker.start()
    client_id = f"twin-{uid}"
    twins = [
        _service(environ, broker, tmp_path / f"s{n}", ENERLINK_INGEST_CLIENT_ID=client_id).start()
        for n in (1, 2)
    ]
    try:
        await _until_connected(broker, client_id, times=2)
        started = time.time()
        await asyncio.sleep(16.0)
        connects = [t for t, _clean in _connects(broker, client_id)]
        outputs = "".join(t.output() for t in twins)
    finally:
        for twin in twins:
            twin.kill()
    assert "already connected, closing old connection" in broker.log()  # they did evict each other
    assert f"another client uses the same MQTT client id '{client_id}'" in outputs, outputs[-3000:]
    assert "ERROR" in outputs
    # Without the backoff each twin reconnects within 0.2 s of being evicted: some 10 connects a
    # second. With it the rate falls off: a few quick ones, then seconds apart.
    last = [t for t in connects if t >= started + 10]
    print(f"{len(connects)} connections of {client_id}, {len(last)} in the last 6 s")
    assert len(connects) < 40, connects
    assert len(last) <= 8, (len(last), connects)


def test_client_id_slots_lowest_free_first_and_released_with_the_holder(tmp_path: Path) -> None:
    from enerlink.identity import claim_client_id

    with claim_client_id("svc", state_dir=tmp_path, host="box.example.org") as one:
        with claim_client_id("svc", state_dir=tmp_path, host="box.example.org") as two:
            assert (one, two) == ("svc-box-1", "svc-box-2")
        with claim_client_id("svc", state_dir=tmp_path, host="box.example.org") as again:
            assert again == "svc-box-2"  # freed by the second holder, and 1 is still held
    with claim_client_id("svc", state_dir=tmp_path, host="box") as first:
        assert first == "svc-box-1"
