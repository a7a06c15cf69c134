"""What the fleet published against what reached Redis and PostgreSQL, after the drain.

The fleet's publish log (``meterId,datetime,seq`` per broker-acknowledged data message) is the
truth. For every (meter, minute) it must equal ``sample_count`` in ``telemetry_aggregates``: a
deficit is a lost message, an excess a doubled one, a row missing is a minute missing. Each rollup
(5 min, 1 h, 1 day in UTC) must equal its recomputation from the minute rows (sample count,
first/last time, energy sums).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson
import psycopg
import redis

from enerlink.aggregator.columns import STAT_COLUMNS
from enerlink.db import quote
from enerlink.redis_client import SyncRedis, sync_client
from enerlink.schemas.snapshot import decode_snapshot
from enerlink.schemas.wire import Keys, Tables
from enerlink.watermark import MINUTES
from tests.support.chaos_stack import PROBE_METER, Stack

Key = tuple[str, datetime]
MINUTE = timedelta(minutes=1)
_ENERGY = [c.name for c in STAT_COLUMNS if c.stat == "energy"]
_ROLLUPS = (
    (Tables.TELEMETRY_5M, "date_bin('5 minutes', bucket, timestamptz '1970-01-01 00:00:00+00')"),
    (Tables.TELEMETRY_1H, "date_trunc('hour', bucket, 'UTC')"),
    (Tables.TELEMETRY_1D, "date_trunc('day', bucket, 'UTC')"),
)


@dataclass
class Published:
    per_minute: Counter[Key] = field(default_factory=Counter)
    meters: set[str] = field(default_factory=set)
    total: int = 0
    repeated: list[tuple[str, str]] = field(default_factory=list)
    """(meter, seq) acknowledged more than once: the edge itself sent a message twice."""
    last_minute: datetime | None = None
    last_seq: dict[str, int] = field(default_factory=dict)
    """Per meter, the highest ``seq`` the broker acknowledged."""


def read_publish_log(path: Path) -> Published:
    out = Published()
    seen: set[tuple[str, str]] = set()
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        meter, when, seq = line.split(",")
        moment = datetime.fromisoformat(when).astimezone(UTC)
        minute = moment.replace(second=0, microsecond=0)
        out.per_minute[(meter, minute)] += 1
        out.meters.add(meter)
        out.total += 1
        if (meter, seq) in seen:
            out.repeated.append((meter, seq))
        seen.add((meter, seq))
        if seq:
            out.last_seq[meter] = max(out.last_seq.get(meter, 0), int(seq))
        if out.last_minute is None or minute > out.last_minute:
            out.last_minute = minute
    return out


def _redis_stored(client: SyncRedis, keys: Keys, meters: set[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for meter in sorted(meters):
        pipe.zcard(keys.of(meter).timeseries(meter))
        pipe.zcard(keys.of(meter).late_data(meter))
    return sum(int(n) for n in pipe.execute())


def _aggregated(conn: psycopg.Connection[tuple[object, ...]]) -> dict[Key, int]:
    rows = conn.execute(
        f"select meter_id, bucket, sample_count from {quote(Tables.TELEMETRY_AGGREGATES)}"
        " where meter_id <> %s",
        (PROBE_METER,),
    ).fetchall()
    return {(str(m), cast(datetime, b).astimezone(UTC)): cast(int, n) for m, b, n in rows}


def _watermark(conn: psycopg.Connection[tuple[object, ...]]) -> datetime | None:
    row = conn.execute(
        f"select minute from {quote(Tables.AGGREGATOR_WATERMARK)} where name = %s", (MINUTES,)
    ).fetchone()
    return row[0].astimezone(UTC) if row and row[0] else None  # type: ignore[attr-defined]


@dataclass
class Drain:
    stored: int = 0
    aggregated: int = 0
    watermark: datetime | None = None
    late_pending: int = 0
    seconds: float = 0.0
    complete: bool = False


def wait_drained(stack: Stack, published: Published, *, timeout_s: float) -> Drain:
    """Poll until Redis holds every published message, the watermark passed the last published
    minute, no late minute waits for re-aggregation and the minute rows add up (or the timeout)."""
    keys = stack.keys
    state = Drain()
    started = time.monotonic()
    client = sync_client(stack.redis.url)
    try:
        while True:
            try:
                state.stored = _redis_stored(client, keys, published.meters)
                state.late_pending = sum(int(client.zcard(part.late_minutes)) for part in keys.each_part())
                with psycopg.connect(stack.pg.url, connect_timeout=5) as conn:
                    state.watermark = _watermark(conn)
                    state.aggregated = sum(_aggregated(conn).values())
            except (redis.RedisError, psycopg.Error, OSError):
                pass  # a service still coming back: poll again
            state.seconds = time.monotonic() - started
            passed = (
                published.last_minute is not None
                and state.watermark is not None
                and state.watermark >= published.last_minute
            )
            if passed and state.late_pending == 0 and state.aggregated == published.total:
                state.complete = True
                return state
            if state.seconds > timeout_s:
                return state
            stack.supervise()
            time.sleep(2.0)
    finally:
        client.close()


@dataclass
class Verdict:
    published: int
    stored: int
    aggregated: int
    lost: int
    duplicated: int
    missing_minutes: list[Key]
    doubled_minutes: list[Key]
    mismatches: list[tuple[str, datetime, int, int, int]]
    """(meter, minute, published, aggregated, in Redis) for every minute that differs."""
    rollup_mismatches: dict[str, int]
    rollup_examples: list[str]
    repeated_publishes: int
    minutes: int

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.missing_minutes
            and not self.doubled_minutes
            and not any(self.rollup_mismatches.values())
            and self.repeated_publishes == 0
            and self.published > 0
        )


def _rollup_mismatches(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    examples: list[str] = []
    sums = ", ".join(f"sum({quote(n)}) as {quote(n)}" for n in _ENERGY)
    energy_diff = " or ".join(
        f"(m.{quote(n)} is null) <> (r.{quote(n)} is null)"
        f" or abs(m.{quote(n)} - r.{quote(n)}) > 1e-6 * greatest(1.0, abs(m.{quote(n)}))"
        for n in _ENERGY
    )
    for table, bucket in _ROLLUPS:
        query = f"""
