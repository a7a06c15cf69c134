"""``enerlink edge replay FILE.csv``: publish recorded telemetry (placeholder, filled in below)."""

from __future__ import annotations

from typing import Any


def configure(actions: Any) -> None:
    parser = actions.add_parser("replay", help="publish recorded telemetry from a CSV file")
    parser.add_argument("file")
    parser.set_defaults(_action=lambda args: 2)
