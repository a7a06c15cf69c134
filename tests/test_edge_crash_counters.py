"""kill -9 of a meter: its counters are saved once a minute, its readings logged every interval. After
the restart it continues from the newest logged reading (seq and counters), so no counter the pipeline
saw goes back: to the pipeline that would be a reset (and energy counted again). The emulated hardware
meter and the simulated fleet, as processes, against the real broker."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from enerlink.config import Env
from enerlink.edge.counters import CHANNELS
from enerlink.edge.settings import Settings
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
    last, first = before[-1], after[0]
    assert first["seq"] == last["seq"] + 1
    assert all(a >= b for a, b in zip(_counters(first), _counters(last), strict=True)), (last, first)
    assert first["data"]["import"]["settlement_energy"] >= last["data"]["import"]["settlement_energy"]
