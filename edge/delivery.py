"""The meter's side of end-to-end delivery (:mod:`enerlink.schemas.delivery`), over :class:`ReadingsLog` and
the
publisher, shared by the simulated fleet and the hardware edge.

* **Confirmations** (``Topics.confirm(meter)``, retained, QoS 1): every logged ``seq <= through`` and
  in ``ranges`` is marked confirmed (those arriving within :data:`CONFIRM_BATCH_S` in one
  transaction). A confirmation naming seqs above the meter's highest logged seq is stale (from before
  a re-flash reset ``seq``): the parts above are ignored, the rest confirms only rows logged before
  its ``at``, and it is counted. Malformed or naming another meter: counted, logged once per kind,
  ignored.
* **Resend requests** (``{"cmd": "resend", "ranges": [[a, b], ...], "id": ...}`` on the meter's
  command topic): queued (at most ``pending_limit``), served one at a time: the stored bytes are
  republished unchanged on ``Topics.resent`` at the shared bounded rate, then the ack goes out on
  ``Topics.command_ack(meter)`` with a :class:`ResendResult` (``not_held``: requested seqs the log does
  not hold, never issued or pruned). A malformed or oversized request, or a full queue, is answered
  ``ok: false`` at once and counted.
* **Own re-sends**: unconfirmed rows older than ``resend_after_s`` are republished on
  ``Topics.resent``, each row's next try doubling up to ``resend_max_backoff_s``. The timer waits
  while the broker is unreachable or the store-and-forward queue holds a backlog (which is the same
  readings on their way).

Re-sends on request and by the timer share one pace (``resend_rate`` messages/s) and go through the
publisher's QoS 2 window like live messages, so live publishing keeps its share.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Container
from typing import Any

import orjson
from pydantic import ValidationError

from enerlink.edge.publisher import Publisher
from enerlink.edge.readings_log import Confirm, Logged, ReadingsLog
from enerlink.schemas.delivery import (
    MAX_RESEND_READINGS,
    RESEND_COMMAND,
    Confirmation,
    ResendCommand,
    ResendResult,
    SeqRanges,
    resend_size,
)
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0
TIMER_BATCH = 100
CONFIRM_BATCH_S = 0.1
FIRST_ROUND_S = 1.0


def iso(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(round(epoch_s, 3), dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_resend(payload: bytes) -> bool:
    """Whether a command payload is a resend request (to route it here, whatever else is wrong)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("cmd") == RESEND_COMMAND


