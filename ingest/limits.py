"""Per-meter rate limit: a flooding device must not starve the rest of the fleet.

The limit is on *readings per second of the meter's own clock*: at most ``rate`` messages of one
meterId may carry a datetime within the same second (``ENERLINK_INGEST_METER_RATE``, default 20;
0 = off). A real meter reports every 5-10 s (status every 30-60 s), so legitimate traffic never comes
near it, and, unlike a limit on arrival rate, it never mistakes a backlog for a flood: a session
resumed after a worker outage, or an edge replaying its store-and-forward queue, delivers hours of
readings in seconds, but their datetimes are as far apart as when they were taken. A device stuck
in a loop (10,000 messages/s stamped with the current time, or the same message over and over) gets
``rate`` per second through; the rest is rejected with reason ``rate_limited`` before it reaches
Redis' per-message work, counted per meter (Redis hash ``{prefix}:rate_limited``, the
``enerlink_ingest_rejected{reason="rate_limited"}`` metric, ``{prefix}:rejected:counts``) and
dead-lettered as one stream entry per meter and batch (the first payload and the number dropped),
so the capped dead-letter stream is not flushed by a single device. Acknowledged, therefore
counted, never silently lost.

Memory: one entry per meter (the last second seen and its count), at most ``MAX_TRACKED`` meters.
What it does not stop: a device inventing a different datetime for every message (or alternating
between two) passes; its data is then as wrong as its clock. With several workers in a shared group
each applies the limit to its own share, so the fleet-wide ceiling is ``rate`` x workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

MAX_TRACKED = 100_000  # meters remembered (about 150 bytes each); the oldest half is forgotten beyond


@dataclass
class MeterLimiter:
    """Per meter, the last second of its clock seen and how many messages carried it."""

    rate: int
    max_tracked: int = MAX_TRACKED
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)

    def admit(self, meter_id: str, at_ms: int) -> bool:
        """True when the message is within the limit (and count it)."""
        if self.rate <= 0:
            return True
        second = at_ms // 1000
        last = self._last.get(meter_id)
        if last is not None and last[0] == second:
            if last[1] >= self.rate:
                return False
            self._last[meter_id] = (second, last[1] + 1)
            return True
        if last is None and len(self._last) >= self.max_tracked:
            for old in list(islice(self._last, self.max_tracked // 2)):
                del self._last[old]
        self._last[meter_id] = (second, 1)
        return True
