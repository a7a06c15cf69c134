"""Durable store-and-forward queue for the edge: SQLite in WAL mode, oldest first.

Messages land here only while the broker cannot take them, so the SD card sees writes during an
outage, not in normal operation. Each row keeps the original topic, payload (bytes, unchanged)
and retain flag, so a replayed message is the message that would have been sent live, with its
original ``datetime``. Caps: message count, total payload bytes and age; when a cap is hit the
oldest rows go first and are counted in :attr:`SpoolQueue.dropped`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
create table if not exists outbox (
    id integer primary key autoincrement,
    topic text not null,
    payload blob not null,
    retain integer not null default 0,
    created_ms integer not null
)
"""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Caps on the durable queue (defaults: 7 days, 500k messages, 256 MiB of payload)."""

    max_messages: int = 500_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    topic: str
    payload: bytes
    retain: bool
    created_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class SpoolQueue:
    """A FIFO of outgoing MQTT messages in SQLite (``path=None``: in memory, lost on exit).

    Writes are committed with ``synchronous=FULL`` in WAL mode: a power cut after :meth:`append`
    returns cannot lose the row, and a cut mid-write leaves the previous state intact.
    """

    def __init__(self, path: Path | None, *, limits: QueueLimits | None = None) -> None:
        self.path = path
        self.limits = limits or QueueLimits()
        self.dropped = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", isolation_level=None)
        if path is not None:
            self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute(_SCHEMA)
        row = self._db.execute("select count(*), coalesce(sum(length(payload)), 0) from outbox").fetchone()
        self._count = int(row[0])
        self._bytes = int(row[1])

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(
        self, topic: str, payload: bytes, *, retain: bool = False, created_ms: int | None = None
    ) -> int:
        """Store one message at the tail; returns its id. Enforces the caps (drops the oldest)."""
        if len(payload) > self.limits.max_bytes:
            self.dropped += 1
            return -1
        self._db.execute("begin immediate")
        try:
            cur = self._db.execute(
                "insert into outbox (topic, payload, retain, created_ms) values (?, ?, ?, ?)",
                (topic, payload, int(retain), created_ms if created_ms is not None else _now_ms()),
            )
            self._count += 1
            self._bytes += len(payload)
            self._enforce_caps_locked()
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            self._recount()
            raise
        return int(cur.lastrowid or 0)

    def extend(self, messages: list[tuple[str, bytes, bool]]) -> None:
        """Append several messages in one transaction (used when spilling in-flight messages)."""
        if not messages:
            return
        now = _now_ms()
        self._db.execute("begin immediate")
        try:
            self._db.executemany(
                "insert into outbox (topic, payload, retain, created_ms) values (?, ?, ?, ?)",
                [(topic, payload, int(retain), now) for topic, payload, retain in messages],
            )
            self._count += len(messages)
            self._bytes += sum(len(payload) for _, payload, _ in messages)
            self._enforce_caps_locked()
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            self._recount()
            raise

    def peek(self, *, after_id: int = 0, limit: int = 100) -> list[QueuedMessage]:
        """The oldest ``limit`` messages with ``id > after_id`` (expired ones are purged first)."""
        self.purge_expired()
        rows = self._db.execute(
            "select id, topic, payload, retain, created_ms from outbox where id > ? order by id limit ?",
            (after_id, limit),
        ).fetchall()
        return [QueuedMessage(int(r[0]), str(r[1]), bytes(r[2]), bool(r[3]), int(r[4])) for r in rows]

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        self._db.execute("begin immediate")
        try:
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"delete from outbox where id in ({marks})", chunk)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        finally:
            self._recount()

    def purge_expired(self) -> int:
        cutoff = _now_ms() - int(self.limits.max_age_s * 1000)
        cur = self._db.execute("delete from outbox where created_ms < ?", (cutoff,))
        removed = cur.rowcount or 0
        if removed:
            self.dropped += removed
            self._recount()
        return removed

    def _enforce_caps_locked(self) -> None:
        cutoff = _now_ms() - int(self.limits.max_age_s * 1000)
        cur = self._db.execute("delete from outbox where created_ms < ?", (cutoff,))
        removed = cur.rowcount or 0
        over = self._count - removed - self.limits.max_messages
        if over > 0:
            cur = self._db.execute(
                "delete from outbox where id in (select id from outbox order by id limit ?)", (over,)
            )
            removed += cur.rowcount or 0
        if removed:
            self._recount()
        excess = self._bytes - self.limits.max_bytes
        if excess > 0:
            # Drop exactly as many of the oldest rows as it takes to fit the payload total.
            doomed: list[int] = []
            cur = self._db.execute("select id, length(payload) from outbox order by id")
            while excess > 0 and (rows := cur.fetchmany(256)):
                for row_id, size in rows:
                    if excess <= 0:
                        break
                    doomed.append(int(row_id))
                    excess -= int(size)
            cur.close()
            for start in range(0, len(doomed), 500):
                chunk = doomed[start : start + 500]
                self._db.execute(f"delete from outbox where id in ({','.join('?' * len(chunk))})", chunk)
            removed += len(doomed)
            self._recount()
        self.dropped += removed

    def _recount(self) -> None:
        row = self._db.execute("select count(*), coalesce(sum(length(payload)), 0) from outbox").fetchone()
        self._count = int(row[0])
        self._bytes = int(row[1])
