"""Run the chaos test several times with different seeds and print one table row per run.

    .venv/bin/python scripts/chaos_runs.py --runs 20              # seeds 1..20
    .venv/bin/python scripts/chaos_runs.py --seeds 7,41 --seconds 300 --meters 100

Each run is ``pytest -m system tests/system/test_chaos.py`` in its own process with
``ENERLINK_CHAOS_SEED`` set (and ``ENERLINK_CHAOS_SECONDS`` / ``ENERLINK_CHAOS_METERS`` when given);
the figures come from the summary the test prints. On demand only: twenty short runs take about an
hour and a half on two cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "published": r"messages published \(acked\)\s+(\d+)",
    "stored": r"stored in Redis\s+(\d+)",
    "aggregated": r"aggregated \(sum sample_count\)\s+(\d+)",
    "lost": r"^lost\s+(\d+)",
    "doubled": r"^duplicated\s+(\d+)",
    "seq missing": r"seqs missing from Redis\s+(\d+)",
    "seq twice": r"seqs stored twice\s+(\d+)",
    "repaired": r"ingest readings repaired\s+(\d+)",
    "re-sent asked": r"edge readings re-sent on request\s+(\d+)",
    "re-sent timer": r"edge readings re-sent unconfirmed\s+(\d+)",
}


def run_one(seed: int, *, seconds: int, meters: int, keep: bool) -> dict[str, str]:
    env = {**os.environ, "ENERLINK_CHAOS_SEED": str(seed)}
    if seconds:
        env["ENERLINK_CHAOS_SECONDS"] = str(seconds)
    if meters:
        env["ENERLINK_CHAOS_METERS"] = str(meters)
    if keep:
        env["ENERLINK_CHAOS_KEEP"] = "1"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/system/test_chaos.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    row = {"seed": str(seed), "result": "pass" if proc.returncode == 0 else f"FAIL ({proc.returncode})"}
    for name, pattern in FIELDS.items():
        match = re.search(pattern, out, re.MULTILINE)
        row[name] = match.group(1) if match else "-"
    row["minutes"] = f"{(time.monotonic() - started) / 60:.1f}"
    if proc.returncode != 0:
        log = ROOT / ".run" / f"chaos-{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(out, encoding="utf-8")
        row["result"] += f" {log.relative_to(ROOT)}"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seeds", help="comma-separated seeds (default 1..runs)")
    parser.add_argument("--seconds", type=int, default=0, help="ENERLINK_CHAOS_SECONDS (0: the short run)")
    parser.add_argument("--meters", type=int, default=0, help="ENERLINK_CHAOS_METERS (0: the default)")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(1, args.runs + 1))
    columns = ["seed", *FIELDS, "minutes", "result"]
    print(" | ".join(columns), flush=True)
    print(" | ".join("---" for _ in columns), flush=True)
    failures = 0
    for seed in seeds:
        row = run_one(seed, seconds=args.seconds, meters=args.meters, keep=args.keep)
        failures += row["result"] != "pass"
        print(" | ".join(row[c] for c in columns), flush=True)
    print(f"{len(seeds) - failures} of {len(seeds)} runs passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
