"""``enerlink edge --simulate``: a simulated fleet publishing like real meters.

:func:`run` is what ``enerlink edge`` and ``enerlink up`` call. ``settings.on_data`` receives every
data message dict as it is published (``enerlink up`` can print console lines from it), and
:func:`run` returns the :class:`~enerlink.edge.sim.runner.FleetRunner` counters via ``on_ready``.

A live fleet (no ``--from/--to``, ``--once`` or ``--steps``) is also a controller
(:mod:`enerlink.edge.sim.controller`): started and stopped over MQTT (the API's ``/simulation`` routes), it
stays connected while stopped. It starts running at once unless ``settings.idle`` (``--idle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from enerlink.edge.delivery import Delivery
from enerlink.edge.metrics import register_log, register_publisher
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publish_log import PublishLog
from enerlink.edge.publisher import Publisher
from enerlink.edge.readings_log import ReadingsLog, resume_seqs
from enerlink.edge.settings import Settings
from enerlink.edge.sim import fleet as fleet_mod
from enerlink.edge.sim.clock import Clock
from enerlink.edge.sim.console import run_console
from enerlink.edge.sim.controller import FleetController, control_loop, last_will
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.metrics import SimMetrics
from enerlink.edge.sim.runner import FleetRunner, command_loop, tick_loop, weather_loop
from enerlink.edge.sim.state import StateStore, resume_counters
from enerlink.edge.sim.weather import OfflineWeather, OpenMeteoWeather, WeatherProvider
from enerlink.metrics_server import metrics_server

log = logging.getLogger(__name__)


def build_fleet(settings: Settings) -> fleet_mod.Fleet:
    if settings.fleet_file is not None:
        return fleet_mod.load(settings.fleet_file)
    return fleet_mod.generate(settings.meters, seed=settings.seed, scale=settings.scale)  # type: ignore[arg-type]


def build_weather(settings: Settings, fleet: fleet_mod.Fleet) -> WeatherProvider:
    # backfills use the offline model: Open-Meteo's forecast API has no year-old weather
    if settings.weather == "open-meteo" and not (settings.start and settings.end):
        return OpenMeteoWeather(base_url=settings.weather_url, seed=fleet.seed)
    return OfflineWeather(seed=fleet.seed)


def state_path(settings: Settings) -> StateStore:
    return StateStore(settings.state_dir / f"sim-{settings.client_id}.json")


def log_path(settings: Settings) -> Path:
    """The fleet's delivery log (:mod:`enerlink.edge.readings_log`), next to its state and outbox."""
    return settings.state_dir / f"sim-{settings.client_id}-log.sqlite3"


