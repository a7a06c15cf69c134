"""The aggregation passes of bench/capacity.py: one job over a shard in each of N processes started
together, timed from /proc, on all cores or on the cores given (the processes, and with them the
PostgreSQL cluster and the Redis server they use)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psycopg

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parents[1]))

from enerlink.config import Env  # noqa: E402
from tests.support.chaos_stack import child_pids, cluster_cpu_seconds, cpu_seconds  # noqa: E402


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


ALL_CORES = frozenset(os.sched_getaffinity(0))


def pin(pids: list[int], cores: Collection[int]) -> None:
    """Let every thread of ``pids`` run on ``cores`` only (processes they start later inherit it);
    a process or thread that has just ended is left out, any other failure is raised."""
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cores)


def _server_pids(servers: tuple[int | None, int]) -> list[int]:
    postmaster, redis_pid = servers
    return [*([postmaster, *child_pids(postmaster)] if postmaster else []), redis_pid]


def _confine(
    procs: list[subprocess.Popen[str]], servers: tuple[int | None, int], *, cores: Collection[int]
) -> None:
    """The processes with their worker processes, the PostgreSQL cluster with the backends that serve
    them, and the Redis server on ``cores``; checked."""
    if servers[0] is None:
        raise SystemExit("one shard on one core needs a PostgreSQL on this host")
    leaders = [proc.pid for proc in procs] + [servers[0], servers[1]]
    for proc in procs:
        pin([proc.pid, *child_pids(proc.pid)], cores)
    pin(_server_pids(servers), cores)
    if any(os.sched_getaffinity(pid) != set(cores) for pid in leaders):
        raise SystemExit(f"could not confine the pass to cores {sorted(cores)}")


def _line(proc: subprocess.Popen[str], *, timeout_s: float) -> str:
    """The process's next line of output, or an error if it ends or takes longer than ``timeout_s``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise SystemExit(f"an aggregator process ended or hung (exit code {proc.poll()})")
    return line


def aggregate(
    env: dict[str, str],
    *,
    shards: int,
    servers: tuple[int | None, int],
    cores: Collection[int] = ALL_CORES,
    checkpoint: str | None = None,
) -> Pass:
    """``shards`` processes, one a shard, each started and made ready, then released together;
    ``servers``: the postmaster's and the Redis server's pids. With ``cores`` (fewer than all), the
    processes, the PostgreSQL cluster and the Redis server run on those cores for the pass; with
    ``checkpoint`` (a URL of that cluster), a checkpoint first, so that none falls in the pass."""
    confined = set(cores) != ALL_CORES
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in range(shards):
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(SCRIPT), f"{k}/{shards}"],
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
            )
        for proc in procs:
            if _line(proc, timeout_s=120).strip() != "ready":
                raise SystemExit("an aggregator process did not get ready")
        if confined:
            _confine(procs, servers, cores=cores)
        if checkpoint:
            with psycopg.connect(checkpoint, autocommit=True) as conn:
                conn.execute("checkpoint")
        backends = set(child_pids(servers[0])) if servers[0] else set()
        before = cluster_cpu_seconds(servers[0]), cpu_seconds(servers[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        runs = [JobRun(**json.loads(_line(proc, timeout_s=600))) for proc in procs]
        for proc in procs:
            if proc.wait(timeout=60) != 0:
                raise SystemExit("an aggregator process failed")
        deadline = time.monotonic() + 3.0  # their backends' CPU counts once they are reaped
        while servers[0] and set(child_pids(servers[0])) - backends and time.monotonic() < deadline:
            time.sleep(0.05)
        after = cluster_cpu_seconds(servers[0]), cpu_seconds(servers[1])
        return Pass(runs, after[0] - before[0], after[1] - before[1])
    finally:
        if confined:
            pin(_server_pids(servers), ALL_CORES)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


if __name__ == "__main__":
    index, count = (int(n) for n in sys.argv[1].split("/"))
    job_process(index, count)
