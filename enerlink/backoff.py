"""Capped, jittered exponential backoff for reconnects and retries."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: attempt n sleeps uniform(c/2, c) with c = min(cap, initial * 2**n).

    ``attempt`` counts consecutive failures (log it); :meth:`reset` after a success.
    """

    initial: float = 0.2
    cap: float = 30.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    async def sleep(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempt = 0
