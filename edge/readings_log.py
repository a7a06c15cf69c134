"""The meter's log of published readings: every data message with a ``seq``, kept until the pipeline
confirms it stored it, then for a replay window (:mod:`enerlink.schemas.delivery`).

One SQLite table keyed by ``(meter_id, seq)`` (WAL, ``synchronous=FULL``, like :mod:`enerlink.edge.queue`):
the payload bytes exactly as published, when they were logged, when they were confirmed, and the
edge's own re-send bookkeeping (how many times, when next). A simulated fleet logs a whole tick of
meters in one transaction (:meth:`ReadingsLog.append_many`).

Pruning (:meth:`ReadingsLog.prune`): confirmed rows older than ``keep_s``; then, beyond the row or
byte cap, the oldest confirmed rows; then, still beyond, the oldest unconfirmed rows (a real loss:
counted in ``dropped_unconfirmed`` and logged as an error). The newest row of every meter is never
pruned, so after a crash the next ``seq`` is the log's highest + 1 (:meth:`ReadingsLog.highest`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

from enerlink.config import Env

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

_SCHEMA = (
    """
    create table if not exists readings (
        meter_id text not null,
        seq integer not null,
        topic text not null,
        payload blob not null,
        created_ms integer not null,
        confirmed_ms integer,
        resends integer not null default 0,
        next_resend_ms integer not null,
        primary key (meter_id, seq)
    )
    """,
    "create index if not exists readings_due on readings (next_resend_ms) where confirmed_ms is null",
    "create index if not exists readings_unconfirmed on readings (meter_id, seq) where confirmed_ms is null",
    "create index if not exists readings_created on readings (created_ms, meter_id, seq)",
)
_CHUNK = 500
# A row that is not its meter's newest (the newest is kept so seq can be derived after a crash).
_NOT_NEWEST = "seq < (select max(r.seq) from readings r where r.meter_id = readings.meter_id)"


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The edge's delivery log and re-send settings (shared by the fleet and the hardware edge)."""

    keep_s: float = 7 * 86400.0
    """Confirmed readings are kept this long (replay window)."""
    max_bytes: int = 512 * 1024 * 1024
    max_rows: int = 2_000_000
    resend_after_s: float = 120.0
    """Unconfirmed readings older than this are re-sent on ``Topics.resent`` by the edge itself."""
    resend_max_backoff_s: float = 3600.0
    """Per row, the wait before the next re-send doubles up to this."""
    resend_rate: float = 20.0
    """Re-sent messages per second (on request and by the timer together)."""

    @classmethod
    def from_env(cls, env: Env) -> Self:
        return cls(
            keep_s=env.float("EDGE_LOG_KEEP_S", 7 * 86400.0),
            max_bytes=env.int("EDGE_LOG_MAX_BYTES", 512 * 1024 * 1024),
            max_rows=env.int("EDGE_LOG_MAX_ROWS", 2_000_000),
            resend_after_s=env.float("EDGE_RESEND_AFTER_S", 120.0),
            resend_max_backoff_s=env.float("EDGE_RESEND_MAX_BACKOFF_S", 3600.0),
            resend_rate=env.float("EDGE_RESEND_RATE", 20.0),
        )


