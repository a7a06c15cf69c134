"""Random faults on a running :class:`~tests.support.chaos_stack.Stack`, on a seeded schedule.

Kinds (each a begin and an end action; different kinds may overlap, one kind never overlaps
itself):

* ``ingest_kill``: kill -9 of one ingest worker, restarted with the same client id 0.5-3 s later;
* ``aggregator_kill``: kill -9 of the aggregator, restarted 0.5-3 s later;
* ``broker_restart``: Mosquitto stopped (SIGTERM: sessions and queues saved) and started 1-3 s later;
* ``broker_kill_workers_down``: every ingest worker killed (kill -9), then Mosquitto killed (kill -9,
  with an autosave interval longer than the run: every session, queue and message it acknowledged is
  gone) and started again at once; the workers come back 3-8 s later. Meanwhile the broker
  acknowledges the fleet's messages and routes them to nobody (no subscription exists);
* ``broker_restart_workers_down``: the same with a clean broker restart (SIGTERM): Mosquitto 2.0 saves
  the workers' sessions but not their ``$share`` subscriptions, so it drops the fleet's messages too;
* ``redis_crash``: kill -9 of Redis, started 1-3 s later from its append-only file;
* ``pg_pause``: PostgreSQL stopped (fast shutdown) for ``pg_pause_s`` (20 s);
* ``edge_cut``: the fleet's link to the broker cut for ``edge_cut_s`` (30 s): the proxy is killed
  (connections reset, reconnects refused), or, in the long run, frozen (SIGSTOP: a silent network).

The short run injects each kind once at a random moment; the long run draws each kind's next
occurrence after a random gap (mean ``mean_gap_s``) until the window ends.
"""

from __future__ import annotations

import heapq
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.chaos_stack import Stack

log = logging.getLogger(__name__)

KINDS = (
    "ingest_kill",
    "aggregator_kill",
    "broker_restart",
    "broker_kill_workers_down",
    "broker_restart_workers_down",
    "redis_crash",
    "pg_pause",
    "edge_cut",
)
#: Kinds that take every ingest worker down: they never overlap each other or ``ingest_kill``.
_WORKERS_DOWN = ("broker_kill_workers_down", "broker_restart_workers_down")


@dataclass(frozen=True)
class FaultPlan:
    window_s: float
    """Faults begin and end inside [start_after_s, window_s]."""
    long: bool = False
    start_after_s: float = 5.0
    pg_pause_s: float = 20.0
    edge_cut_s: float = 30.0
    mean_gap_s: float = 90.0


@dataclass
class Fault:
    kind: str
    at: float
    duration: float
    detail: str = ""
    began: float | None = None
    ended: float | None = None


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    label: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


def _duration(kind: str, plan: FaultPlan, rng: random.Random) -> float:
    if kind == "pg_pause":
        return plan.pg_pause_s
    if kind == "edge_cut":
        return plan.edge_cut_s
    if kind in ("broker_restart", "redis_crash"):
        return rng.uniform(1.0, 3.0)
    if kind in _WORKERS_DOWN:
        return rng.uniform(3.0, 8.0)
    return rng.uniform(0.5, 3.0)


#: Kinds that stop or start the broker or ingest workers: never two of them at once (a worker or the
#: broker restarted by one while another keeps it down would run twice).
_EXCLUSIVE = ("ingest_kill", "broker_restart", *_WORKERS_DOWN)
_MARGIN_S = 2.0


def _free(faults: list[Fault], at: float, duration: float) -> bool:
    return all(
        at + duration + _MARGIN_S <= f.at or f.at + f.duration + _MARGIN_S <= at
        for f in faults
        if f.kind in _EXCLUSIVE
    )


def _place(faults: list[Fault], kind: str, at: float, duration: float, plan: FaultPlan) -> float | None:
    """``at``, or the first moment after it where an exclusive kind fits (None: none in the window)."""
    if kind not in _EXCLUSIVE:
        return at
    moment = at
    while moment + duration <= plan.window_s:
        if _free(faults, moment, duration):
            return moment
        moment += 0.5
    return None


