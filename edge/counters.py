"""Durable energy counters and the message sequence number of one meter.

* ``daily`` resets at local midnight (``timezone``), ``total`` never resets, ``settlement`` resets
  only on a ``settle`` command (:meth:`Counters.settle` returns what was settled, for the ack).
* State lives in one SQLite row (WAL, ``synchronous=FULL``), replaced in a single transaction:
  a power cut mid-write leaves the previous state, never a torn one.
* SD-card friendly: :meth:`Counters.maybe_persist` writes at most every ``persist_every_s``
  (default 60 s), plus :meth:`Counters.close` on exit.
* ``seq`` is reserved in blocks (``seq_block``): the stored high-water mark is always ahead of every
  number handed out, so after a crash ``seq`` jumps forward but never repeats. The hardware edge then
  continues from its delivery log instead (:meth:`Counters.resume_after`), so there is no jump.
* After a crash the counters continue from the newest reading in the delivery log when it is newer
  than the saved state (:meth:`Counters.resume_from`): the pipeline saw those values, and a counter
  that went back would look like a reset to it. So the energy a crash can lose is only that of the
  interval it cut short.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

CHANNELS = ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output")
_SCHEMA = "create table if not exists counters (id integer primary key check (id = 1), state text not null)"


@dataclass(frozen=True, slots=True)
class LoggedCounters:
    """The counters a sent data message carries (Wh, per channel) and its time (epoch seconds)."""

    at: float
    daily: dict[str, float]
    total: dict[str, float]
    settlement: dict[str, float]


def logged_counters(payload: bytes) -> LoggedCounters | None:
    """The counters of a logged data message; None if it does not hold them (not a data message)."""
    try:
        message = json.loads(payload)
        at = dt.datetime.fromisoformat(message["datetime"]).timestamp()
        data = message["data"]
        found = LoggedCounters(at=at, daily={}, total={}, settlement={})
        for channel in CHANNELS:
            found.daily[channel] = float(data[channel]["daily_energy"])
            found.total[channel] = float(data[channel]["total_energy"])
            if "settlement_energy" in data[channel]:
                found.settlement[channel] = float(data[channel]["settlement_energy"])
    except (ValueError, KeyError, TypeError):
        return None
    return found


@dataclass(slots=True)
class CounterState:
    daily: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    settlement: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    day: str = ""
    seq: int = 0
    seq_reserved: int = 0
    settled_at: str | None = None
    counted_seq: int = 0  # the newest reading whose energy the counters include

    def to_json(self) -> str:
        return json.dumps(
            {
                "daily": self.daily,
                "total": self.total,
                "settlement": self.settlement,
                "day": self.day,
                "seq": self.seq,
                "seq_reserved": self.seq_reserved,
                "settled_at": self.settled_at,
                "counted_seq": self.counted_seq,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CounterState:
        raw = json.loads(text)
        state = cls()
        for name in ("daily", "total", "settlement"):
            getattr(state, name).update({k: float(v) for k, v in raw.get(name, {}).items()})
        state.day = str(raw.get("day", ""))
        state.seq = int(raw.get("seq", 0))
        state.seq_reserved = int(raw.get("seq_reserved", state.seq))
        state.settled_at = raw.get("settled_at")
        state.counted_seq = int(raw.get("counted_seq", state.seq))
        return state


class Counters:
    def __init__(
        self,
        path: Path | None,
        *,
        timezone: str = "UTC",
        persist_every_s: float = 60.0,
        seq_block: int = 1000,
        clock: Callable[[], float] = time.time,
        channels: Iterable[str] = CHANNELS,
    ) -> None:
        self.path = path
        self.tz = ZoneInfo(timezone)
        self.persist_every_s = persist_every_s
        self.seq_block = seq_block
        self.clock = clock
        self.writes = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("pragma journal_mode=wal")
            self._db.execute("pragma synchronous=full")
            self._db.execute(_SCHEMA)
        self.state = self._load()
        for channel in channels:
            for bucket in (self.state.daily, self.state.total, self.state.settlement):
                bucket.setdefault(channel, 0.0)
        # Resume after the reserved block: numbers handed out before a crash are never reused.
        self.state.seq = self.state.seq_reserved
        self._roll_day(self.clock())
        self._last_persist = float("-inf")
        self.persist()

    def _load(self) -> CounterState:
        if self._db is None:
            return CounterState()
        row = self._db.execute("select state from counters where id = 1").fetchone()
        return CounterState.from_json(row[0]) if row else CounterState()

    def local_day(self, now: float) -> str:
        return dt.datetime.fromtimestamp(now, self.tz).date().isoformat()

    def _roll_day(self, now: float) -> bool:
        today = self.local_day(now)
        if self.state.day == today:
            return False
        if self.state.day:
            for channel in self.state.daily:
                self.state.daily[channel] = 0.0
        self.state.day = today
        return True

    def add(self, energy_wh: Mapping[str, float], *, now: float | None = None) -> None:
        """Add one interval's energy (Wh, >= 0) to every counter; crossing local midnight first
        resets ``daily`` (the interval's energy counts for the new day)."""
        moment = self.clock() if now is None else now
        if self._roll_day(moment):
            self.persist()
        for channel, wh in energy_wh.items():
            if wh <= 0:
                continue
            self.state.daily[channel] = self.state.daily.get(channel, 0.0) + wh
            self.state.total[channel] = self.state.total.get(channel, 0.0) + wh
            self.state.settlement[channel] = self.state.settlement.get(channel, 0.0) + wh

    def check_midnight(self, *, now: float | None = None) -> bool:
        moment = self.clock() if now is None else now
        rolled = self._roll_day(moment)
        if rolled:
            self.persist()
        return rolled

    def next_seq(self) -> int:
        """The next reading's ``seq``; call it after :meth:`add` of that reading's energy."""
        self.state.seq += 1
        self.state.counted_seq = self.state.seq
        if self.state.seq > self.state.seq_reserved:
            self.state.seq_reserved = self.state.seq + self.seq_block - 1
            self.persist()
        return self.state.seq

    def resume_after(self, seq: int) -> None:
        """Continue with ``seq + 1`` (the highest ``seq`` in the edge's delivery log, which every
        published message went through): after a crash no number is skipped or issued twice. The
        reserved block stays ahead, so nothing needs writing here."""
        if seq > 0:
            self.state.seq = seq
            self.state.seq_reserved = max(self.state.seq_reserved, seq)

    def resume_from(self, seq: int, payload: bytes) -> bool:
        """Continue from the counters of reading ``seq`` (the newest in the delivery log) when it is
        newer than the saved state; its daily counters only if it is of today. Returns whether it was."""
        found = logged_counters(payload) if seq > self.state.counted_seq else None
        if found is None:
            return False
        self.state.total.update(found.total)
        self.state.settlement.update(found.settlement)
        if self.local_day(found.at) == self.state.day:
            self.state.daily.update(found.daily)
        self.state.counted_seq = seq
        self.persist()
        return True

    def settle(self, *, now: float | None = None) -> dict[str, float]:
        """Reset ``settlement`` (persisted at once); returns the settled values for the ack."""
        moment = self.clock() if now is None else now
        settled = dict(self.state.settlement)
        for channel in self.state.settlement:
            self.state.settlement[channel] = 0.0
        self.state.settled_at = dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")
        self.persist()
        return settled

    def maybe_persist(self, *, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        if moment - self._last_persist < self.persist_every_s:
            return False
        self.persist(now=moment)
        return True

    def persist(self, *, now: float | None = None) -> None:
        self._last_persist = time.monotonic() if now is None else now
        if self._db is None:
            return
        self._db.execute("begin immediate")
        try:
            self._db.execute(
                "insert into counters (id, state) values (1, ?)"
                " on conflict (id) do update set state = excluded.state",
                (self.state.to_json(),),
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        self.writes += 1

    def close(self) -> None:
        """Persist the exact state (including ``seq``, so a clean restart has no gap) and close."""
        self.state.seq_reserved = self.state.seq
        self.persist()
        if self._db is not None:
            self._db.close()
            self._db = None
