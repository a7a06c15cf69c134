"""What one meter costs to keep: Redis, PostgreSQL and archive bytes against the raw information floor.

    .venv/bin/python bench/footprint.py [--meters 1000] [--minutes 60] [--keep]

Loads ``--meters`` simulated meters (edge/sim: the project's physics, a reading every 5 s and a status
message every 30 s, as ``enerlink sim`` publishes them) for the last ``--minutes`` minutes through the real
pipeline, on services of its own: a Mosquitto (project configuration, free port), a redis-server (free
port, nothing saved), a fresh PostgreSQL schema. One ``enerlink ingest`` worker (a subprocess, default
settings: seq records and confirmations on) stores every message with its Lua script; then
``enerlink aggregate --once`` computes the minutes into PostgreSQL; then the archiver's month export
writes the minute table's month file(s) into a temporary folder store.

The data path. Every reading is inside the Redis window (``ENERLINK_RETENTION_S``, 2 h; ``--minutes``
must leave room), so the ingest stores it in the meter's live sorted set, not in late data. Its minute
has closed by the time it arrives, so the ingest also flags every (meter, minute) in ``late_minutes``;
a live fleet's readings arrive in their open minute and raise no flag. The bench removes those flags
after the load: the aggregator, with no watermark yet, then closes every minute once through its minute
pass (catch-up: one pass per minute, oldest first, each with its 5-minute rollup and its share of the
hourly/daily fold), the pass that closes a live fleet's minutes. The late path (re-aggregating every
pair a second time by upsert, which would leave a dead version of every row) is not taken.

Prints, each against the raw information floor (the numbers of a data message, ``enerlink.schemas.fields``,
4 bytes each, times the readings a unit covers), per meter-year and for 10,000 meters, and against its
target with PASS / ABOVE TARGET: Redis bytes per stored snapshot (``MEMORY USAGE key SAMPLES 0`` of the
meters' sorted sets / snapshots), the other per-meter keys, the steady state per meter with the window;
PostgreSQL bytes per meter-minute, per complete 5-minute row (``telemetry_aggregates_5m_closed``) and per
hourly/daily folded row (all forks of every partition, with their indexes and TOAST, / rows, as written and
after ``VACUUM FULL``; and the average ``pg_column_size`` of a row; for the two monthly tables also once
the archiver's nightly run has packed each month's key, in all and as the heap and key pages of the
partitions holding rows, without a month's fixed maps and the empty months made ahead, which a month of
rows makes negligible), and the open 5-minute buckets' table
per meter (it holds one or two buckets a meter, however long the history); archive bytes per
meter-month (CSV.gz, extrapolated from the loaded minutes); raw archive bytes per reading.
The ingest's per-meter rate limit is off (``ENERLINK_INGEST_METER_RATE=0``): the bench replays an hour
in minutes. Everything it creates is removed at the end, also on Ctrl-C or SIGTERM (``--keep``: the
schema, the Redis server and the archive folder stay, and the bench says where).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.aggregator.settings import Settings as AggregatorSettings  # noqa: E402
from enerlink.archiver.job import MonthArchiver  # noqa: E402
from enerlink.archiver.months import Month, archived_table, partitions  # noqa: E402
from enerlink.archiver.packing import pack_partition  # noqa: E402
from enerlink.archiver.raw_export import RawExporter  # noqa: E402
from enerlink.archiver.raw_figures import raw_bytes_per_reading  # noqa: E402
from enerlink.archiver.storage import LocalStore, StorageSettings  # noqa: E402
from enerlink.config import Env  # noqa: E402
from enerlink.edge.settings import Settings as SimSettings  # noqa: E402
from enerlink.edge.sim.engine import Simulator  # noqa: E402
from enerlink.edge.sim.fleet import generate  # noqa: E402
from enerlink.edge.sim.messages import data_messages, status_message  # noqa: E402
from enerlink.ingest.settings import Settings as IngestSettings  # noqa: E402
from enerlink.schemas.fields import NUMERIC_FIELDS  # noqa: E402
from enerlink.schemas.wire import Keys, Tables, Topics  # noqa: E402
from tests.support.ingest_support import publisher  # noqa: E402
from tests.support.services import Broker, ServiceProcess, free_port, wait_port  # noqa: E402

DEFAULT_DB = os.environ.get("ENERLINK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _default(cls: type, name: str) -> float:
    value = {f.name: f.default for f in fields(cls)}[name]
    assert isinstance(value, float), (cls, name, value)
    return value


INTERVAL_S = _default(SimSettings, "interval_s")  # the simulator's 5 s
STATUS_INTERVAL_S = _default(SimSettings, "status_interval_s")  # 30 s
FLOOR_BYTES = 4 * len(NUMERIC_FIELDS)  # the numbers of one data message, 4 bytes each
MINUTES_PER_YEAR = 365 * 24 * 60
FLEET = 10_000
TARGET_REDIS, TARGET_PG, TARGET_RAW = 400.0, 500.0, 100.0
GRACE_S = _default(AggregatorSettings, "grace_s")
RETENTION_S = IngestSettings.from_env(Env({})).retention_s
READINGS_PER_MINUTE = 60 / INTERVAL_S


@dataclass(frozen=True, slots=True)
class Figure:
    label: str
    value: float | None  # bytes per unit; None: not measurable today
    unit: str
    readings: float  # data readings one unit holds (the floor is readings x FLOOR_BYTES)
    per_year: float | None  # units per meter-year; None: a steady state (bytes per meter, held)
    target: float | None = None
    missing: str = "no raw export"  # why there is no value


def show(figure: Figure) -> None:
    if figure.value is None:
        print(f"{figure.label:<36} n/a ({figure.missing})")
        return
    floor = figure.readings * FLOOR_BYTES
    line = f"{figure.label:<36} {figure.value:10,.1f} B/{figure.unit:<12}"
    line += (
        f" floor {floor:9,.0f} B ({figure.value / floor:5.2f} x)" if floor else f" floor {'-':>9}" + " " * 12
    )
    if figure.per_year is None:
        held = figure.value
        line += f" | held per meter {_size(held)}, {FLEET:,} meters {_size(held * FLEET)}"
    else:
        year = figure.value * figure.per_year
        line += f" | per meter-year {_size(year)}, {FLEET:,} meters {_size(year * FLEET)}/year"
    if figure.target is not None:
        verdict = "PASS" if figure.value <= figure.target else "ABOVE TARGET"
        line += f" | target <= {figure.target:.0f}: {verdict}"
    print(line)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1000
    raise AssertionError


def raw_archive(*, schema_url: str, redis_url: str, keys: Keys, folder: Path) -> Figure:
    """Raw archive bytes per reading: the archiver's raw export (one run) of every closed hour of the
    loaded readings into the folder store, from its manifest."""
    store = LocalStore(replace(StorageSettings.from_env(Env({})), archive_dir=folder))
    store.ensure()
    with psycopg.connect(schema_url, autocommit=True) as conn, redis.Redis.from_url(redis_url) as client:
        report = RawExporter(conn=conn, redis=client, keys=keys, store=store, grace_s=0.0).run()
        value = raw_bytes_per_reading(conn)
    print(
        f"raw export: {report.readings:,} readings of {report.hours} closed hour(s), {report.objects} objects"
    )
    figure = Figure(
        "raw archive per reading", value, "reading", 1, MINUTES_PER_YEAR * READINGS_PER_MINUTE, 100
    )
    return replace(figure, missing="no closed hour among the loaded readings") if value is None else figure


def messages(
    topics: Topics, *, meters: int, minutes: int, end_s: int, statuses: bool
) -> Iterator[tuple[str, bytes]]:
    """The fleet's data (every 5 s) and status (every 30 s) messages of the ``minutes`` before
    ``end_s``, oldest first, each tick for the whole fleet (as the simulated fleet publishes)."""
    sim = Simulator.create(generate(meters))
    seqs = np.zeros(meters, dtype=np.int64)
    start = end_s - minutes * 60
    rng = np.random.default_rng(0)
    for k in range(int(minutes * READINGS_PER_MINUTE)):
        epoch = start + k * INTERVAL_S
        step = sim.step(epoch)
        seqs += 1
        for message in data_messages(sim, step, seqs=seqs.tolist()):
            yield topics.data, orjson.dumps(message)
        if statuses and epoch % STATUS_INTERVAL_S == 0:
            for i in range(meters):
                status = status_message(
                    sim, i, epoch_s=epoch, uptime_ms=int((epoch - start) * 1000), rng_value=rng.random()
                )
                yield topics.status, orjson.dumps(status)


async def publish(url: str, stream: Iterator[tuple[str, bytes]]) -> int:
    async with publisher(url, window=100) as pub:
        return await pub.many(stream)


def wait_stored(r: redis.Redis, keys: Keys, ids: list[str], *, expected: int, timeout_s: float) -> None:
    """Until the meters' sorted sets hold ``expected`` members (data and status)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pipe = r.pipeline(transaction=False)
        for meter in ids:
            pipe.zcard(keys.timeseries(meter))
            pipe.zcard(keys.status_timeseries(meter))
        stored = sum(pipe.execute())
        if stored >= expected:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the ingest stored {stored} of {expected} messages in {timeout_s:.0f} s")
        time.sleep(1.0)


