"""What one aggregation job did (:class:`JobReport`) and which minutes its catch-up pass wrote
(:class:`CaughtUp`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class JobReport:
    minutes: int = 0
    late_pairs: int = 0
    rows: int = 0
    bad: int = 0
    bad_status: int = 0
    events: int = 0
    behind_minutes: int = 0
    watermark: datetime | None = None
    #: a shard's job that did not run: "busy" (its shard still in a job elsewhere: try again shortly)
    #: or "layout" (the deployment's number of shards changed)
    skipped: str | None = None

    def add(self, other: JobReport) -> None:
        """Count ``other`` (another shard's job) in; the watermark is the older one."""
        for name in ("minutes", "late_pairs", "rows", "bad", "bad_status", "events", "behind_minutes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.watermark is not None:
            mark = self.watermark
            self.watermark = other.watermark if mark is None else min(mark, other.watermark)


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The minutes this job's catch-up pass wrote, [start, end), for the meters of ``fleet`` seen
    since each minute began (meterId -> last seen, epoch ms)."""

    start: int = 0
    end: int = 0
    fleet: dict[str, int] = field(default_factory=dict)

    def wrote(self, meter: str, minute: int) -> bool:
        return self.start <= minute < self.end and self.fleet.get(meter, -1) >= minute
