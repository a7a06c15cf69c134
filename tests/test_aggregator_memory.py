"""aggregator.memory: freed heap goes back to the OS after a job (the soak's creeping RSS)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aggregator import memory


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim, /proc")
def test_freed_heap_of_the_compute_thread_is_returned_to_the_os() -> None:
    def churn() -> int:
        # 2 KB blocks come from malloc (not pymalloc), in the compute thread's own arena; keep every
        # 50th alive, as a job's results outlive its temporaries, so the arena cannot shrink by itself
        blocks = [bytes(2048) for _ in range(100_000)]
        kept = blocks[::50]
        del blocks
        return len(kept)

    with memory.compute_thread() as thread:
        baseline = _rss_kb()
        assert thread.submit(churn).result() == 2_000
        before = _rss_kb()
        assert memory.release_free_memory() is True
        after = _rss_kb()
    # of the ~200 MB churned, what free() left resident (> 40 MB) mostly leaves once trimmed
    left = before - baseline
    assert left > 40_000, (baseline, before, after)
    assert after - baseline < left / 2, (baseline, before, after)
