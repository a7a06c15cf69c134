"""bench/redis_cluster.py with tiny numbers: the same stream stored whole into one server and into a
local Redis Cluster (the bench stops otherwise), and the per-message figures and ratios printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-u", str(ROOT / "bench" / "redis_cluster.py")]


def test_tiny_run_stores_everything_in_both_layouts_and_prints_the_ratios() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-u",
            str(ROOT / "bench" / "redis_cluster.py"),
            "--meters",
            "40",
            "--messages",
            "800",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "800 data messages of 40 meters, batches of 500" in out
    for label in ("one server", "cluster, 16 parts"):
        assert re.search(rf"^{label} +[\d.]+ us +[\d.]+ us +[\d.]+ us$", out, re.M), out
    assert re.search(r"^cluster / one server: +[\d.]+ x +[\d.]+ x +[\d.]+ x", out, re.M), out
