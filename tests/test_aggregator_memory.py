"""enerlink.aggregator.memory: worker processes renewed between jobs, gone with their parent; freed heap
handed back to the OS after each job.

The effect on RSS is measured by bench/soak.py (docs/performance.md), not asserted here: how much
memory a process holds depends on what else the machine and the allocator did, which a test can't
control. What is asserted is the mechanism: which processes compute, and when they are replaced.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from enerlink.aggregator import memory

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_workers_compute_and_are_renewed_between_jobs() -> None:
    async with memory.ComputePool(1, renew_after=2) as pool:
        first = {pool.submit(os.getpid).result(timeout=60) for _ in range(5)}
        assert len(first) == 1 and os.getpid() not in first  # one worker, not this process
        assert pool.pids() == sorted(first)
        assert await pool.job_done() is False
        assert pool.submit(os.getpid).result(timeout=60) in first
        assert await pool.job_done() is True  # the 2nd job: fresh processes
        second = {pool.submit(os.getpid).result(timeout=60) for _ in range(5)}
        assert len(second) == 1 and second.isdisjoint(first)
        assert not any(_alive(pid) for pid in first)  # the old one exited
        assert pool.renewals == 1
        assert await pool.job_done() is False
        assert await pool.job_done() is True
        assert pool.renewals == 2


async def test_a_dead_worker_is_replaced_after_the_job() -> None:
    """A worker killed (OOM killer, kill -9) breaks the pool: that job fails, the next one has
    fresh processes instead of failing for ever."""
    async with memory.ComputePool(1, renew_after=0) as pool:
        pid = pool.submit(os.getpid).result(timeout=60)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            pool.submit(os.getpid).result(timeout=60)
        assert await pool.job_done() is True
        fresh = pool.submit(os.getpid).result(timeout=60)
        assert fresh not in (pid, os.getpid())
        assert pool.renewals == 1
        assert await pool.job_done() is False  # healthy again: renew_after=0 means never


async def test_never_renewed_with_zero() -> None:
    async with memory.ComputePool(2, renew_after=0) as pool:
        assert pool.submit(os.getpid).result(timeout=60) != os.getpid()
        before = pool.pids()
        assert len(before) == 2  # both started at once
        for _ in range(5):
            assert await pool.job_done() is False
        assert {pool.submit(os.getpid).result(timeout=60) for _ in range(6)} <= set(before)
        assert pool.pids() == before
        assert pool.renewals == 0


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_aggregator() -> None:
    """kill -9 of the main process: its worker processes must not stay behind."""
    code = (
        "import os, sys, time\n"
        "from aggregator import memory\n"
        "pool = memory.ComputePool(2)\n"
        "[pool.submit(os.getpid).result(timeout=60) for _ in range(4)]\n"
        "print(*pool.pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers), workers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if _alive(p)]


@pytest.mark.parametrize("when", ["starting", "idle"])
async def test_workers_leave_sigint_and_sigterm_to_the_aggregator(
    when: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C reaches the whole process group, a service manager may signal every process: a worker
    still importing (``starting``) or waiting for a task (``idle``) neither dies nor prints a
    ``KeyboardInterrupt`` traceback; the aggregator shuts it down when it has drained."""
    async with memory.ComputePool(2) as pool:
        workers = pool.pids()
        assert len(workers) == 2
        if when == "idle":
            assert {pool.submit(os.getpid).result(timeout=60) for _ in range(4)} <= set(workers)
        for pid in workers:
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
        assert {pool.submit(os.getpid).result(timeout=60) for _ in range(6)} <= set(workers)
        await asyncio.sleep(0.5)  # a worker the signals would end has gone by now
        assert pool.pids() == workers and all(_alive(p) for p in workers)
        assert await pool.job_done() is False  # not broken: nothing to replace
    assert not [p for p in workers if _alive(p)]  # shut down by the pool
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_heap_is_released_on_glibc() -> None:
    assert memory.release_free_memory() is True
