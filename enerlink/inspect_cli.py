"""``enerlink inspect snapshot METER001 --last 5``: a meter's stored readings as JSON lines;
``enerlink inspect shards``: the aggregator's shards.

Redis keeps each reading in the meter's sorted sets in a compact binary form
(:mod:`enerlink.schemas.snapshot`), which ``redis-cli ZRANGE`` shows as bytes; this prints them back as the
messages they are, oldest first, one JSON object per line::

    {"at": "2026-12-06T08:00:05Z", "score": 1796544005000, "set": "live", "bytes": 213, "message": {...}}

``at`` is the score (the reading's datetime, epoch ms, UTC), ``bytes`` the member's size in Redis.
``--late`` reads the late-data set instead (readings older than the live window at arrival).
``keys METER001`` prints the meter's Redis key names in the configured layout (on a Redis Cluster each
carries its part's hash tag). ``shards`` prints a line per shard: who holds its lease and for how long
still, the last minute it has aggregated and how far behind now that is; then the fleet's line (the
oldest shard's minute, which settlement waits on). With one shard (the default) there is the fleet's
line only.

Exit status: 0 printed (even none), 1 a member could not be decoded (the others are printed) or
Redis or PostgreSQL did not answer, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import psycopg

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.redis_client import REDIS_ERRORS, sync_client
from enerlink.schemas.snapshot import SnapshotError, decode_snapshot
from enerlink.schemas.wire import Tables
from enerlink.shards import Shard
from enerlink.watermark import MINUTES


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    snap = sub.add_parser(
        "snapshot", help="a meter's stored readings (timeseries or late data) as JSON lines"
    )
    snap.add_argument("meter_id", help="e.g. METER001")
    snap.add_argument("--last", type=int, default=5, metavar="N", help="the newest N (default 5; 0 = all)")
    snap.add_argument("--late", action="store_true", help="the late-data set instead of the live window")
    sub.add_parser("shards", help="the aggregator's shards: who holds each, how far each has got")
    keys = sub.add_parser(
        "keys", help="a meter's Redis keys in the configured layout (one server or cluster)"
    )
    keys.add_argument("meter_id", help="e.g. METER001")


def main(args: argparse.Namespace) -> int:

    try:
        common = CommonSettings.from_env(Env())
    except ConfigError as exc:
        print(f"enerlink inspect: {exc}", file=sys.stderr)
        return 2
    if args.what == "shards":
        return _shards(common)
    if args.what == "keys":
        return _keys(common, args.meter_id)
    keys = common.keys.of(args.meter_id)
    key = keys.late_data(args.meter_id) if args.late else keys.timeseries(args.meter_id)
    start = 0 if args.last <= 0 else -args.last
    try:
        client = sync_client(common.redis_url)
    except REDIS_ERRORS as exc:
        print(f"enerlink inspect: redis: {exc}", file=sys.stderr)
        return 1
    try:
        members: list[tuple[bytes, float]] = client.zrange(key, start, -1, withscores=True)  # type: ignore[assignment]
    except REDIS_ERRORS as exc:
        print(f"enerlink inspect: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    status = 0
    for member, score in members:
        at = datetime.fromtimestamp(score / 1000, UTC).isoformat(timespec="milliseconds")
        line: dict[str, object] = {
            "at": at.replace("+00:00", "Z"),
            "score": int(score),
            "set": "late" if args.late else "live",
            "bytes": len(member),
        }
        try:
            line["message"] = json.loads(decode_snapshot(member))
        except (SnapshotError, ValueError) as exc:
            line["error"] = str(exc)
            status = 1
        print(json.dumps(line, separators=(", ", ": ")))
    return status


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _shards(common: CommonSettings) -> int:
    try:
        with psycopg.connect(common.database_url) as conn:
            row = conn.execute("select now()").fetchone()
            now: datetime = row[0] if row else datetime.now(UTC)
            leases = conn.execute(
                f"select shard, shards, owner, expires_at from {Tables.AGGREGATOR_LEASES} order by shard"
            ).fetchall()
            marks: dict[str, datetime] = dict(
                conn.execute(
                    f"select name, minute from {Tables.AGGREGATOR_WATERMARK} where minute is not null"
                ).fetchall()
            )
    except psycopg.Error as exc:
        print(f"enerlink inspect: postgresql: {exc}", file=sys.stderr)
        return 1

    def _line(**fields: object) -> None:
        print(json.dumps(fields, separators=(", ", ": ")))

    def _behind(minute: datetime | None) -> float | None:
        return None if minute is None else round((now - minute).total_seconds() - 60, 1)

    for index, count, owner, expires in leases:
        mark = marks.get(Shard(index, count).row_name(MINUTES))
        live = owner is not None and expires >= now
        _line(
            shard=f"{index}/{count}",
            owner=owner if live else None,
            lease_left_s=round((expires - now).total_seconds(), 1) if live else None,
            minute=_iso(mark),
            behind_s=_behind(mark),
        )
    fleet = marks.get(MINUTES)
    _line(shard="fleet", minute=_iso(fleet), behind_s=_behind(fleet))
    return 0


def _keys(common: CommonSettings, meter_id: str) -> int:
    """One JSON line: the meter's part (null on one server) and the names of its keys and of its part
    of the fleet-wide hashes, for ``redis-cli`` (``-c`` on a cluster)."""
    keys = common.keys.of(meter_id)
    names = {
        "latest_data": keys.latest_data,
        "latest_status": keys.latest_status,
        "meters": keys.meters,
        "presence": keys.presence,
        "gaps": keys.gaps,
        "rejected_counts": keys.rejected_counts,
        "timeseries": keys.timeseries(meter_id),
        "status_timeseries": keys.status_timeseries(meter_id),
        "late_data": keys.late_data(meter_id),
        "seq_record": keys.seq_record(meter_id),
    }
    part = common.keys.part_of(meter_id) if common.keys.parts else None
    print(json.dumps({"meter": meter_id, "part": part, "parts": common.keys.parts, "keys": names}))
    return 0
