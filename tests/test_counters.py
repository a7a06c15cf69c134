"""Durable counters: restart, crash, power cut mid-write, local midnight, settlement, seq."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from enerlink.edge.counters import CHANNELS, Counters

JAKARTA = "Asia/Jakarta"  # UTC+7, no DST: local midnight = 17:00 UTC


def _utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def test_counters_survive_a_clean_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.counters.sqlite3"
    counters = Counters(path, timezone=JAKARTA)
    counters.add({"import": 1.5, "solar_output": 0.25})
    seqs = [counters.next_seq() for _ in range(5)]
    counters.close()
    again = Counters(path, timezone=JAKARTA)
    assert again.state.total["import"] == 1.5 and again.state.daily["solar_output"] == 0.25
    assert again.next_seq() == seqs[-1] + 1  # clean restart: no gap
    again.close()


def test_seq_never_repeats_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "m.counters.sqlite3"
    counters = Counters(path, seq_block=100)
    handed_out = [counters.next_seq() for _ in range(42)]
    # no close(): the process died
    again = Counters(path, seq_block=100)
    assert again.next_seq() > max(handed_out)


def test_seq_resumes_after_the_delivery_logs_newest_without_a_jump(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first = Counters(path)
    assert [first.next_seq() for _ in range(3)] == [1, 2, 3]
    first._db.close()  # type: ignore[union-attr]  # a crash: the reserved block is all that was stored
    second = Counters(path)
    second.resume_after(0)  # an empty log changes nothing: the reserved block's jump stands
    assert second.state.seq == second.state.seq_reserved > 3
    second.resume_after(3)
    assert second.next_seq() == 4
    second.close()
    third = Counters(path)
    third.resume_after(2000)  # a log ahead of the counters (their file replaced): never reuse a seq
    assert third.next_seq() == 2001
    third.close()
    assert Counters(path).state.seq == 2001


def test_writes_are_bounded(tmp_path: Path) -> None:
    counters = Counters(tmp_path / "c.sqlite3", persist_every_s=60.0)
    writes = counters.writes
    for k in range(600):  # ten minutes of 1 s intervals
        counters.add({"import": 0.001})
        counters.maybe_persist(now=1_000_000.0 + k)
    assert counters.writes - writes <= 11
    counters.close()


def test_daily_resets_at_local_midnight_total_does_not(tmp_path: Path) -> None:
    now = [_utc(2026, 3, 1, 16, 59, 0)]  # 23:59 in Jakarta
    counters = Counters(tmp_path / "c.sqlite3", timezone=JAKARTA, clock=lambda: now[0])
    counters.add({"import": 2.0})
    assert counters.state.day == "2026-03-01" and counters.state.daily["import"] == 2.0
    now[0] = _utc(2026, 3, 1, 17, 0, 5)  # 00:00:05 next day, local
    counters.add({"import": 0.5})
    assert counters.state.day == "2026-03-02"
    assert counters.state.daily["import"] == 0.5
    assert counters.state.total["import"] == 2.5 and counters.state.settlement["import"] == 2.5
    counters.close()
    # Restarting on a later day resets daily at start-up too.
    now[0] = _utc(2026, 3, 3, 1, 0, 0)
    later = Counters(tmp_path / "c.sqlite3", timezone=JAKARTA, clock=lambda: now[0])
    assert later.state.daily["import"] == 0.0 and later.state.total["import"] == 2.5


def test_settle_resets_only_settlement_and_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    counters = Counters(path)
    counters.add({"export": 3.0, "import": 1.0})
    settled = counters.settle()
    assert settled["export"] == 3.0 and settled["import"] == 1.0
    assert counters.state.settlement["export"] == 0.0 and counters.state.total["export"] == 3.0
    # persisted at once: a crash right after the ack keeps the reset
    again = Counters(path)
    assert again.state.settlement["export"] == 0.0 and again.state.settled_at is not None


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from enerlink.edge.counters import Counters, CHANNELS
    counters = Counters(Path(sys.argv[1]), persist_every_s=0.0)
    k = 0
    print("ready", flush=True)
    while True:
        k += 1
        for channel in CHANNELS:
            counters.state.total[channel] = float(k)
            counters.state.daily[channel] = float(k)
        counters.persist()
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_power_cut_mid_write_leaves_a_consistent_state(tmp_path: Path, delay: float) -> None:
    """kill -9 at an arbitrary moment of a tight write loop: the file opens, passes SQLite's
    integrity check, and every counter belongs to the same write (never a torn mix)."""
    path = tmp_path / "c.sqlite3"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=root, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with sqlite3.connect(path) as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    counters = Counters(path)
    values = {counters.state.total[c] for c in CHANNELS} | {counters.state.daily[c] for c in CHANNELS}
    assert len(values) == 1 and values.pop() >= 1.0
