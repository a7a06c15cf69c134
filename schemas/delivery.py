"""The end-to-end delivery contract: confirmations to meters, resend requests, and ranges of ``seq``.

A meter keeps every data message it published, with its ``seq``, until the pipeline confirms it
stored it (and for a replay window after that). The pipeline:

* **confirms** on the meter's own topic ``Topics.confirm(meter)`` (retained, QoS 1), at most once per
  meter every few seconds, with a :class:`Confirmation`: ``through`` (every ``seq`` from 1 to it is
  stored, or was declared not held by the meter) and ``ranges`` (the same beyond a gap);
* **asks for gaps** with a ``resend`` command on ``Topics.command(meter)`` (:class:`ResendCommand`);
  the meter republishes exactly the stored bytes on ``Topics.resent`` and acknowledges on
  ``Topics.command_ack(meter)`` with a :class:`ResendResult` in the usual command ack, naming the
  ranges it does not hold (never issued, or expired from its log), which the pipeline stops asking for.

Ranges are inclusive ``[first, last]`` pairs of positive integers, ascending and disjoint.
:class:`SeqRanges` is the one implementation of range arithmetic that both sides use.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from enerlink.schemas.telemetry import MeterId

#: Most ranges a confirmation lists beyond ``through`` (the newest ones are kept).
MAX_CONFIRM_RANGES = 64
#: Most ranges one resend request may name, and most readings it may ask for in all.
MAX_RESEND_RANGES = 16
MAX_RESEND_READINGS = 2000
#: The largest ``seq`` (the largest integer every JSON parser reads exactly).
MAX_SEQ = 2**53
#: The ``cmd`` value of a resend request.
RESEND_COMMAND: Literal["resend"] = "resend"

Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
Range = tuple[Seq, Seq]


def _check_ranges(ranges: list[Range]) -> list[Range]:
    previous = 0
    for first, last in ranges:
        if first > last:
            raise ValueError(f"range [{first}, {last}] ends before it starts")
        if first <= previous:
            raise ValueError("ranges must be ascending and disjoint")
        previous = last
    return ranges


Ranges = Annotated[list[Range], AfterValidator(_check_ranges)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Confirmation(_Contract):
    """Pipeline -> meter on ``Topics.confirm(meter)``: what is durably stored."""

    meterId: MeterId
    through: int = Field(ge=0, le=MAX_SEQ)
    """Every ``seq`` in 1..through is stored (or the meter said it does not hold it)."""
    ranges: Ranges = Field(default_factory=list, max_length=MAX_CONFIRM_RANGES)
    """Ranges beyond ``through`` that are stored or that the meter said it does not hold (each starts
    above ``through + 1``)."""
    at: datetime
    """When the pipeline sent it (ISO 8601 with a timezone)."""


class ResendCommand(_Contract):
    """Pipeline -> meter on ``Topics.command(meter)``: republish these stored readings."""

    cmd: Literal["resend"] = RESEND_COMMAND
    ranges: Ranges = Field(min_length=1, max_length=MAX_RESEND_RANGES)
    id: str | None = Field(default=None, max_length=128)


class ResendResult(_Contract):
    """The ``result`` of a meter's ack to a resend request (``ok: true``)."""

    resent: int = Field(ge=0)
    """Readings republished on ``Topics.resent``."""
    not_held: Ranges = Field(default_factory=list)
    """Requested ranges the meter does not hold (never issued, or expired from its log)."""


def resend_size(ranges: Sequence[Range]) -> int:
    return sum(last - first + 1 for first, last in ranges)


class SeqRanges:
    """A set of positive integers kept as sorted, disjoint, non-adjacent inclusive ranges."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[list[int]] = []
        for first, last in ranges:
            self.add_range(first, last)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((a, b) for a, b in self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        return any(a <= seq <= b for a, b in self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqRanges) and self._ranges == other._ranges

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SeqRanges({self.to_list()!r})"

    def count(self) -> int:
        return sum(b - a + 1 for a, b in self._ranges)

    def to_list(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self._ranges]

    def add(self, seq: int) -> None:
        self.add_range(seq, seq)

    def add_range(self, first: int, last: int) -> None:
        if first > last:
            raise ValueError(f"range [{first}, {last}] ends before it starts")
        merged: list[list[int]] = []
        placed = False
        for a, b in self._ranges:
            if b + 1 < first:
                merged.append([a, b])
            elif last + 1 < a:
                if not placed:
                    merged.append([first, last])
                    placed = True
                merged.append([a, b])
            else:
                first, last = min(a, first), max(b, last)
        if not placed:
            merged.append([first, last])
        self._ranges = merged

    def through(self) -> int:
        """The largest ``n`` with every integer 1..n in the set (0 if 1 is missing)."""
        if self._ranges and self._ranges[0][0] == 1:
            return self._ranges[0][1]
        return 0

    def holes(self) -> list[tuple[int, int]]:
        """The ranges missing between the first and the last range, oldest first."""
        return [(b + 1, a2 - 1) for (_, b), (a2, _) in itertools.pairwise(self._ranges)]

    def intersection(self, first: int, last: int) -> list[tuple[int, int]]:
        """The parts of ``[first, last]`` in the set."""
        return [(max(a, first), min(b, last)) for a, b in self._ranges if a <= last and b >= first]

    def missing_from(self, first: int, last: int) -> list[tuple[int, int]]:
        """The parts of ``[first, last]`` not in the set."""
        out: list[tuple[int, int]] = []
        cursor = first
        for a, b in self.intersection(first, last):
            if a > cursor:
                out.append((cursor, a - 1))
            cursor = b + 1
        if cursor <= last:
            out.append((cursor, last))
        return out