with m as (
  select meter_id, {bucket} as b, sum(sample_count) as sample_count,
         min({Tables.minute_time_sql("first_at")}) as first_at,
         max({Tables.minute_time_sql("last_at")}) as last_at, {sums}
  from {quote(Tables.TELEMETRY_AGGREGATES)} where meter_id <> %(probe)s group by 1, 2
), r as (select * from {quote(table)} where meter_id <> %(probe)s)
select coalesce(m.meter_id, r.meter_id), coalesce(m.b, r.bucket), m.sample_count, r.sample_count
from m full join r on r.meter_id = m.meter_id and r.bucket = m.b
where m.meter_id is null or r.meter_id is null or m.sample_count <> r.sample_count
   or m.first_at <> r.first_at or m.last_at <> r.last_at or {energy_diff}
order by 1, 2"""
        rows = conn.execute(query.encode(), {"probe": PROBE_METER}).fetchall()
        counts[table] = len(rows)
        examples += [f"{table}: {r[0]} {r[1]} minutes say {r[2]}, rollup says {r[3]}" for r in rows[:5]]
    return counts, examples


def verify(stack: Stack, published: Published) -> Verdict:
    keys = stack.keys
    client = sync_client(stack.redis.url)
    try:
        with psycopg.connect(stack.pg.url) as conn:
            aggregated = _aggregated(conn)
            rollups, examples = _rollup_mismatches(conn)
        stored = _redis_stored(client, keys, published.meters)
        lost = duplicated = 0
        missing: list[Key] = []
        doubled: list[Key] = []
        mismatches: list[tuple[str, datetime, int, int, int]] = []
        for key in sorted(set(published.per_minute) | set(aggregated)):
            expected, actual = published.per_minute.get(key, 0), aggregated.get(key, 0)
            if expected == actual:
                continue
            meter, minute = key
            start_ms = int(minute.timestamp() * 1000)
            part = keys.of(meter)
            in_redis = int(client.zcount(part.timeseries(meter), start_ms, start_ms + 59_999)) + int(
                client.zcount(part.late_data(meter), start_ms, start_ms + 59_999)
            )
            mismatches.append((meter, minute, expected, actual, in_redis))
            if actual < expected:
                lost += expected - actual
                if key not in aggregated:
                    missing.append(key)
            else:
                duplicated += actual - expected
                if expected > 0:
                    doubled.append(key)
    finally:
        client.close()
    return Verdict(
        published=published.total,
        stored=stored,
        aggregated=sum(aggregated.values()),
        lost=lost,
        duplicated=duplicated,
        missing_minutes=missing,
        doubled_minutes=doubled,
        mismatches=mismatches,
        rollup_mismatches=rollups,
        rollup_examples=examples,
        repeated_publishes=len(published.repeated),
        minutes=len(published.per_minute),
    )


@dataclass
class SeqVerdict:
    """Per meter, every ``seq`` from 1 to its last: stored once in Redis, counted once in PostgreSQL."""

    meters: int = 0
    expected: int = 0
    missing: dict[str, list[int]] = field(default_factory=dict)
    """meter -> seqs in 1..last that Redis does not hold (first few)."""
    missing_total: int = 0
    doubled_total: int = 0
    """Readings whose ``seq`` is stored more than once (two members with one seq)."""
    count_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    """meter -> (distinct seqs stored, sum of sample_count) where they differ."""

    @property
    def ok(self) -> bool:
        return self.missing_total == 0 and self.doubled_total == 0 and not self.count_mismatches


def verify_seqs(stack: Stack, published: Published) -> SeqVerdict:
    keys = stack.keys
    out = SeqVerdict(meters=len(published.last_seq))
    client = sync_client(stack.redis.url)
    try:
        with psycopg.connect(stack.pg.url) as conn:
            counted = dict(
                conn.execute(
                    f"select meter_id, sum(sample_count)::bigint from {quote(Tables.TELEMETRY_AGGREGATES)}"
                    " group by meter_id"
                ).fetchall()
            )
        for meter, last in sorted(published.last_seq.items()):
            members = [
                *client.zrange(keys.of(meter).timeseries(meter), 0, -1),
                *client.zrange(keys.of(meter).late_data(meter), 0, -1),
            ]
            seqs = Counter(int(orjson.loads(decode_snapshot(m))["seq"]) for m in members)
            out.expected += last
            absent = [n for n in range(1, last + 1) if n not in seqs]
            if absent:
                out.missing[meter] = absent[:10]
                out.missing_total += len(absent)
            out.doubled_total += sum(n - 1 for n in seqs.values() if n > 1)
            in_pg = int(cast(int, counted.get(meter, 0)))
            if in_pg != len(seqs):
                out.count_mismatches[meter] = (len(seqs), in_pg)
    finally:
        client.close()
    return out


def seq_summary(verdict: SeqVerdict) -> str:
    lines = [
        f"{'meters with seq':<38} {verdict.meters}",
        f"{'readings expected (seq 1..last)':<38} {verdict.expected}",
        f"{'seqs missing from Redis':<38} {verdict.missing_total}",
        f"{'seqs stored twice':<38} {verdict.doubled_total}",
        f"{'meters whose sample_count differs':<38} {len(verdict.count_mismatches)}",
    ]
    lines += [f"  {meter}: missing {seqs}" for meter, seqs in list(verdict.missing.items())[:10]]
    lines += [
        f"  {meter}: {n} seqs stored, {m} counted in PostgreSQL"
        for meter, (n, m) in list(verdict.count_mismatches.items())[:10]
    ]
    return "\n".join(lines)


def summary(verdict: Verdict, faults: Counter[str], *, meters: int, seconds: float, seed: int) -> str:
    rows = [
        ("seed", str(seed)),
        ("meters x run", f"{meters} x {seconds:.0f} s"),
        ("faults injected", ", ".join(f"{k} {n}" for k, n in sorted(faults.items())) or "none"),
        ("messages published (acked)", str(verdict.published)),
        ("stored in Redis", str(verdict.stored)),
        ("aggregated (sum sample_count)", str(verdict.aggregated)),
        ("meter-minutes checked", str(verdict.minutes)),
        ("lost", str(verdict.lost)),
        ("duplicated", str(verdict.duplicated)),
        ("minutes missing", str(len(verdict.missing_minutes))),
        ("minutes with extra samples", str(len(verdict.doubled_minutes))),
        ("published twice by the edge", str(verdict.repeated_publishes)),
        ("rollup rows inconsistent", ", ".join(f"{t} {n}" for t, n in verdict.rollup_mismatches.items())),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", "chaos summary", "-" * (width + 30)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    for meter, minute, expected, actual, in_redis in verdict.mismatches[:20]:
        lines.append(
            f"  {meter} {minute:%Y-%m-%d %H:%M}: published {expected}, aggregated {actual},"
            f" in Redis {in_redis}"
        )
    lines += [f"  {example}" for example in verdict.rollup_examples[:10]]
    return "\n".join(lines)


_PATTERNS = {
    "edge messages replayed from its queue": (r"replayed (\d+) queued messages", "fleet"),
    "edge connection losses": (r"MQTT connection to .* lost or refused", "fleet"),
    "edge refusals by the broker (holds)": (r"broker refused the message", "fleet"),
    "ingest duplicates absorbed": (r"duplicates (\d+)", "ingest"),
    "ingest Redis write retries": (r"redis: write of \d+ messages failed", "ingest"),
    "ingest readings repaired": (r"repaired (\d+), lost", "ingest"),
    "ingest readings lost (not held)": (r"repaired \d+, lost (\d+)", "ingest"),
    "edge readings re-sent on request": (r"resend request \S+ for \S+: (\d+) resent", "fleet"),
    "edge readings re-sent unconfirmed": (r"re-sent (\d+) unconfirmed readings", "fleet"),
    "aggregator minutes beyond retention": (r"(\d+) minutes after the watermark are beyond", "aggregator"),
}


def log_stats(stack: Stack) -> dict[str, int]:
    """What the faults did, read from the services' logs (shows the faults bit)."""
    texts = {
        "fleet": stack.fleet.output(),
        "ingest": "\n".join(w.output() for w in stack.workers),
        "aggregator": stack.aggregator.output(),
    }
    out: dict[str, int] = {}
    for label, (pattern, source) in _PATTERNS.items():
        regex = re.compile(pattern)
        total = 0
        for match in regex.finditer(texts[source]):
            total += int(match.group(1)) if match.groups() else 1
        out[label] = total
    return out


def assert_exactly_once(
    verdict: Verdict, seqs: SeqVerdict, drain: Drain, *, meters: int, detail: str
) -> None:
    """Every published reading stored, aggregated once, in the rollups, every seq once."""
    assert verdict.repeated_publishes == 0, "the edge had a message acknowledged twice"
    assert verdict.stored == verdict.published, detail
    assert verdict.lost == 0 and not verdict.missing_minutes, detail
    assert verdict.duplicated == 0 and not verdict.doubled_minutes, detail
    assert not any(verdict.rollup_mismatches.values()), detail
    assert verdict.ok and drain.complete, detail
    assert seqs.meters == meters and seqs.ok, detail


def assert_stopped_cleanly(stack: Stack) -> None:
    """No service exited by itself during the run (house rule: every service survives its
    dependencies' outages), and each drains and exits 0 on SIGTERM."""
    assert not stack.exits, "\n\n".join(f"{e.name} exited ({e.code}):\n{e.tail}" for e in stack.exits)
    codes = stack.stop_pipeline()
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"
