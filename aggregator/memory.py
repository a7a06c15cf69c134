"""Keeping the aggregator's resident memory flat across hours of minutes.

A job decodes every snapshot of the minute: for 1,000 meters at 1 s that is 60,000 messages and
several million short-lived Python objects (floats, tuples, structs), 150 MB at the peak. They are
freed, but CPython's small-object allocator only returns a 1 MiB arena to the OS once every object
in it is gone, and the few objects that outlive a job (connection state, caches, free lists) end
up scattered over arenas filled at the peak. So the process grows by 1-2 MB a job, with its live
objects flat (measured in-process: pymalloc arenas 52 -> 67 over 7 jobs; with ``PYTHONMALLOC=malloc``
the same jobs stay flat, but take 35 % longer).

Hence:

* the decoding and statistics always run in worker processes (:class:`ComputePool`), never in the
  main process, which only writes the rows (its own churn is a few hundred KB per job);
* those processes are replaced by fresh ones every ``renew_after`` jobs, between jobs, so whatever
  they fragmented is handed back whole. A renewal took 0.35 s in the hour-long soak (the fresh
  process's imports), spent while the aggregator is idle between minutes;
* :func:`release_free_memory` after every job: ``malloc_trim(0)`` hands the C heap's freed pages back
  (a few ms; a no-op where the C library has no ``malloc_trim``).

Python 3.11's own ``max_tasks_per_child`` is not used: it can deadlock when a worker retires with
tasks queued (cpython gh-115634, fixed only in later releases).

Worker processes die with the aggregator: a kill -9 of the main process would otherwise leave them
blocked on their task queue forever (each holds both ends of it), so each asks Linux for SIGKILL
when its parent goes (``PR_SET_PDEATHSIG``).

Worker processes ignore SIGINT and SIGTERM: Ctrl-C reaches the whole process group, and a service
manager may signal every process of the service, but the aggregator owns the shutdown (it drains,
then shuts the pool down). They are started with both signals blocked, the way ``multiprocessing``
starts its resource tracker, so one arriving while a worker still imports is held, then discarded by
the initializer's ``SIG_IGN``: no ``KeyboardInterrupt`` traceback from a worker, whenever it comes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from functools import cache
from typing import ParamSpec, Self, TypeVar

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")
_PR_SET_PDEATHSIG = 1
_PARENT_OWNS = (signal.SIGINT, signal.SIGTERM)  # the signals worker processes leave to the parent
STOP_GRACE_S = 10.0  # how long a pool's shutdown may wait for its workers before they are killed


class ComputePool(Executor):
    """Worker processes for the aggregator's read-and-compute parts, renewed every ``renew_after``
    jobs (0: never). Use as a context manager; :meth:`job_done` after each job."""

    def __init__(self, workers: int, *, renew_after: int = 0) -> None:
        self.workers = workers
        self.renew_after = renew_after
        self.renewals = 0
        self._jobs = 0
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )
        # Spawned with SIGINT/SIGTERM blocked (the mask is inherited); the pool's threads started
        # here keep them blocked too, which is harmless: the event loop's thread still takes them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_OWNS)
        try:
            for _ in range(self.workers):  # spawn them all now (one per task while none is idle)
                pool.submit(os.getpid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pool

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return self._pool.submit(fn, *args, **kwargs)

    def pids(self) -> list[int]:
        """The worker processes' ids (for tests and RSS reports)."""
        # private: ProcessPoolExecutor's worker processes (also read by _stop)
        return sorted(p.pid for p in list(self._pool._processes.values()) if p.pid is not None)

    async def job_done(self) -> bool:
        """Count a finished job; at every ``renew_after``-th, or when a worker process died (the
        pool is then broken: every later task would fail), replace the processes. No job is
        running. Returns whether they were replaced."""
        self._jobs += 1
        broken = bool(getattr(self._pool, "_broken", False))
        if not broken and (not self.renew_after or self._jobs % self.renew_after):
            return False
        began = time.monotonic()
        old, self._pool = self._pool, self._start()
        await _stop(old)
        self.renewals += 1
        if broken:
            log.warning("aggregate: a worker process died; %d fresh ones started", self.workers)
        else:
            log.info(
                "aggregate: worker processes renewed after %d jobs (workers %d, %.2f s)",
                self.renew_after,
                self.workers,
                time.monotonic() - began,
            )
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await _stop(self._pool)


async def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut a pool down; workers that have not exited after :data:`STOP_GRACE_S` are killed (they hold
    nothing: a part is read from Redis and computed again). A shutdown that catches a worker still
    starting can otherwise wait on it for ever."""
    stopping = asyncio.create_task(
        asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True), name="aggregate-pool-stop"
    )
    try:
        await asyncio.wait_for(asyncio.shield(stopping), STOP_GRACE_S)
    except TimeoutError:
        # private: ProcessPoolExecutor's worker processes (also read by ComputePool.pids)
        stuck = [p for p in list(pool._processes.values()) if p.is_alive()]
        log.warning(
            "aggregate: %d worker processes did not stop within %.0f s: killed", len(stuck), STOP_GRACE_S
        )
        for process in stuck:
            process.kill()
        await stopping


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent process goes (Linux)."""
    if sys.platform != "linux":
        return
    name = ctypes.util.find_library("c")
    if name is not None:
        ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent went before the request was in place
        os._exit(1)


def _leave_signals_to_parent() -> None:
    """Ignore SIGINT/SIGTERM (the parent drains and shuts the pool down), then unblock them."""
    for sig in _PARENT_OWNS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_OWNS)


def _init_worker(parent: int) -> None:
    """Worker initializer: leave SIGINT/SIGTERM to the parent; die with the parent; import what
    every task runs (numpy, msgspec, redis...) now, while the pool starts between jobs, not in the
    first job after a renewal."""
    _leave_signals_to_parent()
    _die_with_parent(parent)
    import enerlink.aggregator.task  # noqa: F401 (with it compute, reader, numpy, redis)


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


def release_free_memory() -> bool:
    """Return the C heap's free memory to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
