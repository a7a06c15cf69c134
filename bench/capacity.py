"""What 10,000, 100,000 and 1,000,000 meters need, from figures measured on the machine it runs on.

    .venv/bin/python bench/capacity.py [--meters 1000] [--minutes 30] [--repeat 3]

On services of its own (a Mosquitto, a redis-server and a PostgreSQL on free loopback ports; with
``--database-url``, fresh schemas on that server instead), as bench/footprint.py loads them:

1. **Ingest.** ``--meters`` simulated meters, ``--minutes`` of readings every 5 s and status
   messages every 30 s, through one ``enerlink ingest`` worker. It measures the CPU seconds of the
   worker and of the Redis server per message, read from /proc.
2. **Aggregator.** The same minutes go from Redis into PostgreSQL, each pass into a fresh schema,
   by one job over the whole fleet (one shard) or by two processes holding a shard each, started
   together. Each process has one worker process (``ENERLINK_AGGREGATE_WORKERS=1``). It measures
   wall time and CPU seconds (the aggregator processes with their worker processes, the PostgreSQL
   cluster, the Redis server), and meter-minutes per second of wall time:
   - one shard and two shards on all the machine's cores, shared with PostgreSQL and Redis;
   - on its own PostgreSQL only: one shard with one core and two shards with two, each pass with
     its PostgreSQL and Redis confined to the same cores, ``--repeat`` times in turn. Two shards
     should do about twice the meter-minutes of one (within 15 %): it prints the ratio of the
     fastest passes and each round's. Its own PostgreSQL runs without autovacuum and checkpoints
     before each pass, so that no pass pays for another's rows.
3. **Footprint.** Redis bytes per meter, held over the live window, and PostgreSQL bytes per
   meter-day at each resolution, as bench/footprint.py measures them. The minute and 5-minute rows
   are taken with the key packed (heap and key pages), as the nightly run leaves a month that is over.

Then it prints what a fleet at a 5 s interval needs: ingest workers, aggregator shards, Redis
memory and nodes, and PostgreSQL disk over a year with the retention settings
(``ENERLINK_ARCHIVE_RETENTION_*``, read from the environment). The sizing rules are printed with the
table: a worker or a shard busy at most 60 % of a core, and a Redis node at most 60 % of a core and
``--redis-node-gb`` of memory. A shard's minute also holds what its job reads whole, whatever the number
of shards (the fleet's meters, latest status snapshots and their times), timed on the bench's Redis
and scaled to the fleet: where that alone fills the minute, the table says ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import footprint
from footprint import (
    INTERVAL_S,
    RETENTION_S,
    STATUS_INTERVAL_S,
    Broker,
    Figure,
)
from shard_passes import ALL_CORES, Pass, aggregate

from enerlink import redis_parts
from enerlink.aggregator import reader
from enerlink.archiver.settings import Settings as ArchiverSettings
from enerlink.config import Env
from enerlink.edge.sim.fleet import generate
from enerlink.schemas.wire import Keys, Tables, Topics
from enerlink.shards import Shard
from tests.support.chaos_stack import cpu_seconds, postmaster_pid
from tests.support.pgserver import PgServer

FLEETS = (10_000, 100_000, 1_000_000)
BUSY = 0.6  # the share of a core a worker, a shard or a Redis node may use
PACKED = "(key packed: heap and key pages)"  # a month over, without a month's fixed maps


def _schema(stack: contextlib.ExitStack, base_url: str, *, name: str) -> str:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'create schema "{name}"')
    stack.callback(footprint._drop_schema, base_url, name)
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{name}"


def _figure(figures: list[Figure], label: str, *, variant: str | None = None) -> float:
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


def fleet_reads(redis_url: str, keys: Keys, *, meters: int) -> float:
    """Seconds a meter of what every shard's job reads whole, whatever the number of shards: the
    fleet's meters, its latest status snapshots and their times (fastest of three)."""
    shard = Shard(0, 2)

    async def once() -> float:
        async with aioredis.Redis.from_url(redis_url) as r:
            began = time.perf_counter()
            fleet = list(await reader.meters(r, keys))
            for name in (lambda k: k.latest_status, lambda k: k.latest_status_at):
                fleet += [m.decode() for m in await redis_parts.hgetall(r, keys, name)]
            kept = sum(map(shard.owns, fleet))  # each job keeps its own meters of each
            took = time.perf_counter() - began
        if not 0 < kept < len(fleet):
            raise SystemExit(f"the whole reads found {len(fleet)} entries, {kept} of one shard of two")
        return took

    return min(asyncio.run(once()) for _ in range(3)) / meters


