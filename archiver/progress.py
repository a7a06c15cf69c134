"""Console progress for long archive runs: a live line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    """Rows and MB per second of one (table, month); throttled, cheap to call per chunk."""

    def __init__(self, label: str, *, interactive: bool, every_s: float | None = None) -> None:
        self._label = label
        self._interactive = interactive
        self._every = every_s if every_s is not None else (0.5 if interactive else 10.0)
        self._started = time.monotonic()
        self._last = self._started
        self._rows = 0
        self._raw = 0
        self._drawn = False

    def update(self, *, raw_bytes: int, rows: int) -> None:
        self._raw = raw_bytes
        self._rows += rows
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        text = (
            f"{self._label}: {self._rows:,} rows, {self._raw / 1e6:,.1f} MB"
            f" ({self._rows / elapsed:,.0f} rows/s, {self._raw / 1e6 / elapsed:,.1f} MB/s)"
        )
        if self._interactive:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
            self._drawn = True
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
