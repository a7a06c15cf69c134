"""``enerlink inspect snapshot METER001 --last 5``: a meter's stored readings as JSON lines.

Redis keeps each reading in the meter's sorted sets in a compact binary form
(:mod:`enerlink.schemas.snapshot`), which ``redis-cli ZRANGE`` shows as bytes; this prints them back as the
messages they are, oldest first, one JSON object per line::

    {"at": "2026-12-06T08:00:05Z", "score": 1796544005000, "set": "live", "bytes": 213, "message": {...}}

``at`` is the score (the reading's datetime, epoch ms, UTC), ``bytes`` the member's size in Redis.
``--late`` reads the late-data set instead (readings older than the live window at arrival).
Exit status: 0 printed (even none), 1 a member could not be decoded (the others are printed) or
Redis did not answer, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import redis

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.schemas.snapshot import SnapshotError, decode_snapshot


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    snap = sub.add_parser(
        "snapshot", help="a meter's stored readings (timeseries or late data) as JSON lines"
    )
    snap.add_argument("meter_id", help="e.g. METER001")
    snap.add_argument("--last", type=int, default=5, metavar="N", help="the newest N (default 5; 0 = all)")
    snap.add_argument("--late", action="store_true", help="the late-data set instead of the live window")


def main(args: argparse.Namespace) -> int:

    try:
        common = CommonSettings.from_env(Env())
    except ConfigError as exc:
        print(f"enerlink inspect: {exc}", file=sys.stderr)
        return 2
    keys = common.keys
    key = keys.late_data(args.meter_id) if args.late else keys.timeseries(args.meter_id)
    start = 0 if args.last <= 0 else -args.last
    client = redis.Redis.from_url(common.redis_url)
    try:
        members: list[tuple[bytes, float]] = client.zrange(key, start, -1, withscores=True)  # type: ignore[assignment]
    except redis.RedisError as exc:
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
