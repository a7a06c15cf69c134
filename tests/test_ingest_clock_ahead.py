"""A meter whose clock runs ahead: the ingest's ``meters`` hash (last seen) takes the reading's own time
when it is later than its arrival, because the aggregator reads a minute, and the raw export an hour, only
for meters seen since it began: a reading stamped in the next minute, the meter silent after it, would
otherwise never be aggregated nor archived. Real Redis, the real store script."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from enerlink.ingest.redis_store import RedisStore
from enerlink.ingest.validate import Measurement
from enerlink.schemas.telemetry import epoch_ms
from enerlink.schemas.wire import Keys
from tests.support.ingest_support import ago, data_message, status_message


def _reading(meter: str, *, seconds_ago: float) -> Measurement:
    at = ago(seconds=seconds_ago)
    return Measurement(
        kind="data", meter_id=meter, at_ms=epoch_ms(at), seq=None, payload=data_message(meter, at=at)
    )


async def test_last_seen_is_the_readings_own_time_when_its_clock_runs_ahead(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    store = RedisStore(client=redis_client, keys=keys, retention_ms=7_200_000)
    ahead, behind = _reading("AHEAD", seconds_ago=-90), _reading("BEHIND", seconds_ago=30)
    before = int(time.time() * 1000)
    await store.write([ahead, behind])
    after = int(time.time() * 1000)
    assert int(await redis_client.hget(keys.meters, "AHEAD")) == ahead.at_ms
    assert before - 1000 <= int(await redis_client.hget(keys.meters, "BEHIND")) <= after + 1000
    # a status message and an older reading after it do not take it back
    status = Measurement(
        kind="status",
        meter_id="AHEAD",
        at_ms=epoch_ms(ago(seconds=1)),
        seq=None,
        payload=status_message("AHEAD"),
    )
    await store.write([status, _reading("AHEAD", seconds_ago=10)])
    assert int(await redis_client.hget(keys.meters, "AHEAD")) == ahead.at_ms
