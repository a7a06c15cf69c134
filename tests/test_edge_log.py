"""The meter's delivery log: readings logged before they are published, kept after PUBCOMP until a
confirmation names them, confirmations applied exactly (and bad ones counted), the prune rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from enerlink.config import Env
from enerlink.edge.readings_log import Entry, LogSettings, ReadingsLog
from enerlink.edge.service import log_path, run
from tests.support.delivery_support import collect_raw, confirmation, fast, log_rows, running, send, stop
from tests.support.services import Broker
from tests.support.sim_support import wait_for


async def test_readings_are_logged_before_publishing_and_kept_after_pubcomp(env: Env) -> None:
    holder: list[Any] = []
    checked: list[tuple[str, int]] = []

    def on_data(message: dict[str, Any]) -> None:
        # called as each message of a tick is published: the whole tick is already in the log
        readings = holder[0].readings
        for meter_id in ("METER001", "METER002"):
            assert readings.is_confirmed(meter_id, message["seq"]) is False
        checked.append((message["meterId"], message["seq"]))

    settings = fast(env, meters=2, on_data=on_data)
    topics = settings.common.topics
    async with collect_raw(settings.common, [topics.data]) as got:
        await asyncio.wait_for(run(settings, max_steps=3, on_ready=holder.append), timeout=60)
    assert len(checked) == 6
    published = got.on(topics.data)
    assert len(published) == 6  # every exchange completed (the run drains before it returns)
    rows = log_rows(log_path(settings))
    assert set(rows) == {(m, s) for m in ("METER001", "METER002") for s in (1, 2, 3)}
    for payload in published:
        body = orjson.loads(payload)
        row = rows[(body["meterId"], body["seq"])]
        assert row.payload == payload  # exactly the bytes the broker delivered
        assert row.confirmed is False  # PUBCOMP is not a confirmation


async def test_confirmations_mark_exactly_through_and_ranges(env: Env) -> None:
    settings = fast(env, meters=2)
    topics, common = settings.common.topics, settings.common
    task, runner = await running(settings)
    try:
        await wait_for(lambda: runner.steps >= 6, limit_s=30)
        stats = runner.readings.stats
        await send(common, topics.confirm("METER001"), confirmation("METER001", through=2, ranges=[(4, 5)]))
        await wait_for(lambda: stats.confirmed >= 4)
        rows = log_rows(log_path(settings))
        confirmed = {key for key, row in rows.items() if row.confirmed}
        assert confirmed == {("METER001", 1), ("METER001", 2), ("METER001", 4), ("METER001", 5)}

        # stale (seqs above the highest issued, sent before these rows were logged), malformed, foreign
        an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        stale = confirmation("METER002", through=10**9, at=an_hour_ago)
        await send(common, topics.confirm("METER002"), stale)
        await send(common, topics.confirm("METER002"), b"{not json")
        await send(common, topics.confirm("METER002"), b'{"meterId": "METER002", "through": -3}')
        await send(common, topics.confirm("METER002"), confirmation("METER001", through=10**6))
        await send(common, topics.confirm("METER002"), confirmation("METER002", through=3, ranges=[(2, 1)]))
        await send(common, topics.confirm("NOTOURS"), confirmation("NOTOURS", through=5))  # not ours: ignored
        invalid = stats.invalid_confirmations
        await wait_for(lambda: sum(invalid.values()) >= 5)
        await asyncio.sleep(0.3)
        assert invalid == {"stale": 1, "malformed": 3, "foreign": 1}
        scraped = generate_latest(runner.metrics.registry).decode()
        assert 'enerlink_edge_log_invalid_confirmations_total{kind="malformed"} 3.0' in scraped
        assert stats.confirmed == 4
        after = log_rows(log_path(settings))
        assert {key for key, row in after.items() if row.confirmed} == confirmed

        # a stale confirmation sent after the rows were logged confirms them, never above the highest
        highest = runner.readings.highest("METER002")
        await send(common, topics.confirm("METER002"), confirmation("METER002", through=highest + 500))
        await wait_for(lambda: invalid["stale"] == 2)
        await wait_for(lambda: stats.confirmed >= 4 + highest)
        rows = log_rows(log_path(settings))
        assert all(rows[("METER002", s)].confirmed for s in range(1, highest + 1))
    finally:
        await stop(task)


async def test_confirmations_are_received_again_after_a_broker_restart(
    own_broker: Broker, environ: dict[str, str]
) -> None:
    own_broker.start()
    env = Env({**environ, "ENERLINK_MQTT_URL": own_broker.url})
    settings = fast(env, meters=1)
    topics, common = settings.common.topics, settings.common
    task, runner = await running(settings)
    try:
        await wait_for(lambda: runner.steps >= 3, limit_s=30)
        connects = runner.pub.stats.connects
        await asyncio.to_thread(own_broker.restart)
        await wait_for(lambda: runner.pub.stats.connects > connects and runner.pub.connected, limit_s=60)
        await asyncio.sleep(0.5)  # the subscriptions are renewed right after the CONNACK
        await send(common, topics.confirm("METER001"), confirmation("METER001", through=2))
        await wait_for(lambda: runner.readings.stats.confirmed >= 2, limit_s=20)
        assert runner.readings.is_confirmed("METER001", 2) is True
        assert runner.readings.is_confirmed("METER001", 3) is False
    finally:
        await stop(task)


# --- prune rules (the log's own SQLite file) ----------------------------------------------------

HOUR_MS = 3_600_000


def _fill(log: ReadingsLog, meter_id: str, seqs: range, *, at_ms: int, size: int = 100) -> None:
    log.append_many([Entry(meter_id, s, "t/data", bytes([s % 256]) * size) for s in seqs], now_ms=at_ms)


def test_prune_keeps_unconfirmed_and_the_newest_row_and_drops_expired_confirmed(tmp_path: Path) -> None:
    now = 1_800_000_000_000
    path = tmp_path / "log.sqlite3"
    with ReadingsLog(path, settings=LogSettings(keep_s=3600)) as log:
        _fill(log, "A", range(1, 6), at_ms=now - 2 * HOUR_MS)
        _fill(log, "B", range(1, 3), at_ms=now - 2 * HOUR_MS)
        _fill(log, "C", range(1, 3), at_ms=now - 10_000)
        log.confirm("A", through=5, now_ms=now)
        log.confirm("C", through=2, now_ms=now)
        assert log.prune(now_ms=now) == 4
        assert log.stats.pruned == 4 and log.stats.dropped_unconfirmed == 0
    rows = log_rows(path)
    # A: 1-4 expired and confirmed, 5 is A's newest; B unconfirmed; C confirmed but recent
    assert sorted(rows) == [("A", 5), ("B", 1), ("B", 2), ("C", 1), ("C", 2)]
    with ReadingsLog(path) as log:  # the counts are rebuilt from the file
        assert (log.stats.rows, log.stats.bytes, log.stats.unconfirmed) == (5, 500, 2)
        assert log.highest("A") == 5 and log.highest("D") == 0


def test_byte_cap_prunes_oldest_confirmed_first_then_oldest_unconfirmed_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = 1_800_000_000_000
    path = tmp_path / "log.sqlite3"
    with ReadingsLog(path) as log:
        for k, seq in enumerate(range(1, 5)):  # A1..A4, B1..B4 alternate in time
            _fill(log, "A", range(seq, seq + 1), at_ms=now - 100_000 + 2 * k)
            _fill(log, "B", range(seq, seq + 1), at_ms=now - 100_000 + 2 * k + 1)
        log.confirm("A", through=3, now_ms=now)
        log.confirm("B", through=0, ranges=[(3, 3)], now_ms=now)
    # 8 rows of 100 bytes; a cap of 500 removes 3: the oldest confirmed ones (A1, A2, A3), not B1/B2
    with ReadingsLog(path, settings=LogSettings(max_bytes=500)) as log:
        assert log.prune(now_ms=now) == 3
        assert log.stats.dropped_unconfirmed == 0
    assert sorted(log_rows(path)) == [("A", 4), ("B", 1), ("B", 2), ("B", 3), ("B", 4)]
    # a cap of 250: B3 (confirmed) goes first, then the oldest unconfirmed (B1), counted and logged
    with caplog.at_level(logging.ERROR), ReadingsLog(path, settings=LogSettings(max_bytes=250)) as log:
        assert log.prune(now_ms=now) == 3
        assert log.stats.dropped_unconfirmed == 2
        assert (log.stats.rows, log.stats.bytes) == (2, 200)
    assert sorted(log_rows(path)) == [("A", 4), ("B", 4)]
    assert "UNCONFIRMED" in caplog.text
    # nothing fits a cap of 0, yet each meter's newest row stays
    with ReadingsLog(path, settings=LogSettings(max_bytes=0)) as log:
        assert log.prune(now_ms=now) == 0
    assert sorted(log_rows(path)) == [("A", 4), ("B", 4)]


def test_row_cap_is_enforced_as_readings_are_logged(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    base = 1_800_000_000_000
    with ReadingsLog(path, settings=LogSettings(max_rows=10)) as log:
        for seq in range(1, 6):
            log.append_many([Entry(m, seq, "t/data", b"x" * 10) for m in ("A", "B")], now_ms=base + seq)
        log.confirm("A", through=3)
        assert log.stats.pruned == 0
        log.append_many([Entry(m, 6, "t/data", b"x" * 10) for m in ("A", "B")], now_ms=base + 6)
        assert log.stats.pruned == 2 and log.stats.dropped_unconfirmed == 0  # A1, A2: confirmed
        log.append_many([Entry(m, 7, "t/data", b"x" * 10) for m in ("A", "B")], now_ms=base + 7)
        assert log.stats.rows == 10
        assert log.stats.pruned == 4 and log.stats.dropped_unconfirmed == 1  # A3, then B1 (oldest)
        kept = (log.stats.rows, log.stats.bytes, log.stats.unconfirmed)
    with ReadingsLog(path) as fresh:  # the running counts equal a recount of the file
        assert (fresh.stats.rows, fresh.stats.bytes, fresh.stats.unconfirmed) == kept == (10, 100, 10)
    rows = log_rows(path)
    assert sorted(s for m, s in rows if m == "A") == [4, 5, 6, 7]
    assert sorted(s for m, s in rows if m == "B") == [2, 3, 4, 5, 6, 7]


async def test_a_meter_that_left_the_fleet_still_has_its_logged_readings_confirmed(env: Env) -> None:
    """The fleet restarted with fewer meters (or resized): the readings the departed meter logged are
    still confirmed by the pipeline, so they are neither re-sent for ever nor dropped as lost."""
    two = fast(env, meters=2)
    topics, common = two.common.topics, two.common
    task, runner = await running(two)
    try:
        await wait_for(lambda: runner.steps >= 3, limit_s=30)
    finally:
        await stop(task)
    highest = ReadingsLog(log_path(two)).highest("METER002")
    assert highest >= 3
    one = fast(env, meters=1)
    task, runner = await running(one)
    try:
        await send(common, topics.confirm("METER002"), confirmation("METER002", through=highest))
        await send(common, topics.confirm("NOTOURS"), confirmation("NOTOURS", through=5))  # never logged here
        await wait_for(
            lambda: all(r.confirmed for k, r in log_rows(log_path(one)).items() if k[0] == "METER002")
        )
    finally:
        await stop(task)
    assert not any(k[0] == "NOTOURS" for k in log_rows(log_path(one)))
