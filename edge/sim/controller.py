"""The live simulated fleet as a controller: started and stopped over MQTT
(:mod:`enerlink.schemas.simulation`).

The process stays connected whether its meters run or not, listens on ``{prefix}/fleet/cmd`` and
publishes its :class:`~enerlink.schemas.simulation.FleetState` retained on ``{prefix}/fleet/state``.

* **stop**: the current step finishes, the meters' retained presence becomes ``{"online": false}``,
  their state is saved (:mod:`enerlink.edge.sim.state`); stopped meters answer no meter command (they
  are off).
* **start**: the meters' presence becomes ``{"online": true}`` and they publish again. Counters, battery
  and ``seq`` continue where they stopped: the simulator is kept in memory across stop/start, and a
  fleet of another size is rebuilt from the state file (each meter matched by id). A process
  restarted continues from that file too (saved every ``ENERLINK_SIM_SAVE_EVERY`` seconds and on
  every stop and exit). The time a meter was stopped is not measured: the first step after a start
  adds no energy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
import numpy as np
import orjson
from pydantic import ValidationError

from enerlink.edge.readings_log import resume_seqs
from enerlink.edge.settings import Settings
from enerlink.edge.sim.clock import Clock
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.messages import iso
from enerlink.edge.sim.runner import FleetRunner
from enerlink.edge.sim.scenarios import ACTIVE_SCENARIOS
from enerlink.schemas.simulation import FleetCommand, FleetState, SimulationParams
from enerlink.schemas.wire import Topics

log = logging.getLogger(__name__)

BuildSimulator = Callable[[int], Simulator]
"""Builds the simulator of a fleet of N meters (generated; a fleet file has one size)."""


def _command_id(payload: bytes) -> str | None:
    """The ``id`` of a command that did not validate, so its refusal can still be matched."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value[:128] if isinstance(value, str) else None