async def run(
    settings: Settings,
    *,
    once: bool = False,
    max_steps: int | None = None,
    on_ready: Callable[[FleetRunner], None] | None = None,
) -> None:
    """Run the fleet until cancelled (or the backfill ends, or ``max_steps`` steps; ``once`` = 1)."""
    fleet = build_fleet(settings)
    sim = Simulator.create(fleet, weather=build_weather(settings, fleet))
    clock = Clock(
        interval_s=settings.interval_s,
        speed=settings.speed,
        start=settings.start.timestamp() if settings.start else None,
        end=settings.end.timestamp() if settings.end else None,
    )
    if clock.backfill:
        # a backfill is its own timeline: fresh counters from --from, its own connection and state,
        # so it can run next to the live fleet without touching it
        settings = dataclasses.replace(settings, client_id=f"{settings.client_id}-backfill")
    store = state_path(settings)
    seqs = np.zeros(sim.size, dtype=np.int64)
    restored = 0 if clock.backfill else store.restore(sim, seqs)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    readings = ReadingsLog(log_path(settings), settings=settings.log)
    if not clock.backfill and (counted := resume_counters(readings, sim, seqs)):
        log.info("counters of %d meters continue from the delivery log (newer than the saved state)", counted)
    moved = resume_seqs(readings, fleet.ids, seqs)
    if moved:
        log.info("seq of %d meters continues from the delivery log (newer than the saved state)", moved)
    log.info(
        "simulating %d meters (%s), interval %.1f s, speed %.1f, %s, restored state of %d",
        sim.size,
        settings.fleet_file or f"generated, seed {settings.seed}",
        settings.interval_s,
        settings.speed,
        "backfill" if clock.backfill else "live",
        restored,
    )
    config = PublisherConfig(
        endpoint=settings.common.mqtt,
        client_id=settings.client_id,
        queue_path=settings.state_dir / f"sim-{settings.client_id}-outbox.sqlite3",
        max_inflight=settings.max_inflight,
        # after an outage, catch up at half the fleet's own rate (one meter's default of 20/s would take
        # hours to drain a minute of a large fleet's backlog)
        replay_rate=max(20.0, 0.5 * sim.size / settings.interval_s * max(1.0, settings.speed)),
    )
    steps = 1 if once else (max_steps if max_steps is not None else settings.max_steps)
    live = not clock.backfill and steps is None
    on_connect: list[Callable[[], Awaitable[None]]] = []  # the controller's state, on every connect

    async def connected() -> None:
        for hook in on_connect:
            await hook()

    publish_log: PublishLog | None = None
    if settings.publish_log is not None:
        publish_log = PublishLog(settings.publish_log, data_topic=settings.common.topics.data)
    with readings, publish_log or contextlib.nullcontext():
        async with Publisher(
            config=config,
            on_acked=publish_log.record if publish_log is not None else None,
            will=last_will(settings, meters=sim.size) if live else None,
            on_connect=connected if live else None,
        ) as pub:
            await _serve(
                settings,
                sim=sim,
                clock=clock,
                pub=pub,
                store=store,
                seqs=seqs,
                readings=readings,
                steps=steps,
                on_ready=on_ready,
                on_connect=on_connect if live else None,
            )


async def _serve(
    settings: Settings,
    *,
    sim: Simulator,
    clock: Clock,
    pub: Publisher,
    store: StateStore,
    seqs: np.ndarray,
    readings: ReadingsLog,
    steps: int | None,
    on_ready: Callable[[FleetRunner], None] | None,
    on_connect: list[Callable[[], Awaitable[None]]] | None,
) -> None:
    """Publish until cancelled or done; ``on_connect`` given: a live fleet under MQTT control."""
    started = time.monotonic()
    metrics = SimMetrics()
    metrics.meters.set(sim.size)
    register_publisher(metrics.registry, lambda: pub.stats)
    register_log(metrics.registry, lambda: readings.stats)
    live_rate = sim.size / settings.interval_s * max(1.0, settings.speed)
    delivery = Delivery(
        log=readings,
        pub=pub,
        topics=settings.common.topics,
        meters=sim.index,
        clock=lambda: sim.last_epoch if clock.backfill and sim.last_epoch else clock.now(),
        # a fleet re-sends at least a quarter of its live rate (one meter's default would take hours)
        rate=max(settings.log.resend_rate, 0.25 * live_rate),
        pending_limit=max(16, sim.size),
    )
    runner = FleetRunner(
        metrics=metrics,
        settings=settings,
        sim=sim,
        pub=pub,
        store=store,
        seqs=seqs,
        started_epoch=clock.start if clock.start is not None else time.time(),
        readings=readings,
        delivery=delivery,
    )
    if on_ready is not None:
        on_ready(runner)
    async with metrics_server(metrics.registry, port=settings.metrics_port):
        try:
            with contextlib.suppress(TimeoutError):  # start spooling if the broker is not there
                await asyncio.wait_for(pub.wait_connected(), timeout=10.0)
            if settings.commands:
                await pub.subscribe(settings.common.topics.command("+"))
            await pub.subscribe(settings.common.topics.all_confirm, qos=1)  # kept across reconnects
            if on_connect is not None:
                await _control(runner, on_connect=on_connect)
            else:
                await _publish(runner, clock, steps=steps)
            await pub.drain()
        finally:
            with contextlib.suppress(Exception):  # clean shutdown: meters go offline, state is kept
                await asyncio.wait_for(runner.presence(False), timeout=10.0)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(runner.save)
            elapsed = time.monotonic() - started
            log.info(
                "simulator stopped: %d data + %d status messages in %.1f s, %d commands (%d rejected)",
                runner.published,
                runner.statuses,
                elapsed,
                runner.commands_ok + runner.commands_failed,
                runner.commands_failed,
            )


