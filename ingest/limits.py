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

What it does not stop: a device inventing a different datetime for every message passes (its data
is then as wrong as its clock). With several workers in a shared group each applies the limit to
its own share, so the fleet-wide ceiling is ``rate`` x workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

MAX_TRACKED = 200_000  # (meter, second) pairs remembered; the oldest half is forgotten beyond it


@dataclass
class MeterLimiter:
    rate: int
    max_tracked: int = MAX_TRACKED
    _counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def admit(self, meter_id: str, at_ms: int) -> bool:
        """True when the message is within the limit (and count it)."""
        if self.rate <= 0:
            return True
        key = (meter_id, at_ms // 1000)
        seen = self._counts.get(key, 0)
        if seen >= self.rate:
            return False
        if not seen and len(self._counts) >= self.max_tracked:
            for old in list(islice(self._counts, self.max_tracked // 2)):
                del self._counts[old]
        self._counts[key] = seen + 1
        return True
