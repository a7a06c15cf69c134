"""What the Redis Cluster layout costs the ingest's store path, against one Redis server in the same run.

    .venv/bin/python bench/redis_cluster.py [--meters 1000] [--messages 50000] [--batch 500]

It starts a redis-server of its own (append-only, ``appendfsync always``, as deployed) and a local Redis
Cluster of 3 masters with a replica each (the same settings), and writes the same stream of data
messages (``--meters`` meters, one reading each every 5 s, each with its ``seq``) through the ingest's
store (``RedisStore.write``, batches of ``--batch``) into each. On a cluster a batch is one script call
per part of the key layout it holds (``ENERLINK_REDIS_PARTS``, 16).

It prints, per message: the writer's CPU (this process), the Redis servers' CPU (all processes of the
layout: the cluster's replicas included) and the wall time, and each cluster figure as a ratio to the
one server's (the floor). The cluster spreads the work over 3 masters: its wall time per message says
what one writer gets, its CPU per message what the whole layout spends.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enerlink.config import DEFAULT_REDIS_PARTS  # noqa: E402
from enerlink.ingest.redis_store import NEW, RedisStore  # noqa: E402
from enerlink.ingest.validate import Outcome, Validator  # noqa: E402
from enerlink.redis_client import async_client, lazily  # noqa: E402
from enerlink.schemas.wire import Keys, Topics  # noqa: E402
from tests.support.chaos_stack import RedisServer, cpu_seconds  # noqa: E402
from tests.support.ingest_support import data_message  # noqa: E402
from tests.support.redis_cluster import RedisClusterServers  # noqa: E402


@dataclass(frozen=True, slots=True)
class Run:
    messages: int
    writer_s: float
    redis_s: float
    wall_s: float

    def per_message_us(self) -> tuple[float, float, float]:
        return tuple(1e6 * x / self.messages for x in (self.writer_s, self.redis_s, self.wall_s))  # type: ignore[return-value]


def stream(meters: int, messages: int) -> list[bytes]:
    """``messages`` data messages of ``meters`` meters, 5 s apart per meter, ending a minute ago."""
    rounds = -(-messages // meters)
    start = datetime.now(UTC) - timedelta(seconds=5 * rounds + 60)
    out = []
    for r in range(rounds):
        for m in range(meters):
            at = start + timedelta(seconds=5 * r, milliseconds=m % 1000)
            out.append(data_message(f"METER{m:05d}", at=at, seq=r + 1))
    return out[:messages]


def outcomes(payloads: list[bytes]) -> list[Outcome]:
    topics = Topics()
    validator = Validator(topics=topics, max_payload=262_144, max_future_ms=86_400_000)
    now_ms = int(time.time() * 1000)
    return [validator.classify(topic=topics.data, payload=p, now_ms=now_ms) for p in payloads]


async def write_all(
    url: str, keys: Keys, items: list[Outcome], *, batch: int, pids: list[int], replicas: Sequence[int] = ()
) -> tuple[Run, float]:
    """The run, and the CPU seconds of the ``replicas`` among ``pids``."""
    async with lazily(async_client(url, decode_responses=False)) as client:
        store = RedisStore(client=client, keys=keys, retention_ms=7_200_000, confirm_interval_ms=30_000)
        await store.write(items[:1])  # scripts loaded, connections open
        own, servers = time.process_time(), sum(cpu_seconds(p) for p in pids)
        copies = sum(cpu_seconds(p) for p in replicas)
        began = time.monotonic()
        stored = 1
        for i in range(1, len(items), batch):
            stored += (await store.write(items[i : i + batch])).count(NEW)
        wall = time.monotonic() - began
        if stored != len(items):
            raise SystemExit(f"{url}: {stored} of {len(items)} messages newly stored")
        run = Run(
            messages=len(items),
            writer_s=time.process_time() - own,
            redis_s=sum(cpu_seconds(p) for p in pids) - servers,
            wall_s=wall,
        )
        return run, sum(cpu_seconds(p) for p in replicas) - copies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    items = outcomes(stream(args.meters, args.messages))
    root = Path(tempfile.mkdtemp(prefix="enerlink-bench-cluster-"))
    (root / "single" / "logs").mkdir(parents=True)
    single = RedisServer(root / "single").start()
    cluster = RedisClusterServers(root / "cluster").start()
    try:
        assert single.proc is not None and single.proc.pid is not None
        one, _ = asyncio.run(write_all(single.url, Keys(), items, batch=args.batch, pids=[single.proc.pid]))
        pids = {port: proc.pid for port, proc in cluster.procs.items() if proc.pid is not None}
        masters = set(cluster.master_ports())
        many, copies_s = asyncio.run(
            write_all(
                cluster.url,
                Keys(parts=DEFAULT_REDIS_PARTS),
                items,
                batch=args.batch,
                pids=list(pids.values()),
                replicas=[pid for port, pid in pids.items() if port not in masters],
            )
        )
    finally:
        cluster.stop()
        single.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(items):,} data messages of {args.meters:,} meters, batches of {args.batch}")
    print("                          writer CPU   Redis CPU (all nodes)   wall")
    for label, run in (("one server", one), (f"cluster, {DEFAULT_REDIS_PARTS} parts", many)):
        w, r, t = run.per_message_us()
        print(f"{label:<24} {w:>8.1f} us {r:>14.1f} us {t:>13.1f} us")
    print(f"  of which the replicas   {'':>8}    {1e6 * copies_s / many.messages:>14.1f} us")
    ratios = [b / a for a, b in zip(one.per_message_us(), many.per_message_us(), strict=True)]
    print(
        "cluster / one server:    "
        f"{ratios[0]:>8.2f} x {ratios[1]:>14.2f} x {ratios[2]:>13.2f} x   (per message; 1.00 = as cheap)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
