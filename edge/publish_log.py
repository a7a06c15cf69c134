"""The fleet's own record of what the broker acknowledged (``ENERLINK_EDGE_PUBLISH_LOG``).

One CSV line ``meterId,datetime,seq`` is appended for every data message whose QoS 2 exchange
completed (PUBCOMP received), live or replayed from the store-and-forward queue, so an end-to-end
check can compare "what the meters delivered" with what reached PostgreSQL. Status and presence
messages are not recorded. Lines are buffered and flushed every ``flush_every`` lines and on
close: a clean stop (SIGTERM) leaves a complete log, a kill -9 of the fleet may lose the tail.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import orjson

log = logging.getLogger(__name__)


class PublishLog:
    """Appends ``meterId,datetime,seq`` per acknowledged data message on ``data_topic``."""

    def __init__(self, path: Path, *, data_topic: str, flush_every: int = 200) -> None:
        self.path = path
        self.data_topic = data_topic
        self.flush_every = max(1, flush_every)
        self.recorded = 0
        self.unreadable = 0
        self._file: IO[str] | None = None
        self._pending = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        log.info("publish log %s: %d data messages recorded", self.path, self.recorded)

    def record(self, topic: str, payload: bytes) -> None:
        """Called by the publisher once the broker acknowledged ``payload`` on ``topic``."""
        if topic != self.data_topic or self._file is None:
            return
        try:
            message = orjson.loads(payload)
            line = f"{message['meterId']},{message['datetime']},{message.get('seq', '')}\n"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            log.warning("publish log: acknowledged data message without meterId/datetime")
            return
        self._file.write(line)
        self.recorded += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self._file.flush()
            self._pending = 0