def _usage(r: redis.Redis, names: list[str]) -> int:
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return sum(n or 0 for n in pipe.execute())


def redis_figures(r: redis.Redis, keys: Keys, ids: list[str]) -> list[Figure]:
    n = len(ids)
    series = [keys.timeseries(m) for m in ids]
    status_series = [keys.status_timeseries(m) for m in ids]
    pipe = r.pipeline(transaction=False)
    for name in series + status_series:
        pipe.zcard(name)
    counts = pipe.execute()
    snapshots, statuses = sum(counts[:n]), sum(counts[n:])
    per_snapshot = _usage(r, series) / snapshots
    per_status = _usage(r, status_series) / statuses if statuses else 0.0
    shared = [keys.latest_data, keys.latest_data_at, keys.latest_status, keys.latest_status_at]
    shared += [keys.meters, keys.gaps, keys.presence, keys.confirm_due, keys.resend_due, keys.rate_limited]
    latest = _usage(r, shared[:4]) / n
    bookkeeping = _usage(r, shared[4:]) / n
    seq_records = _usage(r, [keys.seq_record(m) for m in ids]) / n
    counted = set(series + status_series + shared + [keys.seq_record(m) for m in ids])
    rest = [k.decode() for k in r.scan_iter(match=f"{keys.prefix}:*", count=1000)]
    others = [k for k in rest if k not in counted]
    other = _usage(r, others) / n
    window = RETENTION_S / INTERVAL_S
    status_window = RETENTION_S / STATUS_INTERVAL_S
    fixed = latest + bookkeeping + seq_records + other
    steady = window * per_snapshot + status_window * per_status + fixed
    print(
        f"redis: {snapshots:,} data + {statuses:,} status snapshots of {n:,} meters; other keys: "
        + (", ".join(sorted({k.removeprefix(keys.prefix + ":").split(":")[0] for k in others})) or "none")
    )
    per_reading_year = MINUTES_PER_YEAR * READINGS_PER_MINUTE
    ratio_status = STATUS_INTERVAL_S / INTERVAL_S
    return [
        Figure("redis per data snapshot", per_snapshot, "snapshot", 1, per_reading_year, TARGET_REDIS),
        Figure("redis per status snapshot", per_status, "snapshot", 0, per_reading_year / ratio_status),
        Figure("redis latest data+status hashes", latest, "meter", 1, None),
        Figure("redis seq records", seq_records, "meter", 0, None),
        Figure("redis meters/gaps/presence/due", bookkeeping, "meter", 0, None),
        Figure("redis other keys", other, "meter", 0, None),
        Figure(f"redis steady state ({RETENTION_S / 3600:g} h window)", steady, "meter", window, None),
    ]


