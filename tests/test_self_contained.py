"""A clone of the repository alone runs its tests and benches: nothing in it reads outside the tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from enerlink.schemas.examples import DATA_EXAMPLE, STATUS_EXAMPLE
from enerlink.schemas.telemetry import DataMessage, StatusMessage

ROOT = Path(__file__).resolve().parents[1]
# A path that climbs out of the repository to a sibling folder, in code or scripts.
SCANNED = {".py", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini", ""}
OUTSIDE = re.compile(r"""(\.\./shared|parent\s*/\s*["']shared["'])""")


def test_examples_are_the_firmware_messages_and_validate() -> None:
    assert DataMessage.model_validate_json(DATA_EXAMPLE.read_bytes()).meterId
    assert StatusMessage.model_validate_json(STATUS_EXAMPLE.read_bytes()).meterId


def test_no_tracked_file_reads_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix not in SCANNED or not path.is_file():
            continue
        if name == "tests/test_self_contained.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == [], f"files that read outside the repository: {offenders}"
