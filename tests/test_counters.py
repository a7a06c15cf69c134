"""Durable counters: restart, crash, power cut mid-write, local midnight, settlement, seq."""

from __future__ import annotations

import datetime as dt
import json
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


def _sent(counters: Counters, seq: int, at: float) -> bytes:
    """A data message as the meter sends it: its counters at ``at`` (the parts the log is read for)."""
    data = {
        ch: {
            "daily_energy": counters.state.daily[ch],
            "total_energy": counters.state.total[ch],
            **({"settlement_energy": counters.state.settlement[ch]} if ch in ("export", "import") else {}),
        }
        for ch in CHANNELS
    }
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"meterId": "M", "datetime": stamp, "seq": seq, "data": data}).encode()


def test_after_a_crash_counters_continue_from_the_newest_logged_reading(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    now = _utc(2026, 1, 5, 3, 0)  # 10:00 in Jakarta
    counters = Counters(path, timezone=JAKARTA, persist_every_s=3600, clock=lambda: now)
    counters.add({"import": 1.0}, now=now)
    counters.next_seq()  # reserves a block: persisted with this reading's counters
    for _ in range(5):  # five more readings, sent and logged, not persisted
        counters.add({"import": 0.5, "export": 0.25}, now=now)
        seq = counters.next_seq()
    newest = _sent(counters, seq, now)
    # kill -9: the saved state is the first reading's
    again = Counters(path, timezone=JAKARTA, clock=lambda: now)
    assert again.state.total["import"] == 1.0
    assert again.resume_from(seq, newest)
    assert again.state.total["import"] == 3.5 and again.state.daily["import"] == 3.5
    assert again.state.settlement["export"] == 1.25
    assert not Counters(path, timezone=JAKARTA, clock=lambda: now).resume_from(seq, newest)  # persisted

    # settled after the newest reading (persisted at once): that reading is older than the state
    again.settle(now=now)
    third = Counters(path, timezone=JAKARTA, clock=lambda: now)
    assert not third.resume_from(seq, newest) and third.state.settlement["import"] == 0.0

    # a reading logged yesterday (local time): its daily counters are not today's
    tomorrow = now + 86_400
    fourth = Counters(path, timezone=JAKARTA, clock=lambda: tomorrow)
    assert fourth.resume_from(seq + 1, _sent(again, seq + 1, now))
    assert fourth.state.daily["import"] == 0.0 and fourth.state.total["import"] == 3.5


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
