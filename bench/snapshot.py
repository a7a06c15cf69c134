"""Encoding the compact stored snapshot against reading the same messages with orjson, in the same run.

    .venv/bin/python bench/snapshot.py [--meters 100] [--steps 60] [--repeats 15]

The simulated fleet's data messages (``--meters`` meters, ``--steps`` readings each, 5 s apart, with
their sequence numbers and millisecond datetimes as the edge sends them) in batches of ``--meters``
(the ingest encodes each batch it writes with :func:`enerlink.schemas.snapshot.encode_snapshots`). Each repeat
times, one after the other, ``orjson.loads`` of every message (the floor: what any reader of the
message pays) and the encoding of every batch, then the decoding of every member
(:func:`enerlink.schemas.snapshot.decode_snapshot`, the JSON back); it prints the medians over the
repeats in us per message and as a ratio to the floor of the same repeat (a ratio means the same on a busier
machine). The members' mean size is printed too (``bench/footprint.py`` measures what Redis keeps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enerlink.edge.sim.engine import Simulator  # noqa: E402
from enerlink.edge.sim.fleet import generate  # noqa: E402
from enerlink.edge.sim.messages import data_messages  # noqa: E402
from enerlink.schemas.snapshot import decode_snapshot, encode_snapshots  # noqa: E402


def fleet_batches(meters: int, steps: int) -> list[list[bytes]]:
    sim = Simulator.create(generate(meters, seed=7))
    t0 = datetime(2026, 12, 6, 5, tzinfo=UTC).timestamp()
    sim.step(t0)
    batches = []
    for k in range(1, steps + 1):
        at = t0 + k * 5.0
        step = sim.step(at)
        batch = []
        for i, message in enumerate(data_messages(sim, step, seqs=[k] * meters)):
            # a meter's clock: its own milliseconds (the simulator stamps whole seconds)
            stamp = datetime.fromtimestamp(at + (i % 1000) / 1000, UTC)
            message["datetime"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            batch.append(orjson.dumps(message))
        batches.append(batch)
    return batches


def _us_per_message(run: object, count: int) -> float:
    started = time.process_time()
    run()  # type: ignore[operator]
    return (time.process_time() - started) * 1e6 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100, help="messages per batch")
    parser.add_argument("--steps", type=int, default=60, help="batches")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    batches = fleet_batches(args.meters, args.steps)
    count = sum(map(len, batches))
    members = [encode_snapshots(batch) for batch in batches]
    flat = [m for batch in members for m in batch]
    floor, encode, decode = [], [], []
    for _ in range(args.repeats):
        floor.append(_us_per_message(lambda: [orjson.loads(p) for b in batches for p in b], count))
        encode.append(_us_per_message(lambda: [encode_snapshots(b) for b in batches], count))
        decode.append(_us_per_message(lambda: [decode_snapshot(m) for m in flat], count))
    print(f"messages           {count} ({args.steps} batches of {args.meters}), {args.repeats} repeats")
    print(f"floor              {statistics.median(floor):.1f} us per message (orjson.loads)")
    for name, values in (("encode", encode), ("decode", decode)):
        ratios = [v / f for v, f in zip(values, floor, strict=True)]
        print(
            f"{name:18s} {statistics.median(values):.1f} us per message, "
            f"{statistics.median(ratios):.1f}x the floor"
        )
    print(f"member             {np.mean([len(m) for m in flat]):.1f} bytes on average")


if __name__ == "__main__":
    main()
