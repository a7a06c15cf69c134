"""What 10,000, 100,000 and 1,000,000 meters need, from figures measured on the machine it runs on.

    .venv/bin/python bench/capacity.py [--meters 1000] [--minutes 30]

On services of its own (a Mosquitto and a redis-server on free loopback ports, fresh PostgreSQL
schemas), as bench/footprint.py loads them:

1. **Ingest.** ``--meters`` simulated meters, ``--minutes`` of readings every 5 s and status
   messages every 30 s, through one ``enerlink ingest`` worker. It measures the CPU seconds of the
   worker and of the Redis server per message, read from /proc.
2. **Aggregator.** The same minutes go from Redis into PostgreSQL twice:
   - once by one job over the whole fleet (one shard);
   - once into a fresh schema by two processes holding a shard each, started together.
   Each process has one worker process (``ENERLINK_AGGREGATE_WORKERS=1``). It measures wall time
   and CPU seconds (the aggregator processes with their worker processes), and meter-minutes per
   second of wall time. On 2 cores, two shards should do about twice the meter-minutes of one
   (within 15 %); PostgreSQL and Redis share those cores.
3. **Footprint.** Redis bytes per meter, held over the live window, and PostgreSQL bytes per
   meter-day at each resolution, as bench/footprint.py measures them. The minute and 5-minute rows
   are taken with the key packed (heap and key pages), as the nightly run leaves a month that is over.

Then it prints what a fleet at a 5 s interval needs: ingest workers, aggregator shards, Redis
memory and nodes, and PostgreSQL disk over a year with the retention settings
(``ENERLINK_ARCHIVE_RETENTION_*``, read from the environment). The sizing rules are printed with the
table: a worker or a shard busy at most 60 % of a core, and a Redis node at most 60 % of a core and
``--redis-node-gb`` of memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import footprint
from footprint import (
    DEFAULT_DB,
    INTERVAL_S,
    RETENTION_S,
    STATUS_INTERVAL_S,
    Broker,
    Figure,
)

from enerlink.archiver.settings import Settings as ArchiverSettings
from enerlink.config import Env
from enerlink.edge.sim.fleet import generate
from enerlink.schemas.wire import Keys, Tables, Topics
from tests.support.chaos_stack import child_pids, cluster_cpu_seconds, cpu_seconds, postmaster_pid

FLEETS = (10_000, 100_000, 1_000_000)
BUSY = 0.6  # the share of a core a worker, a shard or a Redis node may use
PACKED = "(key packed: heap and key pages)"  # a month over, without a month's fixed maps


@dataclass(frozen=True, slots=True)
class JobRun:
    """One aggregator process's job: wall time, CPU seconds with its workers, minute rows written."""

    wall_s: float
    cpu_s: float
    rows: int


def job_process(index: int, count: int) -> None:
    """The child mode: get ready (migrations, Redis, the worker process), say so, wait for a line on
    stdin, run one job over shard ``index`` of ``count``, print its figures as JSON."""
    from enerlink.aggregator.job import Aggregator
    from enerlink.aggregator.service import compute_pool, settle_layout
    from enerlink.aggregator.settings import Settings
    from enerlink.db import migrate
    from enerlink.shards import Shard

    async def _run() -> None:
        import redis.asyncio as aioredis

        settings = Settings.from_env(Env())
        await migrate(settings.common.database_url)
        await settle_layout(settings)
        async with aioredis.Redis.from_url(settings.common.redis_url) as r, compute_pool(settings) as pool:
            await asyncio.wrap_future(pool.submit(os.getpid))  # the worker started
            aggregator = Aggregator(settings, r, executor=pool)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            pids = [os.getpid(), *pool.pids()]
            before = sum(cpu_seconds(p) for p in pids)
            began = time.monotonic()
            report = await aggregator.run_job(Shard(index, count))
            wall = time.monotonic() - began
            used = sum(cpu_seconds(p) for p in pids) - before
            print(json.dumps({"wall_s": wall, "cpu_s": used, "rows": report.rows}), flush=True)

    asyncio.run(_run())


@dataclass(frozen=True, slots=True)
class Pass:
    """The processes' jobs of one aggregation pass, and what the shared servers used meanwhile."""

    runs: list[JobRun]
    pg_cpu_s: float
    redis_cpu_s: float

    @property
    def wall_s(self) -> float:
        return max(run.wall_s for run in self.runs)

    @property
    def cpu_s(self) -> float:
        return sum(run.cpu_s for run in self.runs)

    def parts(self) -> list[tuple[str, float]]:
        return [("aggregator", self.cpu_s), ("PostgreSQL", self.pg_cpu_s), ("Redis", self.redis_cpu_s)]


