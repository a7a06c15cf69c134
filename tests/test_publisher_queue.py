"""The store-and-forward queue itself: order, original payloads, caps (count, bytes, age), restart."""

from __future__ import annotations

import time
from pathlib import Path

from enerlink.edge.queue import QueueLimits, SpoolQueue


def test_fifo_with_original_payloads_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    queue = SpoolQueue(path)
    payloads = [f'{{"datetime": "2026-01-01T00:00:{n:02d}Z", "n": {n}}}'.encode() for n in range(30)]
    for n, payload in enumerate(payloads):
        queue.append("t/data" if n % 2 else "t/status", payload, retain=n == 3)
    queue.close()
    again = SpoolQueue(path)
    rows = again.peek(limit=100)
    assert [r.payload for r in rows] == payloads  # byte-identical, in order
    assert [r.topic for r in rows[:2]] == ["t/status", "t/data"] and rows[3].retain
    assert again.peek(after_id=rows[9].id, limit=5)[0].payload == payloads[10]
    again.delete([r.id for r in rows[:10]])
    assert len(again) == 20 and again.size_bytes == sum(map(len, payloads[10:]))
    again.close()


def test_count_cap_drops_the_oldest(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "q.sqlite3", limits=QueueLimits(max_messages=5))
    for n in range(12):
        queue.append("t", str(n).encode())
    assert [r.payload for r in queue.peek()] == [b"7", b"8", b"9", b"10", b"11"]
    assert queue.dropped == 7


def test_bytes_cap_drops_exactly_enough_of_the_oldest(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "q.sqlite3", limits=QueueLimits(max_bytes=1000))
    for n in range(10):
        queue.append("t", bytes([n]) * 300)
    assert queue.size_bytes <= 1000
    assert [r.payload[0] for r in queue.peek()] == [7, 8, 9]
    assert queue.dropped == 7
    queue.append("t", b"x" * 2000)  # larger than the whole cap: refused, counted
    assert len(queue) == 3 and queue.dropped == 8


def test_age_cap(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "q.sqlite3", limits=QueueLimits(max_age_s=3600))
    old = int((time.time() - 7200) * 1000)
    queue.append("t", b"old-1", created_ms=old)
    queue.append("t", b"old-2", created_ms=old + 1)
    queue.append("t", b"fresh")
    assert [r.payload for r in queue.peek()] == [b"fresh"]
    assert queue.dropped == 2 and len(queue) == 1


def test_memory_queue_without_path() -> None:
    queue = SpoolQueue(None)
    queue.append("t", b"a")
    assert len(queue) == 1 and queue.peek()[0].payload == b"a"
    queue.close()
