"""aggregator.memory: one compute thread, and freed heap handed back to the OS after each job.

The effect on RSS is measured by bench/soak.py (README, Performance), not asserted here: how much a
trim returns depends on what the process's heap held before, which a test can't control.
"""

from __future__ import annotations

import platform
import threading

import pytest

from aggregator import memory


def test_compute_runs_in_one_named_thread() -> None:
    with memory.compute_thread() as pool:
        names = {pool.submit(lambda: threading.current_thread().name).result() for _ in range(20)}
    assert len(names) == 1 and next(iter(names)).startswith("aggregate-compute"), names


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_heap_is_released_on_glibc() -> None:
    assert memory.release_free_memory() is True
