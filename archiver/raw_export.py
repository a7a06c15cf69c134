"""The raw export: every stored data reading, from Redis into Parquet objects in the archive.

State (``Tables.RAW_EXPORT_STATE``, one row; copied to ``Keys.raw_export`` after each commit):

* ``through``: every reading with a ``datetime`` before it that was stored before its hour's export
  is in the archive. A run exports each closed UTC hour after it (``grace_s`` after the hour ends):
  per meter group (``Buckets.raw_group``) the hour's members of ``timeseries`` and ``late_data``,
  read through ``enerlink.schemas.snapshot.decode_snapshot``, as part 0 of that group-hour.
* ``late_cursor`` (Redis ms): a reading stored after its hour was exported is late, so the ingest
  flagged its (meter, minute) in ``late_minutes`` with its receipt time, and the aggregator moves
  such flags to ``late_done`` with a later time, and drops the minute's late data only once that
  entry is scored before the cursor. Each run takes every flag of either set scored from the cursor
  on, reads those minutes again, and writes the readings the archive does not hold yet (compared row
  by row with the group-hour's listed objects) as the next part. The cursor becomes the Redis time
  read at the start of the run, less a second (``CLOCK_MARGIN_MS``: a clock stepped back that much,
  as in a failover to a replica whose clock is a little behind): on a Redis Cluster the earliest of
  the masters' clocks, since each part's flags are scored by its own master's clock.

Exactly once: a run holds a PostgreSQL advisory lock (one exporter at a time); objects are written,
read back and verified, then listed in the manifest and the state moved in one transaction; a listed
object is never written again. A crash before that commit leaves at most an unlisted object at the
key the re-run writes again (same readings, same bytes: the Parquet bytes are a function of the
rows); nothing is read from an unlisted object. The aggregator trims nothing the state does not
cover (``aggregator/reader.py``), so a reading stays in Redis until its object is listed.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa
from psycopg import sql

from enerlink import redis_parts as parts
from enerlink.archiver import raw_objects
from enerlink.archiver.job import Stopped
from enerlink.archiver.months import Conn
from enerlink.archiver.raw_format import Reading, concat, to_messages, to_table, write_parquet
from enerlink.archiver.raw_objects import RawObject
from enerlink.archiver.storage import ObjectStore
from enerlink.db import advisory_lock_id
from enerlink.redis_client import SyncRedis
from enerlink.schemas.snapshot import decode_snapshot
from enerlink.schemas.wire import Buckets, Keys, Tables

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
CLOCK_MARGIN_MS = 1_000  # the late cursor is this much earlier than the clocks read at a run's start


@dataclass(slots=True)
class RawHooks:
    """Fault injection for tests: called after the objects of a commit are verified, before it."""

    before_record: Callable[[list[RawObject]], None] | None = None


@dataclass(slots=True)
class RawReport:
    readings: int = 0
    objects: int = 0
    bytes: int = 0
    hours: int = 0
    late: int = 0
    bad: int = 0
    beyond_window: int = 0  # hours exported after part of them may have left Redis
    through: datetime | None = None


@dataclass(slots=True)
class RawExporter:
    conn: Conn  # autocommit
    redis: SyncRedis
    keys: Keys
    store: ObjectStore
    grace_s: float = 300.0
    retention_s: float = 7200.0  # the ingest drops live readings older than this itself (window + hold)
    stop: threading.Event = field(default_factory=threading.Event)
    hooks: RawHooks = field(default_factory=RawHooks)

    def run(self) -> RawReport:
        """One run under a PostgreSQL advisory lock: a second exporter waits, then finds the hours done
        (a listed object is never written again)."""
        row = self.conn.execute("select current_schema()").fetchone()
        lock = advisory_lock_id("raw-export", str(row[0]) if row else None)
        self.conn.execute("select pg_advisory_lock(%s)", (lock,))
        try:
            return self._run()
        finally:
            self.conn.execute("select pg_advisory_unlock(%s)", (lock,))

    def _run(self) -> RawReport:
        report = RawReport()
        # before any read, the earliest of the parts' clocks (each part's flags are scored by its
        # master's clock): every flag raised after this run read its part is scored at least t1
        t1 = min(parts.clocks_sync(self.redis, self.keys).values())
        through, cursor = self._state(t1)
        meters = self._meters()
        while through + HOUR_MS + self.grace_s * 1000 <= t1:
            if self.stop.is_set():
                raise Stopped("stopping")
            if through < t1 - self.retention_s * 1000:
                report.beyond_window += 1
                log.warning(
                    "raw export: hour %s is older than the ingest keeps for the export (ENERLINK_RETENTION_S"
                    " + ENERLINK_RAW_HOLD_S): readings of it dropped before this run are not in the archive",
                    datetime.fromtimestamp(through / 1000, UTC).isoformat(),
                )
            objects = self._hour(through, meters, report)
            self._commit(objects, through=through + HOUR_MS, cursor=cursor, report=report)
            through += HOUR_MS
            report.hours += 1
        objects = self._late(cursor, through, report)
        # the next run's cursor: a second earlier, for a clock that steps back a little (a failover to a
        # replica whose clock is behind its master's): re-reading a flag costs a comparison
        self._commit(objects, through=through, cursor=t1 - CLOCK_MARGIN_MS, report=report)
        report.through = datetime.fromtimestamp(through / 1000, UTC)
        return report

    # -- state ---------------------------------------------------------------------------------

    def _state(self, now_ms: int) -> tuple[int, int]:
        table = sql.Identifier(Tables.RAW_EXPORT_STATE)
        row = self.conn.execute(sql.SQL("select through, late_cursor from {}").format(table)).fetchone()
        if row is None:  # first run: from the oldest hour Redis still holds
            start = min([self._oldest_ms(), now_ms]) // HOUR_MS * HOUR_MS
            self.conn.execute(
                sql.SQL(
                    "insert into {} (through, late_cursor) values (%s, %s) on conflict do nothing"
                ).format(table),
                (datetime.fromtimestamp(start / 1000, UTC), 0),
            )
            row = self.conn.execute(sql.SQL("select through, late_cursor from {}").format(table)).fetchone()
        assert row is not None
        moment, cursor = row
        assert isinstance(moment, datetime)
        through = int(moment.timestamp() * 1000)
        self._publish(through, int(cursor))  # type: ignore[call-overload]
        return through, int(cursor)  # type: ignore[call-overload]

    def _publish(self, through: int, cursor: int) -> None:
        """Into every part's copy (the ingest's store script reads its own part's)."""
        pipe = self.redis.pipeline(transaction=False)
        for part in self.keys.each_part():
            pipe.hset(part.raw_export, mapping={"through": through, "late": cursor})
        pipe.execute()

    def _oldest_ms(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for meter in self._meters():
            part = self.keys.of(meter)
            pipe.zrange(part.timeseries(meter), 0, 0, withscores=True)
            pipe.zrange(part.late_data(meter), 0, 0, withscores=True)
        found = [int(reply[0][1]) for reply in pipe.execute() if reply]
        return min(found) if found else 2**62

    def _meters(self) -> dict[str, int]:
        raw = parts.hgetall_sync(self.redis, self.keys, lambda k: k.meters)
        return {k.decode(): int(float(v)) for k, v in raw.items()}

    def _commit(self, objects: list[RawObject], *, through: int, cursor: int, report: RawReport) -> None:
        if self.hooks.before_record and objects:
            self.hooks.before_record(objects)
        with self.conn.transaction():
            raw_objects.record(self.conn, self.store, objects)
            self.conn.execute(
                sql.SQL("update {} set through = %s, late_cursor = %s, updated_at = now()").format(
                    sql.Identifier(Tables.RAW_EXPORT_STATE)
                ),
                (datetime.fromtimestamp(through / 1000, UTC), cursor),
            )
        self._publish(through, cursor)
        report.objects += len(objects)
        report.readings += sum(o.rows for o in objects)
        report.bytes += sum(o.size for o in objects)

    # -- reading Redis -------------------------------------------------------------------------

    def _read(self, spans: Iterable[tuple[str, int, int]]) -> list[Reading]:
        """Readings of (meter, from ms, to ms) spans: live and late members, repaired flags."""
        spans = list(spans)
        pipe = self.redis.pipeline(transaction=False)
        for meter, lo, hi in spans:
            part = self.keys.of(meter)
            pipe.zrangebyscore(part.timeseries(meter), lo, hi - 1)
            pipe.zrangebyscore(part.late_data(meter), lo, hi - 1)
            pipe.zrangebyscore(part.repaired(meter), lo, hi - 1)
        replies = pipe.execute()
        readings: list[Reading] = []
        seen: set[tuple[str, bytes]] = set()
        for i, (meter, _, _) in enumerate(spans):
            live, late, repaired = replies[3 * i : 3 * i + 3]
            seqs = frozenset(int(s) for s in repaired)
            for member in (*live, *late):
                if (meter, member) in seen:
                    continue
                seen.add((meter, member))
                readings.append(Reading(meter, decode_snapshot(member), repaired_seqs=seqs))
        return readings

    # -- main and late passes ------------------------------------------------------------------

    def _hour(self, lo: int, meters: dict[str, int], report: RawReport) -> list[RawObject]:
        start = datetime.fromtimestamp(lo / 1000, UTC)
        groups: dict[int, list[str]] = defaultdict(list)
        for meter, seen in meters.items():
            if seen >= lo:
                groups[Buckets.raw_group(meter)].append(meter)
        objects = []
        for group, members in sorted(groups.items()):
            readings = self._read((m, lo, lo + HOUR_MS) for m in sorted(members))
            listed = raw_objects.manifest(self.conn, day=start.date(), group=group, hour=start.hour)
            if not readings or listed:
                continue
            objects += self._write(start, group, 0, readings, report)
        return objects

    def _late(self, cursor: int, through: int, report: RawReport) -> list[RawObject]:
        pairs: set[tuple[str, int]] = set()
        for key in [name for part in self.keys.each_part() for name in (part.late_minutes, part.late_done)]:
            for member in self.redis.zrangebyscore(key, cursor, "+inf"):  # again: compared row by row
                meter, minute = Keys.parse_late_member(member.decode())  # type: ignore[union-attr]
                if minute < through:  # later hours: their main export takes them
                    pairs.add((meter, minute))
        by_hour: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
        for meter, minute in pairs:
            by_hour[(minute // HOUR_MS * HOUR_MS, Buckets.raw_group(meter))].append((meter, minute))
        objects = []
        for (lo, group), chosen in sorted(by_hour.items()):
            if self.stop.is_set():
                raise Stopped("stopping")
            start = datetime.fromtimestamp(lo / 1000, UTC)
            readings = self._read((m, minute, minute + MINUTE_MS) for m, minute in sorted(chosen))
            listed = raw_objects.manifest(self.conn, day=start.date(), group=group, hour=start.hour)
            held = _canonical(concat([raw_objects.load(self.store, row) for row in listed]))
            fresh = [r for r in readings if _canonical(to_table([r])[0]) - held]
            if fresh:
                part = max((int(row["part"]) for row in listed), default=-1) + 1
                found = self._write(start, group, part, fresh, report)
                report.late += sum(o.rows for o in found)
                objects += found
        return objects

    def _write(
        self, start: datetime, group: int, part: int, readings: list[Reading], report: RawReport
    ) -> list[RawObject]:
        table, bad = to_table(readings)
        report.bad += bad
        if bad:
            log.warning("raw export: %d snapshots of group %d at %s are not data messages", bad, group, start)
        if table.num_rows == 0:
            return []
        data = write_parquet(table)
        day = start.date()
        return [
            raw_objects.put_verified(
                self.store, day=day, group=group, hour=start.hour, part=part, table=table, data=data
            )
        ]


def _canonical(table: pa.Table) -> set[tuple[str, int, bytes]]:
    """Each row's (meter, ms, message with sorted keys): equal for the same reading, whatever file."""
    return {
        (meter, ms, orjson.dumps(orjson.loads(message), option=orjson.OPT_SORT_KEYS))
        for meter, ms, message in to_messages(table)
    }