def aggregate(env: dict[str, str], *, shards: int, servers: tuple[int | None, int]) -> Pass:
    """``shards`` processes, one a shard, each started and made ready, then released together;
    ``servers``: the postmaster's and the Redis server's pids."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--job", f"{k}/{shards}"],
            env={
                **os.environ,
                **env,
                "ENERLINK_AGGREGATE_WORKERS": "1",
                "ENERLINK_AGGREGATE_SHARDS": str(shards),
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(shards)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("an aggregator process did not get ready")
        backends = set(child_pids(servers[0])) if servers[0] else set()
        before = cluster_cpu_seconds(servers[0]), cpu_seconds(servers[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        runs = []
        for proc in procs:
            assert proc.stdout is not None
            runs.append(JobRun(**json.loads(proc.stdout.readline())))
        for proc in procs:
            if proc.wait(timeout=600) != 0:
                raise SystemExit("an aggregator process failed")
        deadline = time.monotonic() + 3.0  # their backends' CPU counts once they are reaped
        while servers[0] and set(child_pids(servers[0])) - backends and time.monotonic() < deadline:
            time.sleep(0.05)
        after = cluster_cpu_seconds(servers[0]), cpu_seconds(servers[1])
        return Pass(runs, after[0] - before[0], after[1] - before[1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _schema(stack: contextlib.ExitStack, base_url: str, name: str) -> str:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'create schema "{name}"')
    stack.callback(footprint._drop_schema, base_url, name)
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{name}"


def _figure(figures: list[Figure], label: str, variant: str | None = None) -> float:
    """The value of the figure ``label``, or of its line ``variant`` printed after it."""
    found = False
    for figure in figures:
        if figure.label == label:
            if variant is None:
                return float(figure.value or 0.0)
            found = True
        elif found and figure.label.strip() == variant:
            return float(figure.value or 0.0)
        elif found and not figure.label.startswith(" "):
            break
    raise SystemExit(f"no figure {label!r} {variant or ''}")


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.0f} KB"


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    tag = uuid.uuid4().hex[:8]
    topics, keys = Topics(f"cap{tag}/enerlink"), Keys(f"cap{tag}:telemetry")
    broker = Broker().start()
    stack.callback(broker.stop)
    redis_url = footprint.own_redis(stack, keep=False)
    one_schema, two_schema = f"bench_capacity_{tag}", f"bench_capacity2_{tag}"
    url = _schema(stack, args.database_url, one_schema)
    print(f"services: schemas {one_schema} {two_schema}, {redis_url}, broker {broker.url}", flush=True)
    env = footprint.services_env(
        mqtt_url=broker.url, redis_url=redis_url, database_url=url, topics=topics, keys=keys
    )
    r = redis.Redis.from_url(redis_url)
    stack.callback(r.close)
    redis_pid = int(r.info("server")["process_id"])
    ingest = footprint.service(stack, ["ingest"], env)
    assert ingest.process is not None
    footprint._wait_subscribed(r, broker.url, keys, topics)
    ids = generate(args.meters).ids
    end_s = int(time.time()) // 60 * 60
    print(f"load: {args.meters:,} meters x {args.minutes} min, readings every {INTERVAL_S:g} s", flush=True)
    worker_before, redis_before = cpu_seconds(ingest.process.pid), cpu_seconds(redis_pid)
    stream = footprint.messages(topics, meters=args.meters, minutes=args.minutes, end_s=end_s, statuses=True)
    sent = asyncio.run(footprint.publish(broker.url, stream))
    footprint.wait_stored(r, keys, ids, expected=sent, timeout_s=max(120.0, sent / 500))
    ingest_cpu = (cpu_seconds(ingest.process.pid) - worker_before) / sent
    redis_cpu = (cpu_seconds(redis_pid) - redis_before) / sent
    us = f"worker {ingest_cpu * 1e6:,.0f} us, Redis {redis_cpu * 1e6:,.0f} us"
    print(f"ingest: {sent:,} messages; CPU per message: {us}")
    r.delete(keys.late_minutes)  # as bench/footprint.py: a live fleet's readings raise no late flag
    time.sleep(max(0.0, end_s + footprint.GRACE_S + 1 - time.time()))
    meter_minutes = args.meters * args.minutes
    servers = postmaster_pid(args.database_url), redis_pid
    one = aggregate(env, shards=1, servers=servers)
    two = aggregate(
        {**env, "ENERLINK_DATABASE_URL": _schema(stack, args.database_url, two_schema)},
        shards=2,
        servers=servers,
    )
    for label, done in (("1 shard: ", one), ("2 shards:", two)):
        if sum(run.rows for run in done.runs) != meter_minutes:
            raise SystemExit(
                f"{label} {sum(run.rows for run in done.runs):,} minute rows, not {meter_minutes:,}"
            )
        busy = (done.cpu_s + done.pg_cpu_s + done.redis_cpu_s) / done.wall_s
        each = [f"{name} {cpu / meter_minutes * 1e6:,.0f} us" for name, cpu in done.parts()]
        rate = meter_minutes / done.wall_s
        print(f"aggregate, {label} {done.wall_s:6.2f} s wall, {rate:8,.0f} meter-minutes/s;", end="")
        print(f" CPU a meter-minute: {', '.join(each)}; {busy:.2f} cores busy")
    ratio = one.wall_s / two.wall_s
    verdict = "PASS" if abs(ratio - 2) <= 0.3 else "OUTSIDE 2 +- 15 %"
    cores = os.cpu_count() or 1
    ceiling = cores / ((one.cpu_s + one.pg_cpu_s + one.redis_cpu_s) / one.wall_s)
    print(
        f"2 shards / 1 shard: {ratio:.2f} x the meter-minutes a wall second: {verdict} (on {cores} cores,"
        f" which one shard keeps {cores / ceiling:.2f} busy, at most {min(2.0, ceiling):.2f} x)"
    )
    figures = footprint.redis_figures(r, keys, ids) + footprint.pg_figures(url, expected=meter_minutes)
    redis_meter = _figure(figures, f"redis steady state ({RETENTION_S / 3600:g} h window)")
    per_day = {
        Tables.TELEMETRY_AGGREGATES: _figure(figures, "postgresql minute", PACKED) * 1440,
        Tables.TELEMETRY_5M_CLOSED: _figure(figures, "postgresql 5-minute rollup", PACKED) * 288,
        Tables.TELEMETRY_1H_FOLDED: _figure(figures, "postgresql hourly folded") * 24,
        Tables.TELEMETRY_1D_FOLDED: _figure(figures, "postgresql daily folded"),
    }
    table(
        args,
        ingest_cpu=ingest_cpu,
        redis_cpu=redis_cpu,
        agg_wall=one.wall_s / meter_minutes,
        agg_cpu=(one.cpu_s + one.pg_cpu_s) / meter_minutes,
        redis_meter=redis_meter,
        per_day=per_day,
    )


def table(
    args: argparse.Namespace,
    *,
    ingest_cpu: float,
    redis_cpu: float,
    agg_wall: float,
    agg_cpu: float,
    redis_meter: float,
    per_day: dict[str, float],
) -> None:
    """The sizing table from the measured figures (see the module docstring for the rules)."""
    retention = ArchiverSettings.from_env(Env()).retention_for
    held_days = {t: min(365, retention(t) or 365) for t in per_day}
    print(
        f"--- per meter: Redis {redis_meter:,.0f} B held; PostgreSQL per meter-day: "
        + ", ".join(
            f"{t.removeprefix('telemetry_aggregates').strip('_') or 'minute'} {b:,.0f} B"
            for t, b in per_day.items()
        )
    )
    print(
        f"--- rules: a reading every {INTERVAL_S:g} s and a status every {STATUS_INTERVAL_S:g} s; an ingest"
        f" worker, an aggregator shard and a Redis node each busy at most {BUSY:.0%} of a core; a shard"
        f" finishes its minute within {BUSY * 60:.0f} s; a Redis node holds at most {args.redis_node_gb:g}"
        " GB;"
        " PostgreSQL after one year with the retention settings (days held: "
        + ", ".join(
            f"{t.removeprefix('telemetry_aggregates').strip('_') or 'minute'} {d}"
            for t, d in held_days.items()
        )
        + ")"
    )
    widths = (10, 10, 14, 17, 12, 11, 18)
    heads = ("meters", "messages/s", "ingest workers", "aggregator shards", "Redis memory", "Redis nodes")
    print(" | ".join(h.rjust(w) for h, w in zip((*heads, "PostgreSQL, year 1"), widths, strict=True)))
    for fleet in FLEETS:
        rate = fleet / INTERVAL_S + fleet / STATUS_INTERVAL_S
        workers = math.ceil(rate * ingest_cpu / BUSY)
        shards = math.ceil(fleet * agg_wall / (BUSY * 60))
        memory = fleet * redis_meter
        nodes = max(math.ceil(rate * redis_cpu / BUSY), math.ceil(memory / (args.redis_node_gb * 1e9)))
        disk = sum(fleet * b * held_days[t] for t, b in per_day.items())
        cells = (f"{fleet:,}", f"{rate:,.0f}", workers, shards, _size(memory), nodes, _size(disk))
        print(" | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)))
    print(
        f"(aggregator and PostgreSQL CPU {agg_cpu * 1e6:,.0f} us a meter-minute; more than one Redis node"
        " means a Redis Cluster of that many masters, each with a replica)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes of readings, ending now")
    parser.add_argument("--redis-node-gb", type=float, default=16.0, help="memory a Redis node may hold")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        index, count = (int(n) for n in args.job.split("/"))
        job_process(index, count)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # the publisher's window, full by design
    with contextlib.ExitStack() as stack:
        run(args, stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