def _table(conn: psycopg.Connection[Any], table: str) -> tuple[int, int, float]:
    """Bytes (every partition: heap, indexes, TOAST, free-space and visibility maps), rows, and the
    average ``pg_column_size`` of a row."""
    size = conn.execute(  # a partitioned table's own size is 0; a plain table has no partition tree
        "select greatest(pg_total_relation_size(%s::regclass), (select coalesce(sum(pg_total_relation_size"
        "(relid)), 0) from pg_partition_tree(%s::regclass)))",
        (table, table),
    ).fetchone()
    row = conn.execute(f'select count(*), coalesce(avg(pg_column_size(t.*)), 0) from "{table}" t').fetchone()
    assert size is not None and row is not None
    return int(size[0]), int(row[0]), float(row[1])


def _row_pages(conn: psycopg.Connection[Any], table: str) -> int:
    """Bytes of the heap and index pages of the partitions holding rows: what grows with the rows. A
    month partition's free-space and visibility maps (32 KB while small, about 0.1 B a row for a month
    of 1,000 meters) and the empty months made ahead are a fixed cost per month, not per row."""
    row = conn.execute(
        "select coalesce(sum(pg_relation_size(t.relid, 'main') + (select coalesce(sum("
        "pg_relation_size(i.indexrelid, 'main')), 0) from pg_index i where i.indrelid = t.relid)), 0)"
        " from pg_partition_tree(%s::regclass) t where t.isleaf and pg_relation_size(t.relid, 'main') > 0",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def pg_figures(url: str, *, expected: int) -> list[Figure]:
    out = []
    tables = (
        ("minute", Tables.TELEMETRY_AGGREGATES, "meter-minute", 1, TARGET_PG),
        ("5-minute rollup", Tables.TELEMETRY_5M_CLOSED, "5-min row", 5, TARGET_PG),
        ("hourly folded", Tables.TELEMETRY_1H_FOLDED, "hour row", 60, None),
        ("daily folded", Tables.TELEMETRY_1D_FOLDED, "day row", 1440, None),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for label, table, unit, minutes, target in tables:
            size, rows, avg = _table(conn, table)
            print(f"postgresql {table}: {rows:,} rows, {size:,} bytes, avg pg_column_size {avg:,.0f} B")
            if table == Tables.TELEMETRY_AGGREGATES and rows != expected:
                raise SystemExit(f"{rows:,} minute rows, expected {expected:,} (meters x minutes)")
            if not rows:  # folding starts with a meter's first closed 5-minute bucket
                missing = "no rows yet: load more minutes"
                out.append(Figure(f"postgresql {label}", None, unit, 0, None, missing=missing))
                continue
            readings = minutes * READINGS_PER_MINUTE
            figure = Figure(
                f"postgresql {label}", size / rows, unit, readings, MINUTES_PER_YEAR / minutes, target
            )
            out.append(figure)
            out.append(replace(figure, label="  (avg row, pg_column_size)", value=avg, target=None))
            if table in Tables.MONTHLY_PARTITIONED:
                # the key as the nightly run leaves a month that is over (an hour's key is still about
                # three quarters full; one written for weeks settles at half: bench/key_growth.py)
                stop = threading.Event()
                for month, partition in partitions(conn, table).items():
                    pack_partition(conn, table=table, month=month, partition=partition, stop=stop)
                packed = _table(conn, table)[0] / rows
                out.append(replace(figure, label="  (month over: key packed)", value=packed, target=None))
                pages = _row_pages(conn, table) / rows
                print(f"postgresql {table}: maps and empty months ahead {(packed - pages) * rows:,.0f} B")
                out.append(replace(figure, label="  (key packed: heap and key pages)", value=pages))
            # the dead versions left by the rollups' updates, until autovacuum lets them be reused: the
            # steady state lies between the size as written and the compacted one
            conn.execute(f'vacuum full "{table}"')
            compacted = _table(conn, table)[0] / rows
            out.append(replace(figure, label="  (after VACUUM FULL)", value=compacted, target=None))
        # the open 5-minute buckets (one or two a meter, whatever the history's length): per meter
        size, rows, avg = _table(conn, Tables.TELEMETRY_5M_OPEN)
        meters = conn.execute(f'select count(*) from "{Tables.ROLLUP_FOLD}"').fetchone()
        per_meter = size / max(1, int(meters[0]) if meters else 1)
        conn.execute(f'vacuum full "{Tables.TELEMETRY_5M_OPEN}"')  # autovacuum's work in a live minute
        compacted = _table(conn, Tables.TELEMETRY_5M_OPEN)[0] / max(1, int(meters[0]) if meters else 1)
        print(
            f"postgresql {Tables.TELEMETRY_5M_OPEN}: {rows:,} rows, {size:,} bytes ({per_meter:,.0f} B a"
            f" meter as written, {compacted:,.0f} B after VACUUM FULL; open buckets only)"
        )
    return out


def archive_figure(url: str, folder: Path, *, meters: int, minutes: int) -> Figure:
    """The archiver's month export of the minute table into a folder store; its month files' bytes,
    extrapolated from the loaded minutes to a meter-month (a month file holds a whole month)."""
    table = archived_table(Tables.TELEMETRY_AGGREGATES)
    store = LocalStore(replace(StorageSettings.from_env(Env({})), archive_dir=folder))
    store.ensure()
    total = rows = 0
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(f"select distinct date_trunc('month', bucket) from \"{table.name}\"").fetchall()
        for (start,) in found:
            result = MonthArchiver(conn, store).archive(table, Month.of(start))
            if result is not None:
                total += result.size
                rows += result.rows
    print(f"archive: {rows:,} minute rows in {len(found)} month file(s), {total:,} bytes CSV.gz in {folder}")
    per_month = MINUTES_PER_YEAR / 12
    value = total / rows * per_month if rows else 0.0
    return Figure("archive CSV.gz per meter-month", value, "meter-month", per_month * READINGS_PER_MINUTE, 12)


def own_redis(stack: contextlib.ExitStack, *, keep: bool) -> str:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    quiet = subprocess.DEVNULL
    process = subprocess.Popen(argv, stdout=quiet, stderr=quiet, stdin=quiet, start_new_session=keep)
    if keep:
        stack.callback(
            print, f"kept: redis-server pid {process.pid} on port {port} (stop: kill {process.pid})"
        )
    else:
        stack.callback(process.wait)  # runs after the kill below (callbacks run last in, first out)
        stack.callback(process.kill)
    wait_port(port)
    return f"redis://127.0.0.1:{port}/0"


def service(stack: contextlib.ExitStack, args: list[str], env: dict[str, str]) -> ServiceProcess:
    proc = ServiceProcess(args=args, env=env)
    stack.callback(proc.log_path.unlink, missing_ok=True)
    stack.callback(proc.kill)
    return proc.start()


def services_env(
    *, mqtt_url: str, redis_url: str, database_url: str, topics: Topics, keys: Keys
) -> dict[str, str]:
    """The services' settings for a bench's own broker, Redis, schema and prefixes: quiet logs, no
    metrics ports, no per-meter rate limit (a bench replays its minutes as fast as it can)."""
    return {
        "ENERLINK_MQTT_URL": mqtt_url,
        "ENERLINK_REDIS_URL": redis_url,
        "ENERLINK_DATABASE_URL": database_url,
        "ENERLINK_TOPIC_PREFIX": topics.prefix,
        "ENERLINK_KEY_PREFIX": keys.prefix,
        "ENERLINK_LOG_LEVEL": "WARNING",
        "ENERLINK_INGEST_METER_RATE": "0",
        "ENERLINK_INGEST_METRICS_PORT": "0",
        "ENERLINK_AGGREGATOR_METRICS_PORT": "0",
    }


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    if args.minutes * 60 > RETENTION_S - 600:
        raise SystemExit(f"--minutes {args.minutes}: the readings must fit in the {RETENTION_S} s window")
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_footprint_{tag}"
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
    topics, keys = Topics(f"fp{tag}/enerlink"), Keys(f"fp{tag}:telemetry")
    broker = Broker().start()
    stack.callback(shutil.rmtree, broker.data_dir, ignore_errors=True)
    stack.callback(broker.stop)
    redis_url = own_redis(stack, keep=args.keep)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    if args.keep:
        stack.callback(print, f"kept: PostgreSQL schema {schema} (drop schema {schema} cascade)")
    else:
        stack.callback(_drop_schema, args.database_url, schema)
    folder = Path(tempfile.mkdtemp(prefix="enerlink-footprint-"))
    if not args.keep:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
    print(f"services: schema {schema}, {redis_url}, broker {broker.url}, folder {folder}", flush=True)
    env = services_env(mqtt_url=broker.url, redis_url=redis_url, database_url=url, topics=topics, keys=keys)
    r = redis.Redis.from_url(redis_url)
    stack.callback(r.close)
    service(stack, ["ingest"], env)
    _wait_subscribed(r, broker.url, keys, topics)
    ids = generate(args.meters).ids
    end_s = int(time.time()) // 60 * 60  # readings up to the start of this minute: every minute complete
    data = int(args.meters * args.minutes * READINGS_PER_MINUTE)
    statuses = int(args.meters * args.minutes * 60 // STATUS_INTERVAL_S) if args.statuses else 0
    print(
        f"load: {args.meters:,} meters x {args.minutes} min = {data:,} readings"
        f" + {statuses:,} status messages",
        flush=True,
    )
    began = time.monotonic()
    stream = messages(topics, meters=args.meters, minutes=args.minutes, end_s=end_s, statuses=args.statuses)
    sent = asyncio.run(publish(broker.url, stream))
    wait_stored(r, keys, ids, expected=sent, timeout_s=max(120.0, sent / 500))
    ingest_s = time.monotonic() - began
    print(
        f"ingest: {sent:,} messages stored in {ingest_s:.1f} s ({sent / ingest_s:,.0f}/s, publisher included)"
    )
    flags = r.zcard(keys.late_minutes)
    r.delete(keys.late_minutes)  # see the module docstring: a live fleet's readings raise none
    print(f"late flags raised by the backlog and removed: {flags:,}")
    closed = end_s + GRACE_S + 1  # the last loaded minute is closed grace_s after it ends
    time.sleep(max(0.0, closed - time.time()))
    began = time.monotonic()
    aggregate = service(stack, ["aggregate", "--once"], env)
    assert aggregate.process is not None
    if aggregate.process.wait(timeout=args.timeout) != 0:
        raise SystemExit(f"enerlink aggregate --once failed:\n{aggregate.log_path.read_text()[-3000:]}")
    print(f"aggregate --once: {time.monotonic() - began:.1f} s")
    figures = redis_figures(r, keys, ids) + pg_figures(url, expected=args.meters * args.minutes)
    began = time.monotonic()
    figures.append(archive_figure(url, folder, meters=args.meters, minutes=args.minutes))
    figures.append(raw_archive(schema_url=url, redis_url=redis_url, keys=keys, folder=folder))
    print(f"archive: {time.monotonic() - began:.1f} s")
    print(f"--- floor: {len(NUMERIC_FIELDS)} numbers per data message x 4 B = {FLOOR_BYTES} B per reading")
    for figure in figures:
        show(figure)
    if args.keep:
        print(f"kept: archive folder {folder}")


def _wait_subscribed(r: redis.Redis, url: str, keys: Keys, topics: Topics) -> None:
    """Until the worker's subscription is live: a probe it rejects (no meter's keys are touched),
    then the rejection's keys are removed."""

    async def _probe() -> None:
        async with publisher(url) as pub:
            for _ in range(200):
                await pub.one(topics.data, b"footprint probe")
                if r.exists(keys.rejected_counts):
                    return
                await asyncio.sleep(0.3)
        raise SystemExit("the ingest worker did not subscribe within 60 s")

    asyncio.run(_probe())
    time.sleep(0.5)
    r.delete(keys.rejected, keys.rejected_counts)


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{schema}" cascade')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1_000)
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes of readings, ending now")
    parser.add_argument("--keep", action="store_true", help="keep the schema, Redis and archive folder")
    parser.add_argument("--no-statuses", dest="statuses", action="store_false", help="data messages only")
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the aggregator's run")
    args = parser.parse_args()
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # "There are N pending publish calls.": the window
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds the clean-up like Ctrl-C
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        run(args, stack)
    print(f"bench: {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
