"""Keeping the aggregator's resident memory down across hours of minutes.

Each job allocates and frees a few hundred MB of short-lived objects (decoded snapshots, arrays,
rows). Python frees them, but glibc's malloc keeps the freed heap, fragmented across one arena per
thread that ever computed. Two measures (measured in-process over 20-40 jobs of 1,000 meters x 60
snapshots: RSS 300-440 MB without them, 113-121 MB with them):

* computing in one dedicated thread (:func:`compute_thread`) instead of asyncio's default pool, so
  one arena is reused every minute;
* :func:`release_free_memory` after every job: ``malloc_trim(0)`` hands freed heap back to the OS
  (a few ms; a no-op where the C library has no ``malloc_trim``).

They lower the level, not the slope: in the one-hour soak the aggregator still grew about 1.1 MB per
minute (304 -> 356 MB before, 131 -> 192 MB after), with Python's live objects flat. The cause is
not found yet (README, Performance).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor
from functools import cache


def compute_thread() -> ThreadPoolExecutor:
    """The aggregator's one compute thread (use as a context manager)."""
    return ThreadPoolExecutor(1, thread_name_prefix="aggregate-compute")


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
