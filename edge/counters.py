"""Durable energy counters and the message sequence number of one meter.

* ``daily`` resets at local midnight (``timezone``), ``total`` never resets, ``settlement`` resets
  only on a ``settle`` command (:meth:`Counters.settle` returns what was settled, for the ack).
* State lives in one SQLite row (WAL, ``synchronous=FULL``), replaced in a single transaction:
  a power cut mid-write leaves the previous state, never a torn one.
* SD-card friendly: :meth:`Counters.maybe_persist` writes at most every ``persist_every_s``
  (default 60 s), plus :meth:`Counters.close` on exit. A crash loses at most that much energy.
* ``seq`` is reserved in blocks (``seq_block``): the stored high-water mark is always ahead of every
  number handed out, so after a crash ``seq`` jumps forward but never repeats. The hardware edge then
  continues from its delivery log instead (:meth:`Counters.resume_after`), so there is no jump.
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


@dataclass(slots=True)
class CounterState:
    daily: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    settlement: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    day: str = ""
    seq: int = 0
    seq_reserved: int = 0
    settled_at: str | None = None

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
        self.state.seq += 1
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
