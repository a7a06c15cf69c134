"""The delivery log across a kill -9: the simulated fleet and the hardware edge as subprocesses, killed
and started again; no seq is issued twice and none is skipped (every seq up to the newest is in the log)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from enerlink.config import Env
from enerlink.edge.service import log_path
from enerlink.edge.settings import Settings
from tests.support.delivery_support import Raw, collect_raw, log_rows
from tests.support.services import ServiceProcess
from tests.support.sim_support import wait_for


def _check_no_reuse_no_hole(got: Raw, topic: str, rows_path: Path, meters: list[str]) -> None:
    rows = log_rows(rows_path)
    seen: dict[tuple[str, int], bytes] = {}
    for received_topic, payload in got.messages:
        if received_topic != topic:
            continue
        body = orjson.loads(payload)
        key = (body["meterId"], body["seq"])
        assert seen.setdefault(key, payload) == payload, f"{key} published twice with different readings"
        assert rows[key].payload == payload
    for meter in meters:
        held = sorted(seq for m, seq in rows if m == meter)
        assert held == list(range(1, held[-1] + 1)), f"{meter}: a seq was skipped"


async def _killed(args: list[str], environ: dict[str, str], got: Raw, topic: str, count: int) -> None:
    """Run the edge until ``count`` readings arrived on ``topic``, then kill -9 it."""
    process = ServiceProcess(args=args, env=environ).start()
    try:
        await wait_for(lambda: len(got.on(topic)) >= count, limit_s=60)
    finally:
        process.kill()


async def _restarted(
    args: list[str], environ: dict[str, str], got: Raw, topic: str, count: int
) -> list[dict[str, Any]]:
    """Run the edge again until ``count`` more messages arrived, stop it (exit 0); its readings."""
    split = len(got.messages)
    process = ServiceProcess(args=args, env=environ).start()
    try:
        await wait_for(lambda: len(got.messages) >= split + count, limit_s=60)
    finally:
        code = process.terminate()
    assert code == 0, process.output()
    return [orjson.loads(p) for t, p in got.messages[split:] if t == topic]


async def test_fleet_killed_keeps_its_log_and_continues_its_seq(environ: dict[str, str]) -> None:
    # the fleet's saved state is written only on a clean stop here: after the kill, seq comes from the log
    environ = {**environ, "ENERLINK_SIM_SAVE_EVERY": "3600", "ENERLINK_SIM_SPEED": "10"}
    settings = Settings.from_env(Env(environ))
    topic = settings.common.topics.data
    args = ["edge", "--simulate", "--meters", "2", "--interval", "1"]
    async with collect_raw(settings.common, [topic]) as got:
        await _killed(args, environ, got, topic, 10)
        logged = log_rows(log_path(settings))
        highest = {m: max(s for mm, s in logged if mm == m) for m in ("METER001", "METER002")}
        after = await _restarted(args, environ, got, topic, 10)
    for meter, last in highest.items():
        assert next(m["seq"] for m in after if m["meterId"] == meter) == last + 1
    _check_no_reuse_no_hole(got, topic, log_path(settings), ["METER001", "METER002"])


async def test_hardware_edge_killed_continues_its_seq_from_the_log(environ: dict[str, str]) -> None:
    meter = f"HW{uuid.uuid4().hex[:6]}"
    settings = Settings.from_env(Env(environ))
    topic = settings.common.topics.data
    path = settings.state_dir / f"{meter}.log.sqlite3"
    args = ["edge", "--emulate-hardware", "--meter-id", meter, "--interval", "0.5"]
    async with collect_raw(settings.common, [topic]) as got:
        await _killed(args, environ, got, topic, 3)
        highest = max(s for _, s in log_rows(path))
        after = await _restarted(args, environ, got, topic, 3)
    assert after[0]["seq"] == highest + 1  # the counters alone would jump to their reserved block (1001)
    _check_no_reuse_no_hole(got, topic, path, [meter])