@dataclass(slots=True)
class FleetController:
    runner: FleetRunner
    build: BuildSimulator
    group: asyncio.TaskGroup
    fixed_size: bool = False
    """The fleet comes from a file: its size cannot be changed by a start."""
    state_every_s: float = 1.0
    running: bool = False
    since: float = field(default_factory=time.time)
    refused: int = 0
    _clock: Clock | None = None
    _ticks: asyncio.Task[None] | None = None
    _stepping: asyncio.Lock = field(default_factory=asyncio.Lock)
    _announced: float = 0.0

    @property
    def topics(self) -> Topics:
        return self.runner.settings.common.topics

    def now(self) -> float:
        """Simulated time of the current run (wall time while stopped or before its first step)."""
        if self._clock is None or not self.running or self.runner.sim.last_epoch is None:
            return time.time()
        return self._clock.now()

    def state(
        self, *, online: bool = True, command_id: str | None = None, error: str | None = None
    ) -> FleetState:
        runner, settings = self.runner, self.runner.settings
        board = runner.sim.scenarios
        counts = board.active.sum(axis=1).tolist()
        return FleetState(
            online=online,
            running=self.running,
            meters=runner.sim.size,
            interval_s=settings.interval_s,
            speed=settings.speed,
            scenarios={name: int(n) for name, n in zip(ACTIVE_SCENARIOS, counts, strict=True) if n},
            messages_sent=runner.published,
            status_sent=runner.statuses,
            fleet=fleet_label(settings),
            client_id=settings.client_id,
            since=iso(self.since),
            updated=iso(time.time()),
            id=command_id,
            error=error,
        )

    async def announce(
        self, *, online: bool = True, command_id: str | None = None, error: str | None = None
    ) -> None:
        """Publish the state, retained (skipped while disconnected: it is published on connecting)."""
        self._announced = time.monotonic()
        if not self.runner.pub.connected:
            return
        payload = self.state(online=online, command_id=command_id, error=error).model_dump_json()
        await self.runner.pub.publish(self.topics.fleet_state, payload.encode(), retain=True)

    async def handle(self, payload: bytes) -> None:
        """One message on the fleet command topic; a bad or refused one is answered with ``error``."""
        try:
            command = FleetCommand.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            await self._refuse(_command_id(payload), f"{where}: {first['msg']}")
            return
        error: str | None = None
        if command.cmd == "start":
            error = await self.start(command)
        else:
            await self.stop()
        if error is not None:
            await self._refuse(command.id, error)
            return
        log.info(
            "fleet %s: %d meters %s",
            command.cmd,
            self.runner.sim.size,
            "running" if self.running else "stopped",
        )
        await self.announce(command_id=command.id)

    async def _refuse(self, command_id: str | None, error: str) -> None:
        self.refused += 1
        self.runner.metrics.commands.labels("fleet_rejected").inc()
        log.warning("fleet command refused: %s", error)
        await self.announce(command_id=command_id, error=error)

    def _wanted(self, params: SimulationParams | None) -> tuple[int, float, float]:
        settings, size = self.runner.settings, self.runner.sim.size
        if params is None:
            return size, settings.interval_s, settings.speed
        return (
            params.meters if params.meters is not None else size,
            params.interval_s if params.interval_s is not None else settings.interval_s,
            params.speed if params.speed is not None else settings.speed,
        )

    async def start(self, params: SimulationParams | None = None) -> str | None:
        """Run the meters (a no-op when they run with these parameters); the refusal, if any."""
        runner = self.runner
        meters, interval_s, speed = wanted = self._wanted(params)
        current = (runner.sim.size, runner.settings.interval_s, runner.settings.speed)
        if self.running:
            if wanted == current:
                return None
            return (
                f"already running with meters={current[0]}, interval_s={current[1]:g}, speed={current[2]:g};"
                " stop it first to change them"
            )
        if meters != runner.sim.size:
            if self.fixed_size:
                return (
                    f"the fleet file {runner.settings.fleet_file} has {runner.sim.size} meters;"
                    " meters cannot change"
                )
            await self._resize(meters)
        runner.settings = dataclasses.replace(
            runner.settings, meters=meters, interval_s=interval_s, speed=speed
        )
        runner.sim.last_epoch = None  # the time the meters were off is not measured
        self._clock = Clock(interval_s=interval_s, speed=speed)
        await runner.presence(True)
        self.running, self.since = True, time.time()
        self._ticks = self.group.create_task(self._tick_loop(self._clock), name="sim-ticks")
        return None

    async def stop(self) -> None:
        """Stop the meters after the step under way: presence offline, state saved (no-op if stopped)."""
        task = self._ticks
        if not self.running or task is None:
            return
        async with self._stepping:  # between steps: no meter is left half published
            task.cancel()
        await asyncio.wait([task])
        self._ticks = None
        self.running, self.since = False, time.time()
        await self.runner.presence(False)
        await asyncio.to_thread(self.runner.save)

    async def _resize(self, meters: int) -> None:
        runner = self.runner
        await asyncio.to_thread(runner.save)  # the meters leaving keep their state in the file
        sim = self.build(meters)
        seqs = np.zeros(sim.size, dtype=np.int64)
        restored = await asyncio.to_thread(runner.store.restore, sim, seqs)
        if runner.readings is not None:
            resume_seqs(runner.readings, sim.fleet.ids, seqs)
        if runner.delivery is not None:
            runner.delivery.meters = sim.index
        runner.sim, runner.seqs = sim, seqs
        runner.metrics.meters.set(sim.size)
        log.info("fleet resized to %d meters (state of %d restored)", sim.size, restored)

    async def _tick_loop(self, clock: Clock) -> None:
        runner = self.runner
        last_save = time.monotonic()
        async for epoch_s in clock.ticks():
            async with self._stepping:
                await runner.step(epoch_s)
                runner.metrics.skipped.set(clock.skipped)
                if time.monotonic() - last_save >= runner.settings.save_every_s:
                    await asyncio.to_thread(runner.save)
                    last_save = time.monotonic()
                if time.monotonic() - self._announced >= self.state_every_s:
                    await self.announce()


async def control_loop(controller: FleetController) -> None:
    """Every message the fleet connection receives: fleet commands, and meter commands while running
    (stopped meters are off and answer nothing)."""
    runner = controller.runner
    fleet_topic = controller.topics.fleet_command
    async for message in runner.pub.messages():
        try:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            if str(message.topic) == fleet_topic:
                await controller.handle(bytes(payload))
            elif runner.delivery is not None and runner.delivery.confirm_meter(str(message.topic)):
                runner.delivery.on_confirmation(str(message.topic), bytes(payload))  # also while stopped
            elif controller.running:
                await runner.command(message, controller.now())
        except Exception:  # one boundary per message: log, count, move on
            runner.commands_failed += 1
            log.exception("command on %s failed", message.topic)


def fleet_label(settings: Settings) -> str:
    return str(settings.fleet_file) if settings.fleet_file else f"generated, seed {settings.seed}"


def last_will(settings: Settings, *, meters: int) -> aiomqtt.Will:
    """The fleet connection's last will: its state, offline (published by the broker if the process
    dies or loses the network; a clean exit publishes its own)."""
    state = FleetState(
        online=False,
        running=False,
        meters=meters,
        interval_s=settings.interval_s,
        speed=settings.speed,
        fleet=fleet_label(settings),
        client_id=settings.client_id,
    )
    return aiomqtt.Will(
        settings.common.topics.fleet_state, state.model_dump_json().encode(), qos=1, retain=True
    )