async def _publish(runner: FleetRunner, clock: Clock, *, steps: int | None) -> None:
    """A backfill or a bounded run: the meters publish from start to end."""
    await runner.presence(True)
    async with asyncio.TaskGroup() as group:
        ticks = group.create_task(tick_loop(runner, clock, max_steps=steps), name="sim-ticks")
        background = [group.create_task(command_loop(runner, clock), name="sim-commands")]
        if runner.delivery is not None:
            background.append(group.create_task(runner.delivery.run(), name="sim-delivery"))
        if isinstance(runner.sim.weather, OpenMeteoWeather):
            background.append(group.create_task(weather_loop(runner), name="sim-weather"))
        watched = {ticks}
        if runner.settings.interactive:
            watched.add(group.create_task(run_console(runner, clock.now), name="sim-console"))
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if ticks.done() and runner.settings.confirm_wait_s > 0:
            await _await_confirmations(runner, timeout_s=runner.settings.confirm_wait_s)
        for task in [*background, *watched]:
            task.cancel()


async def _await_confirmations(runner: FleetRunner, *, timeout_s: float) -> None:
    """A bounded run's end: wait (re-sending meanwhile) until the pipeline confirmed every reading."""
    readings = runner.readings
    if readings is None:
        return
    deadline = time.monotonic() + timeout_s
    while (left := readings.stats.unconfirmed) > 0:
        if time.monotonic() >= deadline:
            log.warning("%d readings still unconfirmed after %.0f s; stopping anyway", left, timeout_s)
            return
        await asyncio.sleep(1.0)
    log.info("every reading is confirmed by the pipeline")


async def _control(runner: FleetRunner, *, on_connect: list[Callable[[], Awaitable[None]]]) -> None:
    """A live fleet: runs (unless ``idle``) and takes start/stop on the fleet command topic until
    cancelled (or the interactive console ends)."""
    settings = runner.settings

    def build(meters: int) -> Simulator:
        fleet = build_fleet(dataclasses.replace(settings, meters=meters))
        return Simulator.create(fleet, weather=build_weather(settings, fleet))

    controller: FleetController | None = None
    try:
        async with asyncio.TaskGroup() as group:
            controller = FleetController(
                runner=runner, build=build, group=group, fixed_size=settings.fleet_file is not None
            )
            on_connect.append(controller.announce)
            await runner.pub.subscribe(settings.common.topics.fleet_command)
            if settings.idle:
                await controller.announce()
            else:
                await controller.start()
                await controller.announce()
            watched = {group.create_task(control_loop(controller), name="sim-control")}
            background = []
            if runner.delivery is not None:
                background.append(group.create_task(runner.delivery.run(), name="sim-delivery"))
            if isinstance(runner.sim.weather, OpenMeteoWeather):
                background.append(group.create_task(weather_loop(runner), name="sim-weather"))
            if settings.interactive:
                watched.add(group.create_task(run_console(runner, controller.now), name="sim-console"))
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            await controller.stop()
            for task in [*background, *watched]:
                task.cancel()
    finally:
        if controller is not None:
            on_connect.clear()
            controller.running = False
            try:
                await asyncio.wait_for(controller.announce(online=False), timeout=10.0)
            except Exception as exc:  # the broker may be gone at shutdown: say so and finish stopping
                log.warning("could not announce the fleet offline: %s", exc or type(exc).__name__)
