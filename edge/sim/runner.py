"""The simulated fleet on the wire: one MQTT connection (``enerlink.edge.publisher.Publisher``) for every
meter, data every interval, status every 30 s (QoS 2), commands in and acks out, state saved.

Every tick's data messages are written to the delivery log (:mod:`enerlink.edge.readings_log`) in one
transaction before the first is handed to the publisher; confirmations (``{prefix}/meters/+/confirm``)
and ``resend`` commands go to :mod:`enerlink.edge.delivery`.

One process, one connection, many meters: a per-meter MQTT last will is impossible, so each
simulated meter's retained presence (``{prefix}/meters/{id}/presence``) is set to
``{"online": true}`` at start and ``{"online": false}`` on a clean shutdown only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import numpy as np
import orjson

from enerlink.console import format_power
from enerlink.edge.delivery import Delivery, is_resend
from enerlink.edge.publisher import Publisher
from enerlink.edge.readings_log import Entry, ReadingsLog
from enerlink.edge.settings import Settings
from enerlink.edge.sim import commands
from enerlink.edge.sim.clock import Clock, Progress
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.messages import data_messages, status_message
from enerlink.edge.sim.metrics import SimMetrics
from enerlink.edge.sim.state import StateStore
from enerlink.schemas.commands import Command, CommandError, parse_command

log = logging.getLogger(__name__)


def console_line(message: dict[str, Any]) -> str:
    data = message["data"]
    grid = data["net_grid"]
    if grid["status"] == "exporting":
        grid_text = f"grid export {format_power(grid['export_power'])}"
    elif grid["status"] == "importing":
        grid_text = f"grid import {format_power(grid['import_power'])}"
    else:
        grid_text = "grid idle"
    when = dt.datetime.fromisoformat(message["datetime"]).astimezone().strftime("%H:%M:%S")
    return (
        f"[{when}] {message['meterId']}: solar {format_power(data['solar_output']['power'])}, "
        f"battery {data['battery']['soc']:.0f} %, load {format_power(data['net_solar']['load_power'])}, "
        f"{grid_text}"
    )


@dataclass(slots=True)
class FleetRunner:
    settings: Settings
    sim: Simulator
    pub: Publisher
    store: StateStore
    seqs: np.ndarray
    started_epoch: float
    readings: ReadingsLog | None = None
    """The delivery log: every data message is in it before it is handed to the publisher."""
    delivery: Delivery | None = None
    published: int = 0
    statuses: int = 0
    commands_ok: int = 0
    commands_failed: int = 0
    steps: int = 0
    metrics: SimMetrics = field(default_factory=SimMetrics)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))
    _next_status: float | None = None

    @property
    def topics(self):  # type: ignore[no-untyped-def]
        return self.settings.common.topics

    async def presence(self, online: bool) -> None:
        payload = orjson.dumps({"online": online})
        for spec in self.sim.fleet.meters:
            await self.pub.publish(self.topics.presence(spec.id), payload, retain=True)

    async def step(self, epoch_s: float) -> None:
        """Simulate one instant and publish every meter's data (and statuses when due)."""
        started = time.perf_counter()
        sim_step = self.sim.step(epoch_s, max_dt_s=max(300.0, 2 * self.settings.interval_s))
        self.seqs += 1
        seqs = self.seqs.tolist()
        topic = self.topics.data
        on_data, console = self.settings.on_data, self.settings.console
        messages = list(data_messages(self.sim, sim_step, seqs=seqs))
        payloads = [orjson.dumps(message) for message in messages]
        if self.readings is not None:  # one transaction for the tick, durable before any publish
            ids = self.sim.fleet.ids
            self.readings.append_many(
                Entry(ids[i], seqs[i], topic, payload) for i, payload in enumerate(payloads)
            )
        for message, payload in zip(messages, payloads, strict=True):
            await self.pub.publish(topic, payload)
            if on_data is not None:
                on_data(message)
            if console:
                print(console_line(message), flush=True)
        self.published += self.sim.size
        self.steps += 1
        self.metrics.messages.labels("data").inc(self.sim.size)
        if self._next_status is None or epoch_s >= self._next_status:
            await self.statuses_now(epoch_s)
            self._next_status = epoch_s + self.settings.status_interval_s
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        log.debug("step %s: %d meters in %.3f s", epoch_s, self.sim.size, time.perf_counter() - started)

    async def statuses_now(self, epoch_s: float, meters: list[int] | None = None) -> None:
        topic = self.topics.status
        for i in range(self.sim.size) if meters is None else meters:
            message = status_message(
                self.sim,
                i,
                epoch_s=epoch_s,
                uptime_ms=int((epoch_s - self.started_epoch) * 1000),
                rng_value=self._rng.random(),
            )
            await self.pub.publish(topic, orjson.dumps(message))
            self.statuses += 1
            self.metrics.messages.labels("status").inc()

    async def command(self, message: aiomqtt.Message, now: float) -> None:
        """Handle one command message; a bad one gets an error ack, never an exception."""
        meter_id = self.topics.meter_of(str(message.topic), "cmd") or ""
        index = self.sim.index.get(meter_id)
        if index is None:
            return  # not one of ours (another simulator or a hardware edge answers it)
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if self.delivery is not None and is_resend(bytes(payload)):
            await self.delivery.request(meter_id, bytes(payload))
            return
        command: Command | None = None
        try:
            command = parse_command(bytes(payload))
            result = commands.apply(self.sim, [index], command, epoch_s=now)
            if command.cmd == "status_now":
                await self.statuses_now(now, [index])
            reply = commands.ack(meter_id, epoch_s=now, command=command, result=result)
            self.commands_ok += 1
            self.metrics.commands.labels("ok").inc()
            log.info("command %s for %s: %s", command.cmd, meter_id, result)
        except CommandError as exc:
            reply = commands.ack(meter_id, epoch_s=now, command=command, error=str(exc))
            self.commands_failed += 1
            self.metrics.commands.labels("rejected").inc()
            log.warning("command for %s rejected: %s", meter_id, exc)
        await self.pub.publish(self.topics.command_ack(meter_id), reply)

    def save(self) -> None:
        started = time.perf_counter()
        self.store.save(self.sim, self.seqs)
        log.debug("state of %d meters saved in %.3f s", self.sim.size, time.perf_counter() - started)