def aggregation_passes(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    *,
    env: dict[str, str],
    database_url: str,
    servers: tuple[int | None, int],
    schemas: tuple[str, str],
) -> Pass:
    """The aggregation passes (the module docstring, 2.), printed; returns the one-shard pass on all
    cores, whose minute rows are in ``env``'s schema."""
    meter_minutes = args.meters * args.minutes
    own = None if args.database_url else database_url  # the bench's own server: a checkpoint a pass
    one_schema, two_schema = schemas

    def fresh(schema: str) -> dict[str, str]:
        return {**env, "ENERLINK_DATABASE_URL": _schema(stack, database_url, name=schema)}

    one = aggregate(env, shards=1, servers=servers, checkpoint=own)
    two = aggregate(fresh(two_schema), shards=2, servers=servers, checkpoint=own)
    passes = [("1 shard: ", one), ("2 shards:", two)]
    alone: list[Pass] = []
    paired: list[Pass] = []
    if own and len(ALL_CORES) >= 2:  # in turns, so that a slow spell of the machine hits both
        cores = sorted(ALL_CORES)[:2]
        for k in range(args.repeat):
            alone.append(
                aggregate(
                    fresh(f"{one_schema}_c{k}"), shards=1, servers=servers, checkpoint=own, cores=cores[:1]
                )
            )
            paired.append(
                aggregate(fresh(f"{two_schema}_c{k}"), shards=2, servers=servers, checkpoint=own, cores=cores)
            )
            passes += [("1 shard, 1 core: ", alone[-1]), ("2 shards, 2 cores:", paired[-1])]
    for label, done in passes:
        if sum(run.rows for run in done.runs) != meter_minutes:
            raise SystemExit(
                f"{label} {sum(run.rows for run in done.runs):,} minute rows, not {meter_minutes:,}"
            )
        busy = (done.cpu_s + done.pg_cpu_s + done.redis_cpu_s) / done.wall_s
        each = [f"{name} {cpu / meter_minutes * 1e6:,.0f} us" for name, cpu in done.parts()]
        rate = meter_minutes / done.wall_s
        print(f"aggregate, {label} {done.wall_s:6.2f} s wall, {rate:8,.0f} meter-minutes/s;", end="")
        print(f" CPU a meter-minute: {', '.join(each)}; {busy:.2f} cores busy")
    cores_n = len(ALL_CORES)
    ceiling = cores_n / ((one.cpu_s + one.pg_cpu_s + one.redis_cpu_s) / one.wall_s)
    print(
        f"2 shards / 1 shard, all {cores_n} cores shared: {one.wall_s / two.wall_s:.2f} x the meter-minutes"
        f" a wall second (one shard keeps {cores_n / ceiling:.2f} cores busy: at most"
        f" {min(2.0, ceiling):.2f} x)"
    )
    if paired:
        ratio = min(p.wall_s for p in alone) / min(p.wall_s for p in paired)
        verdict = "PASS" if abs(ratio - 2) <= 0.3 else "OUTSIDE 2 +- 15 %"
        rounds = ", ".join(f"{a.wall_s / b.wall_s:.2f}" for a, b in zip(alone, paired, strict=True))
        print(
            f"2 shards on 2 cores / 1 shard on 1 core (with its PostgreSQL and Redis), fastest of"
            f" {len(paired)} each: {ratio:.2f} x: {verdict} (in turn: {rounds})"
        )
    else:
        print("2 shards on 2 cores / 1 shard on 1 core: not measured (needs its own PostgreSQL and 2 cores)")
    return one


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    tag = uuid.uuid4().hex[:8]
    topics, keys = Topics(f"cap{tag}/enerlink"), Keys(f"cap{tag}:telemetry")
    broker = Broker().start()
    stack.callback(broker.stop)
    redis_url = footprint.own_redis(stack, keep=False)
    database_url = args.database_url
    if database_url is None:
        server = PgServer()
        stack.callback(server.cleanup)
        database_url = server.start().url
        with psycopg.connect(database_url, autocommit=True) as conn:  # no vacuum of one pass in another
            conn.execute("alter system set autovacuum = off")
            conn.execute("select pg_reload_conf()")
    one_schema, two_schema = f"bench_capacity_{tag}", f"bench_capacity2_{tag}"
    url = _schema(stack, database_url, name=one_schema)
    print(
        f"services: schemas {one_schema} {two_schema}, {redis_url}, broker {broker.url},"
        f" PostgreSQL {database_url}",
        flush=True,
    )
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
    one = aggregation_passes(
        stack,
        args,
        env=env,
        database_url=database_url,
        servers=(postmaster_pid(database_url), redis_pid),
        schemas=(one_schema, two_schema),
    )
    figures = footprint.redis_figures(r, keys, ids) + footprint.pg_figures(url, expected=meter_minutes)
    redis_meter = _figure(figures, f"redis steady state ({RETENTION_S / 3600:g} h window)")
    per_day = {
        Tables.TELEMETRY_AGGREGATES: _figure(figures, "postgresql minute", variant=PACKED) * 1440,
        Tables.TELEMETRY_5M_CLOSED: _figure(figures, "postgresql 5-minute rollup", variant=PACKED) * 288,
        Tables.TELEMETRY_1H_FOLDED: _figure(figures, "postgresql hourly folded") * 24,
        Tables.TELEMETRY_1D_FOLDED: _figure(figures, "postgresql daily folded"),
    }
    table(
        args,
        ingest_cpu=ingest_cpu,
        redis_cpu=redis_cpu,
        agg_wall=one.wall_s / meter_minutes,
        fleet_read=fleet_reads(redis_url, keys, meters=args.meters),
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
    fleet_read: float,
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
        f" finishes its minute within {BUSY * 60:.0f} s, {fleet_read * 1e6:.1f} us a meter of the fleet of it"
        " in reading the fleet-wide hashes whole, as every shard does;"
        f" a Redis node holds at most {args.redis_node_gb:g}"
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
        budget = BUSY * 60 - fleet * fleet_read  # what the whole reads leave of a shard's minute
        shards = math.ceil(fleet * agg_wall / budget) if budget > 0 else "none"
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
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to use instead of its own (then one shard on one core is not measured)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of one shard on one core and two on two"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # the publisher's window, full by design
    with contextlib.ExitStack() as stack:
        run(args, stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
