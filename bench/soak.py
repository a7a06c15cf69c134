"""Soak: the whole pipeline at a steady 1,000 messages/s for an hour, on private services.

    .venv/bin/python bench/soak.py                                  # 1 h, 1,000 meters at 1 s
    .venv/bin/python bench/soak.py --seconds 300 --retention 120    # a 5-minute validation run
    .venv/bin/python bench/soak.py --out /work/notes/soak-result.txt

Not part of the test suite. It starts the stack of the chaos test without faults
(:class:`tests.support.chaos_stack.Stack`: Mosquitto from the project configuration, Redis with an
fsync-always append-only file, a private PostgreSQL, 2 ingest workers, the aggregator and one
simulated fleet process with its publish log), samples every ``--sample-every`` seconds:

* RSS of every process (fleet, each ingest worker, aggregator and its worker processes, Redis,
  Mosquitto, PostgreSQL with its backends);
* queues: Redis ``used_memory`` and keys (and where Redis' RSS beyond it sits: allocator
  fragmentation, the allocator's dirty pages, outside the allocator), the broker's stored
  messages (``$SYS``), the edge's store-and-forward queue depth and QoS 2 in-flight count (its
  Prometheus endpoint);
* rates: messages acknowledged to the fleet and stored by the ingest per second;
* aggregator lag: now minus the end of the last aggregated minute (its watermark);

then lets the pipeline drain, checks every meter-minute against the publish log like the chaos
test, and prints a report: start (after warm-up) and end values, their change, and the verdict.

Redis holds ``--retention`` seconds of data (default 600): with the production default of 7200 s at
1,000 messages/s it would hold 7.2 M messages (several GB), a sizing matter, not a leak; the
retention window is the warm-up, after which memory must be flat.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.chaos_check import (  # noqa: E402
    _watermark,
    read_publish_log,
    summary,
    verify,
    wait_drained,
)
from tests.support.chaos_stack import Stack, StackConfig, child_pids, rss_kb  # noqa: E402
from tests.support.services import free_port  # noqa: E402

_BROKER_STORED = "$SYS/broker/store/messages/count"
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN|[+-]Inf)$")


def _scrape(port: int) -> dict[str, float]:
    """Sum of each metric family's samples on a Prometheus endpoint (labels folded)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match:
            out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(3))
    return out