@dataclass(slots=True)
class LogStats:
    logged: int = 0
    replaced: int = 0
    """Rows logged again under a (meter, seq) already held (the old payload is replaced)."""
    confirmed: int = 0
    pruned: int = 0
    dropped_unconfirmed: int = 0
    resent_request: int = 0
    resent_timer: int = 0
    not_held: int = 0
    """Readings asked for in resend requests that the log does not hold."""
    invalid_confirmations: dict[str, int] = field(default_factory=dict)
    resend_requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    """Re-send rounds or prunes that failed (logged with the reason)."""
    rows: int = 0
    unconfirmed: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    meter_id: str
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Confirm:
    """One confirmation to apply: ``seq <= through`` and ``ranges`` (optionally only rows logged
    before ``created_before_ms``)."""

    meter_id: str
    through: int
    ranges: tuple[tuple[int, int], ...] = ()
    created_before_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Logged:
    meter_id: str
    seq: int
    payload: bytes
    resends: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReadingsLog:
    """The log in SQLite (``path=None``: in memory, for tests of the rules only)."""

    def __init__(self, path: Path | None, *, settings: LogSettings | None = None) -> None:
        self.path = path
        self.settings = settings or LogSettings()
        self.stats = LogStats()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:", isolation_level=None, check_same_thread=False
        )
        if path is not None:
            self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._highest: dict[str, int] = {
            str(m): int(s)
            for m, s in self._db.execute("select meter_id, max(seq) from readings group by meter_id")
        }
        self._recount()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------

    def highest(self, meter_id: str) -> int:
        """The highest ``seq`` logged for the meter (0: none): the next one to issue is this + 1."""
        return self._highest.get(meter_id, 0)

    def newest(self, meter_id: str) -> Logged | None:
        """The meter's reading with the highest ``seq`` (never pruned), or None."""
        row = self._db.execute(
            "select seq, payload, resends from readings where meter_id = ? order by seq desc limit 1",
            (meter_id,),
        ).fetchone()
        return None if row is None else Logged(meter_id, int(row[0]), bytes(row[1]), int(row[2]))

    def append(self, meter_id: str, seq: int, topic: str, payload: bytes) -> None:
        self.append_many([Entry(meter_id, seq, topic, payload)])

    def append_many(self, entries: Iterable[Entry], *, now_ms: int | None = None) -> None:
        """Log messages before they are handed to the publisher: one transaction, durable on return."""
        rows = list(entries)
        if not rows:
            return
        now = _now_ms() if now_ms is None else now_ms
        due = now + int(self.settings.resend_after_s * 1000)
        self._db.execute("begin immediate")
        try:
            known = 0
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                known += self._count_known(chunk)
                self._db.executemany(
                    "insert into readings (meter_id, seq, topic, payload, created_ms, next_resend_ms)"
                    " values (?, ?, ?, ?, ?, ?) on conflict (meter_id, seq) do update set"
                    " topic = excluded.topic, payload = excluded.payload, created_ms = excluded.created_ms,"
                    " confirmed_ms = null, resends = 0, next_resend_ms = excluded.next_resend_ms",
                    [(e.meter_id, e.seq, e.topic, e.payload, now, due) for e in chunk],
                )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        for e in rows:
            if e.seq > self._highest.get(e.meter_id, 0):
                self._highest[e.meter_id] = e.seq
        self.stats.logged += len(rows)
        if known:
            self.stats.replaced += known
            log.warning("%d readings logged again under a seq the log already held (replaced)", known)
            self._recount()
        else:
            self.stats.rows += len(rows)
            self.stats.unconfirmed += len(rows)
            self.stats.bytes += sum(len(e.payload) for e in rows)
        if self.stats.rows > self.settings.max_rows or self.stats.bytes > self.settings.max_bytes:
            self.prune()

    def _count_known(self, chunk: list[Entry]) -> int:
        found = 0
        for e in chunk:
            if e.seq <= self._highest.get(e.meter_id, 0):
                row = self._db.execute(
                    "select 1 from readings where meter_id = ? and seq = ?", (e.meter_id, e.seq)
                ).fetchone()
                found += row is not None
        return found

    # --- confirmations --------------------------------------------------------------------------

    def confirm(
        self,
        meter_id: str,
        *,
        through: int,
        ranges: Iterable[tuple[int, int]] = (),
        created_before_ms: int | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Mark confirmed every unconfirmed row of the meter with ``seq <= through`` or in ``ranges``
        (and, when given, logged before ``created_before_ms``); returns how many rows changed."""
        item = Confirm(meter_id, through, tuple(ranges), created_before_ms)
        return self.confirm_many([item], now_ms=now_ms)

    def confirm_many(self, items: Iterable[Confirm], *, now_ms: int | None = None) -> int:
        """Apply several confirmations in one transaction (a fleet gets many per second)."""
        now = _now_ms() if now_ms is None else now_ms
        statements: list[tuple[str, tuple[object, ...]]] = []
        for item in items:
            parts = ([(1, item.through)] if item.through >= 1 else []) + list(item.ranges)
            extra = "" if item.created_before_ms is None else " and created_ms <= ?"
            tail: tuple[int, ...] = () if item.created_before_ms is None else (item.created_before_ms,)
            for first, last in parts:
                # the partial index holds only unconfirmed rows: confirmed history is never scanned
                sql = (
                    "update readings indexed by readings_unconfirmed set confirmed_ms = ?"
                    f" where meter_id = ? and seq between ? and ? and confirmed_ms is null{extra}"
                )
                statements.append((sql, (now, item.meter_id, first, last, *tail)))
        if not statements:
            return 0
        changed = 0
        self._db.execute("begin immediate")
        try:
            for sql, params in statements:
                changed += self._db.execute(sql, params).rowcount or 0
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        self.stats.confirmed += changed
        self.stats.unconfirmed -= changed
        return changed

    # --- reading back -------------------------------------------------------------------------

    def held(self, meter_id: str, first: int, last: int, *, batch: int = 200) -> Iterator[Logged]:
        """The logged rows of the meter with ``first <= seq <= last``, ascending, in batches."""
        cursor = first
        while cursor <= last:
            rows = self._db.execute(
                "select seq, payload, resends from readings where meter_id = ? and seq between ? and ?"
                " order by seq limit ?",
                (meter_id, cursor, last, batch),
            ).fetchall()
            if not rows:
                return
            for seq, payload, resends in rows:
                yield Logged(meter_id, int(seq), bytes(payload), int(resends))
            cursor = int(rows[-1][0]) + 1

    def due(self, *, limit: int = 100, now_ms: int | None = None) -> list[Logged]:
        """Unconfirmed rows whose re-send time has come, the most overdue first."""
        now = _now_ms() if now_ms is None else now_ms
        rows = self._db.execute(
            "select meter_id, seq, payload, resends from readings"
            " where confirmed_ms is null and next_resend_ms <= ? order by next_resend_ms limit ?",
            (now, limit),
        ).fetchall()
        return [Logged(str(m), int(s), bytes(p), int(r)) for m, s, p, r in rows]

    def mark_resent(self, rows: Iterable[Logged], *, now_ms: int | None = None) -> None:
        """Push each row's next re-send out: ``resend_after * 2**resends``, capped."""
        now = _now_ms() if now_ms is None else now_ms
        after, cap = self.settings.resend_after_s, self.settings.resend_max_backoff_s
        updates = [
            (now + int(min(cap, after * 2 ** min(r.resends + 1, 30)) * 1000), r.meter_id, r.seq) for r in rows
        ]
        if not updates:
            return
        self._db.execute("begin immediate")
        try:
            self._db.executemany(
                "update readings set resends = resends + 1, next_resend_ms = ?"
                " where meter_id = ? and seq = ?",
                updates,
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise

    def is_confirmed(self, meter_id: str, seq: int) -> bool | None:
        """True/False for a held row, None when the log does not hold it."""
        row = self._db.execute(
            "select confirmed_ms is not null from readings where meter_id = ? and seq = ?", (meter_id, seq)
        ).fetchone()
        return None if row is None else bool(row[0])

    # --- pruning --------------------------------------------------------------------------------

    def prune(self, *, now_ms: int | None = None) -> int:
        """Apply the keep window and the caps (see the module docstring); returns rows removed."""
        started = time.perf_counter()
        now = _now_ms() if now_ms is None else now_ms
        cutoff = now - int(self.settings.keep_s * 1000)
        self._db.execute("begin immediate")
        try:
            gone = self._db.execute(
                f"delete from readings where confirmed_ms is not null and created_ms < ? and {_NOT_NEWEST}"
                " returning length(payload)",
                (cutoff,),
            ).fetchall()
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            self._recount()
            raise
        expired = len(gone)
        self.stats.rows -= expired
        self.stats.bytes -= sum(int(size) for (size,) in gone)
        over_confirmed = self._trim(confirmed=True)
        over_unconfirmed = self._trim(confirmed=False)
        removed = expired + over_confirmed + over_unconfirmed
        self.stats.pruned += removed
        if over_unconfirmed:
            self.stats.dropped_unconfirmed += over_unconfirmed
            log.error(
                "delivery log full (%d rows, %d bytes): dropped %d UNCONFIRMED readings (lost unless the"
                " pipeline stored them); %d dropped so far",
                self.stats.rows,
                self.stats.bytes,
                over_unconfirmed,
                self.stats.dropped_unconfirmed,
            )
        if removed:
            log.info(
                "delivery log pruned %d rows (%d expired, %d over caps) in %.3f s; %d rows, %d bytes left",
                removed,
                expired,
                over_confirmed + over_unconfirmed,
                time.perf_counter() - started,
                self.stats.rows,
                self.stats.bytes,
            )
        return removed

    def _trim(self, *, confirmed: bool) -> int:
        """Delete the oldest rows of one kind until both caps hold; returns how many went."""
        excess_rows = self.stats.rows - self.settings.max_rows
        excess_bytes = self.stats.bytes - self.settings.max_bytes
        if excess_rows <= 0 and excess_bytes <= 0:
            return 0
        kind = "is not null" if confirmed else "is null"
        doomed: list[tuple[str, int]] = []
        freed = 0
        cur = self._db.execute(
            f"select meter_id, seq, length(payload) from readings where confirmed_ms {kind}"
            f" and {_NOT_NEWEST} order by created_ms, meter_id, seq"
        )
        while (excess_rows > 0 or excess_bytes > 0) and (rows := cur.fetchmany(256)):
            for meter_id, seq, size in rows:
                if excess_rows <= 0 and excess_bytes <= 0:
                    break
                doomed.append((str(meter_id), int(seq)))
                excess_rows -= 1
                excess_bytes -= int(size)
                freed += int(size)
        cur.close()
        if not doomed:
            return 0
        self._db.execute("begin immediate")
        try:
            self._db.executemany("delete from readings where meter_id = ? and seq = ?", doomed)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            self._recount()
            raise
        self.stats.rows -= len(doomed)
        self.stats.bytes -= freed
        if not confirmed:
            self.stats.unconfirmed -= len(doomed)
        return len(doomed)

    def _recount(self) -> None:
        row = self._db.execute(
            "select count(*), coalesce(sum(length(payload)), 0), coalesce(sum(confirmed_ms is null), 0)"
            " from readings"
        ).fetchone()
        self.stats.rows, self.stats.bytes, self.stats.unconfirmed = int(row[0]), int(row[1]), int(row[2])


def resume_seqs(readings: ReadingsLog, ids: Sequence[str], seqs: np.ndarray) -> int:
    """Continue every meter's ``seq`` after the highest it logged (the saved state may be older than
    the last tick before a crash); returns how many meters the log moved forward."""
    moved = 0
    for i, meter_id in enumerate(ids):
        highest = readings.highest(meter_id)
        if highest > seqs[i]:
            seqs[i] = highest
            moved += 1
    return moved
