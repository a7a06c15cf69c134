"""kill -9 of a meter: its counters are saved once a minute, its readings logged every interval. After
the restart it continues from the newest logged reading (seq and counters), so no counter the pipeline
saw goes back: to the pipeline that would be a reset (and energy counted again). The emulated hardware
meter and the simulated fleet, as processes, against the real broker."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from enerlink.config import Env
from enerlink.edge.counters import CHANNELS
from enerlink.edge.readings_log import Entry, ReadingsLog
from enerlink.edge.settings import Settings
from enerlink.edge.sim import fleet as fleet_mod
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.messages import data_messages
from enerlink.edge.sim.state import StateStore, resume_counters
from enerlink.edge.sim.weather import OfflineWeather
from tests.support.delivery_support import collect_raw
from tests.support.services import ServiceProcess
from tests.support.sim_support import wait_for


def _counters(message: dict[str, Any]) -> list[float]:
    data = message["data"]
    return [data[ch]["total_energy"] for ch in CHANNELS]  # (a daily one may pass local midnight)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(
            ["--emulate-hardware", "--meter-id", f"HW{uuid.uuid4().hex[:6]}", "--interval", "0.5"],
            id="hardware",
        ),
        pytest.param(["--meters", "1", "--interval", "1", "--speed", "10"], id="fleet"),
    ],
)
async def test_counters_never_go_back_after_kill_9(environ: dict[str, str], args: list[str]) -> None:
    settings = Settings.from_env(Env(environ))
    topic = settings.common.topics.data
    command = ["edge", *args]
    async with collect_raw(settings.common, [topic]) as got:
        process = ServiceProcess(args=command, env=environ).start()
        try:
            await wait_for(lambda: len(got.on(topic)) >= 8, limit_s=60)
        finally:
            process.kill()
        before = [orjson.loads(x) for x in got.on(topic)]
        process = ServiceProcess(args=command, env=environ).start()
        try:
            await wait_for(lambda: len(got.on(topic)) >= len(before) + 2, limit_s=60)
        finally:
            process.terminate()
        after = [orjson.loads(x) for x in got.on(topic)][len(before) :]
    by_seq = {m["seq"]: m for m in [*before, *after]}  # a reading re-sent after the restart, once
    seqs = sorted(by_seq)  # (one logged but not yet published at the kill comes with the resends)
    assert max(m["seq"] for m in after) > max(m["seq"] for m in before)
    for older, newer in itertools.pairwise(by_seq[s] for s in seqs):
        assert all(a >= b for a, b in zip(_counters(newer), _counters(older), strict=True)), (older, newer)
        assert newer["data"]["import"]["settlement_energy"] >= older["data"]["import"]["settlement_energy"]


def test_the_fleet_resumed_from_its_log_counts_the_same_energy_as_without_the_crash(tmp_path: Path) -> None:
    """Saved after its 2nd step, killed after its 12th: resumed from the log, the 13th step adds its own
    interval's energy, not the time since the save again."""
    fleet = fleet_mod.generate(2, seed=7, scale="home")

    def simulator() -> Simulator:
        return Simulator.create(fleet, weather=OfflineWeather(seed=fleet.seed))

    noon = 1_780_000_000.0 - 1_780_000_000.0 % 86_400 + 12 * 3600
    ticks = [noon + 5 * k for k in range(13)]
    store, log = StateStore(tmp_path / "state.json"), ReadingsLog(tmp_path / "log.sqlite3")
    uninterrupted, seqs = simulator(), np.zeros(len(fleet.meters), dtype=np.int64)
    for k, tick in enumerate(ticks[:-1]):
        step = uninterrupted.step(tick)
        seqs += 1
        messages = data_messages(uninterrupted, step, seqs=seqs.tolist())
        log.append_many(
            [
                Entry(m["meterId"], int(s), "data", orjson.dumps(m))
                for m, s in zip(messages, seqs, strict=True)
            ]
        )
        if k == 1:
            store.save(uninterrupted, seqs)
    uninterrupted.step(ticks[-1])

    restarted, saved_seqs = simulator(), np.zeros(len(fleet.meters), dtype=np.int64)
    assert StateStore(tmp_path / "state.json").restore(restarted, saved_seqs) == len(fleet.meters)
    assert resume_counters(log, restarted, saved_seqs) == len(fleet.meters)
    before = restarted.counters.total.copy()  # the 12th step's counters, from the log
    restarted.step(ticks[-1])
    # the weather and loads are drawn anew after a restart, so the step's energy differs a little; the
    # time since the save (eleven steps) counted again would be many times it
    added, expected = restarted.counters.total - before, uninterrupted.counters.total - before
    assert (added >= 0).all() and (added <= 2 * expected + 1e-3).all(), (added, expected)