def schedule(plan: FaultPlan, rng: random.Random, *, workers: int) -> list[Fault]:
    faults: list[Fault] = []
    for kind in KINDS:
        if plan.long:
            moment = plan.start_after_s + rng.expovariate(1.0 / plan.mean_gap_s)
            while True:
                duration = _duration(kind, plan, rng)
                placed = _place(faults, kind, moment, duration, plan)
                if placed is None or placed + duration > plan.window_s:
                    break
                faults.append(Fault(kind, placed, duration))
                moment = placed + duration + 5.0 + rng.expovariate(1.0 / plan.mean_gap_s)
        elif kind not in _EXCLUSIVE:
            duration = _duration(kind, plan, rng)
            latest = max(plan.start_after_s, plan.window_s - duration)
            faults.append(Fault(kind, rng.uniform(plan.start_after_s, latest), duration))
    if not plan.long:
        # one slot of the window each, in random order, so they never overlap
        order = list(_EXCLUSIVE)
        rng.shuffle(order)
        slot = (plan.window_s - plan.start_after_s) / len(order)
        for i, kind in enumerate(order):
            duration = _duration(kind, plan, rng)
            begin = plan.start_after_s + i * slot
            latest = max(begin, begin + slot - duration - _MARGIN_S)
            faults.append(Fault(kind, rng.uniform(begin, latest), duration))
    for fault in faults:
        if fault.kind == "ingest_kill":
            fault.detail = f"ingest-{rng.randrange(workers)}"
        elif fault.kind == "edge_cut":
            fault.detail = "freeze" if plan.long and rng.random() < 0.5 else "reset"
    return sorted(faults, key=lambda f: f.at)


class Chaos:
    """Runs a fault schedule against a stack; blocking (the stack's processes do the work)."""

    def __init__(self, stack: Stack, faults: list[Fault]) -> None:
        self.stack = stack
        self.faults = faults
        self._events: list[_Event] = []
        self._seq = 0
        self.down: set[str] = set()
        """Pipeline processes a fault keeps down right now (the supervisor leaves them alone)."""

    def _push(self, at: float, label: str, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, _Event(at, self._seq, label, action))

    def _actions(self, fault: Fault) -> tuple[Callable[[], object], Callable[[], object]]:
        stack = self.stack
        if fault.kind in ("ingest_kill", "aggregator_kill"):
            proc = stack.aggregator if fault.kind == "aggregator_kill" else stack.worker(fault.detail)

            def _kill() -> None:
                self.down.add(proc.name)
                proc.kill()

            def _restart() -> None:
                proc.start()
                self.down.discard(proc.name)

            return _kill, _restart
        if fault.kind == "broker_restart":
            return stack.broker.stop, stack.broker.start
        if fault.kind in _WORKERS_DOWN:
            sig = signal.SIGKILL if fault.kind == "broker_kill_workers_down" else signal.SIGTERM

            def _down() -> None:
                for worker in stack.workers:
                    self.down.add(worker.name)
                    worker.kill()
                stack.broker.restart(sig=sig, down_s=0.5)

            def _up() -> None:
                for worker in stack.workers:
                    worker.start()
                    self.down.discard(worker.name)

            return _down, _up
        if fault.kind == "redis_crash":
            return stack.redis.crash, stack.redis.start
        if fault.kind == "pg_pause":
            return stack.pg.stop, stack.pg.start
        if fault.kind == "edge_cut":
            if fault.detail == "freeze":
                return stack.proxy.freeze, stack.proxy.thaw
            return stack.proxy.cut, stack.proxy.start
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def run(self, *, t0: float, stop_early: Callable[[], bool] | None = None) -> list[Fault]:
        """Execute every fault (times relative to ``t0``, a ``time.monotonic()``); returns them with
        the moments they actually began and ended."""
        for fault in self.faults:
            begin, end = self._actions(fault)

            def _begin(f: Fault = fault, act: Callable[[], object] = begin) -> None:
                f.began = time.monotonic() - t0
                act()

            def _end(f: Fault = fault, act: Callable[[], object] = end) -> None:
                act()
                f.ended = time.monotonic() - t0

            self._push(t0 + fault.at, f"{fault.kind} {fault.detail} begin", _begin)
            self._push(t0 + fault.at + fault.duration, f"{fault.kind} {fault.detail} end", _end)
        while self._events:
            event = heapq.heappop(self._events)
            while (wait := event.at - time.monotonic()) > 0:
                if stop_early is not None and stop_early():
                    raise RuntimeError(f"stopped before {event.label}: the fleet exited early")
                self.stack.supervise(down=self.down)
                time.sleep(min(wait, 0.5))
            started = time.monotonic()
            event.action()
            log.info("chaos t=%.1f s: %s (%.1f s)", started - t0, event.label, time.monotonic() - started)
            print(f"chaos t={started - t0:6.1f} s: {event.label}", flush=True)
        return self.faults


def injected(faults: list[Fault]) -> Counter[str]:
    return Counter(f.kind for f in faults if f.ended is not None)
