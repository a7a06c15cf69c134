"""Seeing two clients that share one client id: the broker keeps handing the session back and forth.

When a second client connects with an id already connected, the broker closes the first one: an MQTT
5 broker says so with DISCONNECT reason code 0x8E *session taken over*; Mosquitto 2.0.11 just closes
the socket (its log: "Client <id> already connected, closing old connection"). Both clients then
reconnect at once, and each reconnect evicts the other, several times a second, for ever.

:class:`TakeoverWatch` counts those evictions: a 0x8E, or a connection the broker closed within
``short_s`` of accepting it. More than ``limit`` within ``window_s`` is a loop: it logs an ERROR
naming the id and asks the caller to wait a capped, jittered, exponentially growing delay before
reconnecting, so the pair settles into a bounded reconnect rate until an operator gives one of them
another id. A single broker restart or network cut is one eviction, far below the limit.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import aiomqtt

from enerlink.backoff import Backoff

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 0x8E


def disconnect_reason(exc: BaseException | None) -> int | None:
    """The MQTT reason code behind ``exc`` (searched through causes and exception groups)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc] if exc is not None else []
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, aiomqtt.MqttCodeError):
            code = getattr(current.rc, "value", current.rc)
            if isinstance(code, int):
                return code
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


@dataclass(slots=True)
class TakeoverWatch:
    """Counts *session taken over* disconnects of one client id; see the module docstring."""

    client_id: str
    setting: str = "the client id"
    limit: int = 3
    window_s: float = 60.0
    short_s: float = 5.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    takeovers: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def disconnected(self, exc: BaseException | None, *, uptime_s: float | None) -> float:
        """Record a lost connection (``uptime_s``: how long it was up, ``None`` if it never was);
        returns the extra delay (s) before reconnecting, 0 when there is no loop."""
        certain = disconnect_reason(exc) == SESSION_TAKEN_OVER
        if not certain and (uptime_s is None or uptime_s >= self.short_s):
            return 0.0
        self.takeovers += 1
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        if len(recent) <= self.limit:
            self.backoff.reset()  # no loop (any more)
            return 0.0
        delay = self.backoff.next_delay()
        evidence = (
            "reason 0x8E session taken over"
            if certain
            else f"each time within {self.short_s:.0f} s of accepting it, as a broker does when a second "
            "client connects with the same id"
        )
        log.error(
            "another client uses the same MQTT client id %r: the broker closed this connection %d times "
            "in %.0f s (%s). Give each client its own id (%s). Reconnecting in %.1f s (attempt %d)",
            self.client_id,
            len(recent),
            self.window_s,
            evidence,
            self.setting,
            delay,
            self.backoff.attempt,
        )
        return delay