class Pace:
    """At most ``rate`` takes per second across every caller (0 or less: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def take(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        wait = self._next - now
        self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class Delivery:
    def __init__(
        self,
        *,
        log: ReadingsLog,
        pub: Publisher,
        topics: Topics,
        meters: Container[str],
        clock: Callable[[], float] = time.time,
        rate: float | None = None,
        pending_limit: int = 16,
    ) -> None:
        self.log = log
        self.pub = pub
        self.topics = topics
        self.meters = meters
        self.clock = clock
        self.pace = Pace(log.settings.resend_rate if rate is None else rate)
        self.pending_limit = max(1, pending_limit)
        self._requests: asyncio.Queue[tuple[str, ResendCommand]] = asyncio.Queue()
        self._confirmations: list[Confirm] = []
        self._confirmed = asyncio.Event()
        self._warned: set[str] = set()

    # --- confirmations --------------------------------------------------------------------------

    def confirm_meter(self, topic: str) -> str | None:
        """The meter a confirmation topic names, or None when ``topic`` is not one."""
        return self.topics.meter_of(topic, "confirm")

    def on_confirmation(self, topic: str, payload: bytes) -> bool:
        """Check one confirmation and queue it for :meth:`apply_confirmations` (one transaction for
        all that arrived meanwhile); False when it is ignored. Never raises on bad input."""
        meter_id = self.confirm_meter(topic)
        ours = meter_id is not None and (meter_id in self.meters or self.log.highest(meter_id) > 0)
        if meter_id is None or not ours or not payload:
            # another fleet's meter (one that left this fleet still has readings in the log to
            # confirm), or a retained confirmation being cleared
            return False
        try:
            confirmation = Confirmation.model_validate_json(payload)
        except ValidationError as exc:
            self._invalid("malformed", f"{topic}: {exc.errors()[0]['msg']}")
            return False
        if confirmation.meterId != meter_id:
            self._invalid("foreign", f"{topic} carries meterId {confirmation.meterId!r}")
            return False
        highest = self.log.highest(meter_id)
        through, ranges = confirmation.through, list(confirmation.ranges)
        before_ms: int | None = None
        if through > highest or any(last > highest for _, last in ranges):
            self._invalid("stale", f"{topic} names seqs above {highest}, the highest issued")
            through = min(through, highest)
            ranges = [(first, min(last, highest)) for first, last in ranges if first <= highest]
            before_ms = int(confirmation.at.timestamp() * 1000)
        self._confirmations.append(Confirm(meter_id, through, tuple(ranges), before_ms))
        self._confirmed.set()
        return True

    def apply_confirmations(self) -> int:
        """Mark what the queued confirmations name; returns the rows confirmed."""
        pending, self._confirmations = self._confirmations, []
        self._confirmed.clear()
        if not pending:
            return 0
        started = time.perf_counter()
        changed = self.log.confirm_many(pending)
        elapsed = time.perf_counter() - started
        log.debug("%d confirmations marked %d readings in %.3f s", len(pending), changed, elapsed)
        return changed

    def _invalid(self, kind: str, detail: str) -> None:
        counts = self.log.stats.invalid_confirmations
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("ignored a %s confirmation (%s); further ones are only counted", kind, detail)

    # --- resend requests ------------------------------------------------------------------------

    async def request(self, meter_id: str, payload: bytes) -> None:
        """Take one resend request: queue it, or answer ``ok: false`` at once."""
        try:
            command = ResendCommand.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            await self._reject(meter_id, payload, "invalid", f"{where}: {first['msg']}")
            return
        size = resend_size(command.ranges)
        if size > MAX_RESEND_READINGS:
            await self._reject(
                meter_id, payload, "oversized", f"asks for {size} readings, at most {MAX_RESEND_READINGS}"
            )
            return
        if self._requests.qsize() >= self.pending_limit:
            await self._reject(
                meter_id, payload, "busy", f"{self._requests.qsize()} resend requests pending; ask later"
            )
            return
        self._requests.put_nowait((meter_id, command))

    async def _reject(self, meter_id: str, payload: bytes, reason: str, error: str) -> None:
        self._count_request(reason)
        log.warning("resend request for %s rejected (%s): %s", meter_id, reason, error)
        request_id: Any = None
        try:
            body = orjson.loads(payload)
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                request_id = body["id"][:128]
        except orjson.JSONDecodeError:
            pass
        await self._ack(meter_id, request_id, {"ok": False, "error": error})

    def _count_request(self, outcome: str) -> None:
        counts = self.log.stats.resend_requests
        counts[outcome] = counts.get(outcome, 0) + 1

    async def _ack(self, meter_id: str, request_id: str | None, outcome: dict[str, Any]) -> None:
        body: dict[str, Any] = {"meterId": meter_id, "datetime": iso(self.clock()), "cmd": RESEND_COMMAND}
        if request_id is not None:
            body["id"] = request_id
        body.update(outcome)
        await self.pub.publish(self.topics.command_ack(meter_id), orjson.dumps(body))

    async def serve(self, meter_id: str, command: ResendCommand) -> ResendResult:
        """Republish what the log holds of the request's ranges; returns the ack's result."""
        held = SeqRanges()
        for first, last in command.ranges:
            for row in self.log.held(meter_id, first, last):
                await self.pace.take()
                await self.pub.publish(self.topics.resent, row.payload)
                held.add(row.seq)
        missing: list[tuple[int, int]] = []
        for first, last in command.ranges:
            missing += held.missing_from(first, last)
        result = ResendResult(resent=held.count(), not_held=missing)
        self.log.stats.resent_request += result.resent
        self.log.stats.not_held += SeqRanges(missing).count()
        return result

    async def _serve_requests(self) -> None:
        while True:
            meter_id, command = await self._requests.get()
            started = time.perf_counter()
            try:
                result = await self.serve(meter_id, command)
            except Exception:  # one boundary per request: log, count, answer, move on
                log.exception("resend request %s for %s failed", command.id, meter_id)
                self._count_request("failed")
                await self._ack(meter_id, command.id, {"ok": False, "error": "the meter failed to resend"})
                continue
            self._count_request("ok")
            await self._ack(meter_id, command.id, {"ok": True, "result": result.model_dump(mode="json")})
            log.info(
                "resend request %s for %s: %d resent, not held %s, in %.2f s",
                command.id,
                meter_id,
                result.resent,
                result.not_held,
                time.perf_counter() - started,
            )

    # --- own re-sends and pruning ---------------------------------------------------------------

    async def resend_due(self) -> int:
        """One round of the timer: republish due unconfirmed rows (at most :data:`TIMER_BATCH`)."""
        if not self.pub.connected or self.pub.stats.queued > 0:
            return 0
        self.apply_confirmations()  # what arrived meanwhile is not due any more
        sent: list[Logged] = []
        started = time.perf_counter()
        for row in self.log.due(limit=TIMER_BATCH):
            if not self.pub.connected:
                break
            await self.pace.take()
            await self.pub.publish(self.topics.resent, row.payload)
            sent.append(row)
        self.log.mark_resent(sent)
        if sent:
            self.log.stats.resent_timer += len(sent)
            log.info(
                "re-sent %d unconfirmed readings in %.2f s (%d unconfirmed in the log)",
                len(sent),
                time.perf_counter() - started,
                self.log.stats.unconfirmed,
            )
        return len(sent)

    async def _resend_timer(self) -> None:
        period = min(5.0, max(0.1, self.log.settings.resend_after_s / 4))
        await asyncio.sleep(max(period, FIRST_ROUND_S))  # the retained confirmations land first
        sent = 0
        while True:
            if not sent:
                await asyncio.sleep(period)
            try:
                sent = await self.resend_due()
            except Exception:  # one boundary per round (a full disk, a bug): log, count, carry on
                log.exception("re-sending unconfirmed readings failed")
                self.log.stats.errors += 1
                sent = 0

    async def _apply_confirmations(self) -> None:
        while True:
            await self._confirmed.wait()
            await asyncio.sleep(CONFIRM_BATCH_S)  # gather what arrives meanwhile into one transaction
            try:
                self.apply_confirmations()
            except Exception:
                log.exception("applying confirmations failed")
                self.log.stats.errors += 1

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(min(PRUNE_EVERY_S, max(1.0, self.log.settings.keep_s / 10)))
            try:
                self.log.prune()
            except Exception:
                log.exception("pruning the delivery log failed")
                self.log.stats.errors += 1

    async def run(self) -> None:
        """Serve resend requests, re-send unconfirmed readings and prune the log until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._apply_confirmations(), name="edge-confirmations")
            group.create_task(self._serve_requests(), name="edge-resend-requests")
            group.create_task(self._resend_timer(), name="edge-resend-timer")
            group.create_task(self._prune(), name="edge-log-prune")