def _broker_stored(port: int) -> int | None:
    try:
        result = subprocess.run(
            [
                "mosquitto_sub",
                "-p",
                str(port),
                "-t",
                "$SYS/broker/store/messages/count",
                "-C",
                "1",
                "-W",
                "15",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return int(result.stdout.strip()) if result.stdout.strip() else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def _pg_rss_kb(data_dir: Path) -> int:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return rss_kb(postmaster) + _children_rss_kb(postmaster)


def _children_rss_kb(parent: int) -> int:
    return sum(map(rss_kb, child_pids(parent)))


@dataclass
class Sample:
    t: float
    rss_mb: dict[str, float]
    redis_mb: float
    redis_keys: int
    # where Redis' RSS beyond used_memory sits (INFO memory, MB): allocator fragmentation, dirty
    # pages the allocator holds, and outside the allocator (Lua heap, fork copy-on-write...)
    redis_frag_mb: float
    redis_dirty_mb: float
    redis_other_mb: float
    broker_stored: int | None
    edge_queue: float
    edge_inflight: float
    edge_published: float
    ingest_stored: float
    agg_lag_s: float | None
    pub_rate: float = 0.0
    store_rate: float = 0.0


@dataclass
class Soak:
    stack: Stack
    edge_port: int
    ingest_ports: tuple[int, ...]
    samples: list[Sample] = field(default_factory=list)

    def sample(self, t: float) -> Sample:
        procs = {name: proc.pid for name, proc in self.stack.processes().items()}
        procs["mosquitto"] = self.stack.broker_pid()
        rss = {name: rss_kb(pid) / 1024 if pid else 0.0 for name, pid in procs.items()}
        rss["postgres"] = _pg_rss_kb(self.stack.pg.data_dir) / 1024
        aggregator = procs.get("aggregator")  # its worker processes, renewed every few jobs
        rss["agg-workers"] = _children_rss_kb(aggregator) / 1024 if aggregator else 0.0
        client = redis.Redis.from_url(self.stack.redis.url)
        try:
            info = client.info("memory")
            redis_mb, keys = float(info["used_memory"]) / 2**20, int(client.dbsize())
            frag, dirty, other = (
                float(info.get(name, "nan")) / 2**20
                for name in ("allocator_frag_bytes", "allocator_rss_bytes", "rss_overhead_bytes")
            )
        except redis.RedisError:
            redis_mb, keys = float("nan"), -1
            frag = dirty = other = float("nan")
        finally:
            client.close()
        edge = _scrape(self.edge_port)
        ingest = [_scrape(port) for port in self.ingest_ports]
        lag = None
        try:
            with psycopg.connect(self.stack.pg.url, connect_timeout=5) as conn:
                watermark = _watermark(conn)
            if watermark is not None:
                lag = datetime.now(UTC).timestamp() - (watermark.timestamp() + 60)
        except psycopg.Error:
            pass
        sample = Sample(
            t=t,
            rss_mb=rss,
            redis_mb=redis_mb,
            redis_keys=keys,
            redis_frag_mb=frag,
            redis_dirty_mb=dirty,
            redis_other_mb=other,
            broker_stored=_broker_stored(self.stack.broker.port),
            edge_queue=edge.get("enerlink_edge_queue_depth", float("nan")),
            edge_inflight=edge.get("enerlink_edge_inflight", float("nan")),
            edge_published=edge.get("enerlink_edge_published_total", float("nan")),
            ingest_stored=sum(m.get("enerlink_ingest_stored_total", 0.0) for m in ingest),
            agg_lag_s=lag,
        )
        if self.samples:
            prev = self.samples[-1]
            dt = max(1e-6, sample.t - prev.t)
            sample.pub_rate = (sample.edge_published - prev.edge_published) / dt
            sample.store_rate = (sample.ingest_stored - prev.ingest_stored) / dt
        self.samples.append(sample)
        return sample


def _row(s: Sample, names: list[str]) -> str:
    rss = " ".join(f"{s.rss_mb.get(n, 0.0):7.1f}" for n in names)
    lag = f"{s.agg_lag_s:6.0f}" if s.agg_lag_s is not None else "     -"
    stored = str(s.broker_stored) if s.broker_stored is not None else "-"
    return (
        f"{s.t:6.0f} {s.pub_rate:7.0f} {s.store_rate:7.0f} {lag} {s.edge_queue:6.0f} {s.edge_inflight:4.0f}"
        f" {stored:>6} {s.redis_mb:8.1f} {s.redis_keys:6d}"
        f" {s.redis_frag_mb:5.1f} {s.redis_dirty_mb:5.1f} {s.redis_other_mb:5.1f} {rss}"
    )


def _header(names: list[str]) -> str:
    return (
        "     t  pub/s  store/s  lag_s  edgeQ infl brokerQ redis_MB  keys  frag dirty other "
        + " ".join(f"{n[:7]:>7}" for n in names)
        + "   (RSS MB)"
    )


def _last_third(samples: list[Sample], name: str) -> str:
    """Change over the last third of the run (after warm-up): whether a growth has levelled off.
    The median of the first and of the last three samples, so one sample catching a transient
    (PostgreSQL with the aggregator's connections open, say) does not decide it."""
    tail = samples[len(samples) - max(2, len(samples) // 3) :]
    if len(tail) < 2:
        return "-"
    a = statistics.median(s.rss_mb.get(name, 0.0) for s in tail[:3])
    b = statistics.median(s.rss_mb.get(name, 0.0) for s in tail[-3:])
    return f"{a:.1f} -> {b:.1f} MB (t={tail[0].t:.0f}-{tail[-1].t:.0f} s, medians of 3)"


def report(soak: Soak, *, args: argparse.Namespace, verdict_text: str, wall_s: float) -> str:
    samples = soak.samples
    names = sorted(samples[-1].rss_mb) if samples else []
    warm = [s for s in samples if s.t >= args.retention + 2 * args.sample_every] or samples
    steady = [s for s in samples if s.t >= 120 and s.t <= args.seconds] or samples
    lines = [
        f"EnerLink soak {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.meters} meters every"
        f" {args.interval} s (target {args.meters / args.interval:.0f} msg/s) for {args.seconds} s,"
        f" retention {args.retention} s, 2 ingest workers, 1 aggregator; wall {wall_s:.0f} s",
        "",
        _header(names),
        *(_row(s, names) for s in samples),
        "",
    ]
    if warm:
        first, last = warm[0], warm[-1]
        lines.append(f"after warm-up (t={first.t:.0f} s) -> end of publishing (t={last.t:.0f} s):")
        for name in names:
            a, b = first.rss_mb.get(name, 0.0), last.rss_mb.get(name, 0.0)
            change = 100 * (b - a) / a if a else float("nan")
            seen = [s.rss_mb.get(name, 0.0) for s in warm]
            lines.append(
                f"  RSS {name:<11} {a:8.1f} MB -> {b:8.1f} MB ({change:+.1f} %);"
                f" range {min(seen):.1f}-{max(seen):.1f} MB; last third {_last_third(warm, name)}"
            )
        lines.append(f"  Redis used_memory {first.redis_mb:.1f} MB -> {last.redis_mb:.1f} MB")
        lines.append(
            "  Redis RSS beyond used_memory: allocator fragmentation"
            f" {first.redis_frag_mb:.1f} -> {last.redis_frag_mb:.1f} MB, allocator dirty pages"
            f" {first.redis_dirty_mb:.1f} -> {last.redis_dirty_mb:.1f} MB, outside the allocator"
            f" {first.redis_other_mb:.1f} -> {last.redis_other_mb:.1f} MB; active defragmentation"
            f" {'on' if soak.stack.redis.active_defrag else 'not available in this Redis build'}"
        )
        lines.append(f"  broker stored messages {first.broker_stored} -> {last.broker_stored}")
        lines.append(f"  edge queue {first.edge_queue:.0f} -> {last.edge_queue:.0f}")
    if steady:
        rates = [s.pub_rate for s in steady if s.pub_rate > 0]
        stores = [s.store_rate for s in steady if s.store_rate > 0]
        lags = [s.agg_lag_s for s in steady if s.agg_lag_s is not None]
        if rates:
            lines.append(
                f"  acknowledged to the fleet: mean {sum(rates) / len(rates):.0f}/s, min {min(rates):.0f}/s"
            )
        if stores:
            lines.append(
                f"  stored by the ingest: mean {sum(stores) / len(stores):.0f}/s, min {min(stores):.0f}/s"
            )
        if lags:
            lines.append(f"  aggregator lag: max {max(lags):.0f} s, last {lags[-1]:.0f} s")
    lines.append(verdict_text)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--retention", type=int, default=600)
    parser.add_argument("--sample-every", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the folder with every log")
    args = parser.parse_args()
    edge_port, ingest_ports = free_port(), (free_port(), free_port())
    config = StackConfig(
        meters=args.meters,
        interval_s=args.interval,
        steps=int(args.seconds / args.interval),
        workers=2,
        grace_s=5.0,
        retention_s=args.retention,
        edge_metrics_port=edge_port,
        ingest_metrics_ports=ingest_ports,
    )
    stack = Stack(config)
    print(f"soak folder {stack.root}", flush=True)
    soak = Soak(stack, edge_port, ingest_ports)
    started = time.monotonic()
    verdict_text = "verdict: not reached"
    try:
        stack.start_services()
        stack.start_pipeline()
        stack.start_fleet()
        t0 = time.monotonic()
        names: list[str] = []
        next_at = t0
        while stack.fleet.alive():
            if time.monotonic() >= next_at:
                sample = soak.sample(time.monotonic() - t0)
                if not names:
                    names = sorted(sample.rss_mb)
                    print(_header(names), flush=True)
                print(_row(sample, names), flush=True)
                next_at += args.sample_every
            time.sleep(0.5)
        code = stack.fleet.process.returncode if stack.fleet.process else None
        published = read_publish_log(stack.publish_log)
        drain = wait_drained(stack, published, timeout_s=900)
        verdict = verify(stack, published)
        verdict_text = summary(verdict, Counter(), meters=args.meters, seconds=args.seconds, seed=0)
        passed = verdict.lost == 0 and verdict.duplicated == 0 and drain.complete and code == 0
        verdict_text += (
            f"\nfleet exit code {code}; drain {drain.seconds:.0f} s after the fleet stopped,"
            f" complete {drain.complete}"
            "\n(stored in Redis is below published once the retention trimmed old data: expected)"
            f"\nverdict: {'PASS' if passed else 'FAIL'}"
            f" (lost {verdict.lost}, duplicated {verdict.duplicated})"
        )
    finally:
        text = report(soak, args=args, verdict_text=verdict_text, wall_s=time.monotonic() - started)
        print(text, flush=True)
        if args.out:
            args.out.write_text(text + "\n", encoding="utf-8")
        stack.cleanup(keep=args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
