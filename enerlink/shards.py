"""The fleet cut into aggregator shards: which meters a shard holds, in Python and in SQL.

A meter's shard is the first 28 bits of the MD5 of its id modulo the number of shards, computed the
same way by :func:`shard_of` and by the SQL function ``Tables.SHARD_OF`` (migration 0015), so a
statement can pick a shard's rows without a list of its meters. With one shard (the default) every
meter is in shard 0 and nothing is filtered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from enerlink.db import quote
from enerlink.schemas.wire import Tables


def shard_of(meter_id: str, shards: int) -> int:
    """The shard of ``meter_id`` among ``shards`` (``Tables.SHARD_OF`` in SQL)."""
    return int(hashlib.md5(meter_id.encode(), usedforsecurity=False).hexdigest()[:7], 16) % shards


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``: the meters it holds and the names of its state rows."""

    index: int = 0
    count: int = 1
    WHOLE: ClassVar[Shard]

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: must be within 0..{self.count - 1}")

    @property
    def whole(self) -> bool:
        """One shard: the whole fleet (no filter, the state rows under their plain names)."""
        return self.count == 1

    @property
    def first(self) -> bool:
        """Shard 0: it also does the fleet's duties (the ingest's event stream, completeness)."""
        return self.index == 0

    def owns(self, meter_id: str) -> bool:
        return self.whole or shard_of(meter_id, self.count) == self.index

    def sql_filter(self, column: str) -> str:
        """SQL condition: the meter id in ``column`` (already quoted or qualified) is this shard's."""
        if self.whole:
            return "true"
        return f"{quote(Tables.SHARD_OF)}({column}, {self.count}) = {self.index}"

    def row_name(self, name: str) -> str:
        """The name of this shard's row of a state kept under ``name`` (a watermark): ``name``
        itself for the whole fleet, ``name.K/N`` for shard K of N."""
        return name if self.whole else f"{name}.{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """For a log line after the service's name: nothing for the whole fleet, `` (shard K/N)``."""
        return "" if self.whole else f" ({self})"

    def __str__(self) -> str:
        return "the whole fleet" if self.whole else f"shard {self.index}/{self.count}"


Shard.WHOLE = Shard()
