"""Simulated time: real time, faster (``--speed``), or a backfill range as fast as possible."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(slots=True)
class Clock:
    """Yields the simulated instants (epoch s) of each step.

    * ``backfill`` (``start`` and ``end``): start, start + interval, ... up to end, no waiting;
    * otherwise simulated time = ``start`` (default now) + elapsed wall time x ``speed``; steps fall
      on multiples of ``interval`` (tidy timestamps). When the publisher falls behind, steps are
      skipped rather than queued (``skipped`` counts them), so data stays current.
    """

    interval_s: float
    speed: float = 1.0
    start: float | None = None
    end: float | None = None
    skipped: int = 0
    _origin_wall: float = field(default=0.0)
    _origin_sim: float = field(default=0.0)

    @property
    def backfill(self) -> bool:
        return self.start is not None and self.end is not None

    def now(self) -> float:
        return self._origin_sim + (time.time() - self._origin_wall) * self.speed

    async def ticks(self) -> AsyncIterator[float]:
        if self.backfill:
            assert self.start is not None and self.end is not None
            count = math.floor((self.end - self.start) / self.interval_s) + 1
            for k in range(count):
                yield self.start + k * self.interval_s
                if k % 64 == 0:
                    await asyncio.sleep(0)
            return
        self._origin_wall = time.time()
        self._origin_sim = self.start if self.start is not None else self._origin_wall
        tick = math.ceil(self._origin_sim / self.interval_s) * self.interval_s
        while True:
            wait = (tick - self.now()) / self.speed
            if wait > 0:
                await asyncio.sleep(wait)
            yield tick
            following = tick + self.interval_s
            current = self.now()
            if current >= following + self.interval_s:  # fell more than a step behind
                behind = math.floor((current - following) / self.interval_s)
                self.skipped += behind
                following += behind * self.interval_s
            tick = following


@dataclass(slots=True)
class Progress:
    """A one-line progress bar for backfills (stderr when a terminal, else a log line per 10 %)."""

    total: int
    out: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    messages: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last_print: float = 0.0
    _last_decile: int = -1

    def update(self, *, steps: int = 1, messages: int = 0, label: str = "") -> None:
        self.done += steps
        self.messages += messages
        now = time.monotonic()
        fraction = self.done / max(1, self.total)
        tty = self.out.isatty()
        decile = int(fraction * 10)
        if tty and now - self._last_print < 0.5 and self.done < self.total:
            return
        if not tty and decile == self._last_decile and self.done < self.total:
            return
        self._last_print, self._last_decile = now, decile
        elapsed = max(now - self._started, 1e-9)
        rate = self.messages / elapsed
        eta = (elapsed / max(fraction, 1e-9)) * (1 - fraction)
        bar = "#" * int(fraction * 30)
        line = (
            f"backfill [{bar:<30}] {fraction * 100:5.1f}% {label} "
            f"{self.messages} msgs {rate:,.0f} msg/s eta {eta:,.0f} s"
        )
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=self.out, flush=True)
        if tty and self.done >= self.total:
            print(file=self.out, flush=True)
