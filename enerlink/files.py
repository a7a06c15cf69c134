"""Files that must survive a power cut."""

from __future__ import annotations

import os
from pathlib import Path


def sync_dir(folder: Path) -> None:
    """fsync a folder: the names in it (a file just renamed into place) are on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