async def tick_loop(runner: FleetRunner, clock: Clock, *, max_steps: int | None) -> None:
    settings = runner.settings
    progress: Progress | None = None
    if clock.backfill and settings.progress:
        assert clock.start is not None and clock.end is not None
        progress = Progress(total=int((clock.end - clock.start) // clock.interval_s) + 1, out=sys.stderr)
    last_save = time.monotonic()
    async for epoch_s in clock.ticks():
        if clock.backfill and not runner.pub.connected:
            log.warning("backfill paused: broker unreachable")
            await runner.pub.wait_connected()  # history waits for the broker instead of spooling
        await runner.step(epoch_s)
        runner.metrics.skipped.set(clock.skipped)
        if progress is not None:
            progress.update(
                messages=runner.sim.size,
                label=dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M"),
            )
        if time.monotonic() - last_save >= settings.save_every_s:
            await asyncio.to_thread(runner.save)
            last_save = time.monotonic()
        if max_steps is not None and runner.steps >= max_steps:
            return


async def command_loop(runner: FleetRunner, clock: Clock) -> None:
    async for message in runner.pub.messages():
        now = runner.sim.last_epoch if clock.backfill and runner.sim.last_epoch else clock.now()
        try:
            if runner.delivery is not None and runner.delivery.confirm_meter(str(message.topic)):
                payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
                runner.delivery.on_confirmation(str(message.topic), bytes(payload))
                continue
            await runner.command(message, now)
        except Exception:  # one boundary per message: log, count, move on
            runner.commands_failed += 1
            log.exception("command on %s failed", message.topic)


async def weather_loop(runner: FleetRunner, *, every_s: float = 300.0) -> None:
    while True:
        await runner.sim.weather.refresh(runner.sim.cells)
        await asyncio.sleep(every_s)
