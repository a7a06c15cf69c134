"""A batch the store script refuses: written in halves, down to the messages it refuses, each kept as a
dead letter instead (reason ``store_refused``), so one message Redis cannot take does not hold up the
messages beside it (the worker would otherwise retry the same batch for ever)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from enerlink.ingest.redis_store import BatchResult
from enerlink.ingest.validate import STORE_REFUSED, Measurement, Outcome, Rejection
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)

Write = Callable[[list[Outcome]], Awaitable[tuple[list[Outcome], BatchResult]]]


async def write_apart(
    write: Write, outcomes: list[Outcome], error: str, *, topics: Topics
) -> tuple[list[Outcome], BatchResult]:
    """``write`` (which comes back here for a refused part) over halves of ``outcomes``; returns the
    outcomes as written (refused ones replaced by their dead letters) and their flags."""
    if len(outcomes) > 1:
        half = len(outcomes) // 2
        first, a = await write(outcomes[:half])
        second, b = await write(outcomes[half:])
        merged = BatchResult(
            flags=a.flags + b.flags, seconds=a.seconds + b.seconds, given_up=a.given_up + b.given_up
        )
        return first + second, merged
    [item] = outcomes
    if isinstance(item, Rejection):  # even its dead letter is refused: nothing more to try
        log.error(
            "redis: the store script refuses the dead letter %s on %s: %s", item.reason, item.topic, error
        )
        return outcomes, BatchResult(flags=[0], seconds=0.0)
    meter = getattr(item, "meter_id", "?")
    log.error(
        "redis: the store script refuses a message of meter %s (%s); kept as a dead letter", meter, error
    )
    letter = Rejection(
        reason=STORE_REFUSED,
        detail=f"meter {meter}: {error}",
        topic=_topic(item, topics),
        payload=getattr(item, "payload", b""),
    )
    return await write([letter])


def _topic(item: Outcome, topics: Topics) -> str:
    if isinstance(item, Measurement):
        if item.kind == "status":
            return topics.status
        return topics.resent if item.resent else topics.data
    return ""
