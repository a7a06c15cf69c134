"""The firmware's own messages, one per topic, kept byte for byte (the payload contract's examples)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
DATA_EXAMPLE = EXAMPLES_DIR / "meter-data.json"
STATUS_EXAMPLE = EXAMPLES_DIR / "meter-status.json"

__all__ = ["DATA_EXAMPLE", "EXAMPLES_DIR", "STATUS_EXAMPLE"]
