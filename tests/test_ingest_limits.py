"""The per-meter limit's rule on its own (readings per second of the meter's clock); the worker on the
real broker is tested in test_ingest_flood.py."""

from __future__ import annotations

from enerlink.ingest.limits import MeterLimiter

SECOND = 1000


def test_same_second_limited_other_seconds_and_other_meters_not() -> None:
    limiter = MeterLimiter(rate=3)
    at = 1_760_000_000_000
    assert [limiter.admit("A", at + i) for i in range(5)] == [True, True, True, False, False]
    assert limiter.admit("B", at)  # another meter has its own count
    assert limiter.admit("A", at + SECOND)  # the next second of A's clock starts afresh


def test_backlog_with_spread_datetimes_never_limited() -> None:
    limiter = MeterLimiter(rate=1)
    at = 1_760_000_000_000
    assert all(limiter.admit("A", at + 5 * SECOND * i) for i in range(10_000))


def test_zero_is_off_and_memory_is_bounded() -> None:
    off = MeterLimiter(rate=0)
    assert all(off.admit("A", 0) for _ in range(1000))
    bounded = MeterLimiter(rate=5, max_tracked=100)
    for m in range(1000):
        bounded.admit(f"M{m}", 0)
    assert len(bounded._last) <= 100
