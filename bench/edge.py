"""Simulator throughput: can one process simulate 5,000 meters at a 5 s interval on one core?

Needs 5,000 / 5 s = 1,000 data messages/s (+ 167 status/s). Two measurements in the same run:

1. generation only: physics step + message dicts + JSON for the whole fleet (no network);
2. end to end: the real service (``enerlink.edge.service.run``) publishing at QoS 2 to a real broker
   (``ENERLINK_MQTT_URL``, default 127.0.0.1:1883) as fast as it can (a backfill, no waiting),
   messages acknowledged by the broker (QoS 2 PUBCOMP) per second.

CPU per message is this process's CPU time (user + system) divided by messages. The ratio printed
is achieved rate / required rate (>= 1.0 means one process keeps up).

    .venv/bin/python bench/edge.py [--meters 5000] [--steps 6]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from enerlink.config import Env
from enerlink.edge.service import run
from enerlink.edge.settings import Settings
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.fleet import generate
from enerlink.edge.sim.messages import data_messages, status_message
from enerlink.edge.sim.runner import FleetRunner

INTERVAL_S = 5.0
STATUS_S = 30.0


def generation(meters: int, steps: int) -> tuple[float, float]:
    sim = Simulator.create(generate(meters, seed=1))
    t0 = dt.datetime(2025, 6, 1, 4, tzinfo=dt.UTC).timestamp()
    sim.step(t0)  # warm the solar/load tables
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(1, steps + 1):
        step = sim.step(t0 + k * INTERVAL_S)
        for message in data_messages(sim, step, seqs=[k] * meters):
            orjson.dumps(message)
            count += 1
        if k % 6 == 0:
            for i in range(meters):
                orjson.dumps(status_message(sim, i, epoch_s=t0, uptime_ms=0, rng_value=0.5))
                count += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, cpu / count


async def end_to_end(meters: int, steps: int) -> tuple[float, float, int]:
    env = Env({**os.environ, "ENERLINK_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}/enerlink"})
    state = Path(tempfile.mkdtemp(prefix="enerlink-bench-"))
    start = dt.datetime(2025, 6, 1, 4, tzinfo=dt.UTC)
    settings = dataclasses.replace(
        Settings.from_env(env),
        meters=meters,
        seed=1,
        interval_s=INTERVAL_S,
        status_interval_s=STATUS_S,
        start=start,
        end=start + dt.timedelta(seconds=INTERVAL_S * (steps - 1)),
        state_dir=state,
        progress=False,
        commands=False,
        client_id=f"bench-{uuid.uuid4().hex[:6]}",
    )
    runners: list[FleetRunner] = []
    wall, cpu = time.perf_counter(), time.process_time()
    await run(settings, on_ready=runners.append)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    runner = runners[0]
    acknowledged = runner.pub.stats.published
    return acknowledged / wall, cpu / max(1, acknowledged), acknowledged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=6, help="steps of 5 s (6 = 30 s of fleet time)")
    args = parser.parse_args()
    required = args.meters / INTERVAL_S * (1 + INTERVAL_S / STATUS_S)
    gen_rate, gen_cpu = generation(args.meters, args.steps)
    pub_rate, pub_cpu, acked = asyncio.run(end_to_end(args.meters, args.steps))
    print(
        f"fleet: {args.meters} meters, data every {INTERVAL_S:.0f} s, status every {STATUS_S:.0f} s "
        f"-> required {required:,.0f} msg/s"
    )
    print(
        f"generated: {gen_rate:,.0f} msg/s, CPU {gen_cpu * 1e6:,.0f} us/msg, "
        f"ratio {gen_rate / required:.2f} x required"
    )
    print(
        f"published (QoS 2, acknowledged): {acked} msgs, {pub_rate:,.0f} msg/s, "
        f"CPU {pub_cpu * 1e6:,.0f} us/msg, ratio {pub_rate / required:.2f} x required"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
