"""``enerlink edge --hardware`` / ``--emulate-hardware``: one meter, read from its chips.

Tasks (one TaskGroup): ``sample`` (every sensor at ``sample_rate_hz``, in a worker thread since
I2C is blocking; at each interval boundary the interval is summarised, energy added to the
counters and a data message queued), ``send`` (hands messages to the publisher), ``status``
(every ``status_interval_s``, at once when a sensor is lost or found, and after every (re)connect
via the publisher's hook), ``commands`` (``settle``, ``status_now``, ``resend`` on the meter's command
topic, acknowledged on its ack topic; confirmations on its confirm topic) and ``delivery``
(:mod:`enerlink.edge.delivery`: resend requests, timed re-sends, pruning). Every data message is written to
the
delivery log (:mod:`enerlink.edge.readings_log`) as it is made, before it is queued for the publisher, and
``seq`` continues from the log's newest after a restart. Counters are persisted at most every
``persist_every_s`` and on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
from prometheus_client import CollectorRegistry, Counter

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.edge.counters import Counters
from enerlink.edge.delivery import Delivery, is_resend
from enerlink.edge.hardware.bus import EmulatedBus, open_board_bus, smbus_scan
from enerlink.edge.hardware.ina219 import EmulatedINA219
from enerlink.edge.hardware.max17048 import EmulatedMAX17048
from enerlink.edge.hardware.messages import data_message, iso, status_message
from enerlink.edge.hardware.model import LabModel, TruthModel
from enerlink.edge.hardware.sampler import Sampler
from enerlink.edge.hardware.sensors import DEFAULT_SENSORS, SensorArray, SensorSpec, parse_sensors
from enerlink.edge.hardware.watchdog import notify, watchdog_period_s
from enerlink.edge.metrics import register_log, register_publisher
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publisher import Publisher
from enerlink.edge.queue import QueueLimits
from enerlink.edge.readings_log import LogSettings, ReadingsLog
from enerlink.edge.status import overall, read_os_status
from enerlink.metrics_server import metrics_server
from enerlink.schemas.commands import (
    CommandAck,
    CommandError,
    SettleResult,
    command_id_of,
    make_ack,
    parse_command,
)

log = logging.getLogger(__name__)
METER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class HardwareConfig:
    common: CommonSettings
    meter_id: str = "METER001"
    emulate: bool = False
    interval_s: float = 5.0
    status_interval_s: float = 30.0
    sample_rate_hz: float = 10.0
    state_dir: Path = field(default_factory=lambda: Path(".run/state"))
    sensors: tuple[SensorSpec, ...] = DEFAULT_SENSORS
    i2c_bus: int = 1
    """Linux I2C bus number (/dev/i2c-N) for the start-up scan and the doctor."""
    sensor_retry_s: float = 5.0
    persist_every_s: float = 60.0
    max_inflight: int = 20
    metrics_port: int = 0
    """Prometheus /metrics of the publisher (publish rate, queue depth); 0 = off."""
    queue_limits: QueueLimits = field(default_factory=QueueLimits)
    replay_rate: float = 20.0
    log: LogSettings = field(default_factory=LogSettings)
    """The delivery log (kept until confirmed) and re-sends (:mod:`enerlink.edge.delivery`)."""
    alert_threshold: int = 10
    battery_capacity_mah: float = 2000.0
    truth: TruthModel | None = None
    """What the emulated chips measure; default: :func:`default_truth` (the simulator's physics)."""
    bus: Any = None
    """An I2C bus object to use instead of the Pi's (tests pass an :class:`EmulatedBus`)."""
    on_data: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def from_env(cls, env: Env) -> Self:
        meter_id = env.str("METER_ID", "METER001")
        if not METER_ID.match(meter_id):
            raise ConfigError(f"ENERLINK_METER_ID={meter_id!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
        sensors_text = env.optional("EDGE_SENSORS")
        return cls(
            common=CommonSettings.from_env(env),
            meter_id=meter_id,
            emulate=env.bool("EDGE_EMULATE", False),
            interval_s=env.float("EDGE_INTERVAL", 5.0),
            status_interval_s=env.float("EDGE_STATUS_INTERVAL", 30.0),
            sample_rate_hz=env.float("EDGE_SAMPLE_HZ", 10.0),
            state_dir=env.path("STATE_DIR", ".run/state"),
            sensors=parse_sensors(sensors_text) if sensors_text else DEFAULT_SENSORS,
            i2c_bus=env.int("I2C_BUS", 1),
            persist_every_s=env.float("EDGE_PERSIST_EVERY", 60.0),
            max_inflight=env.int("EDGE_MAX_INFLIGHT", 20),
            metrics_port=env.int("EDGE_METRICS_PORT", 0),
            queue_limits=QueueLimits(
                max_messages=env.int("EDGE_QUEUE_MAX_MESSAGES", 500_000),
                max_bytes=env.int("EDGE_QUEUE_MAX_MB", 256) * 1024 * 1024,
                max_age_s=env.float("EDGE_QUEUE_MAX_AGE_DAYS", 7.0) * 86400,
            ),
            replay_rate=env.float("EDGE_REPLAY_RATE", 20.0),
            log=LogSettings.from_env(env),
            alert_threshold=env.int("EDGE_ALERT_THRESHOLD", 10),
            battery_capacity_mah=env.float("EDGE_BATTERY_MAH", 2000.0),
        )


def emulated_bus(sensors: tuple[SensorSpec, ...], truth: TruthModel) -> EmulatedBus:
    """An I2C bus with an emulated chip at every configured address, fed by ``truth``."""
    bus = EmulatedBus()
    for spec in sensors:
        if spec.kind == "ina219":
            bus.add(
                spec.address,
                EmulatedINA219(functools.partial(truth.reading, spec.role), shunt_ohm=spec.shunt_ohm),
            )
        else:
            bus.add(spec.address, EmulatedMAX17048(truth.cell, address=spec.address))
    return bus


def default_truth(meter_id: str) -> TruthModel:
    """The simulator's physics for one lab meter (``enerlink.edge.sim.truth.SimTruth``) when the
    [sim] extra is installed, else the small deterministic :class:`LabModel`."""
    try:
        from enerlink.edge.sim.truth import SimTruth  # the [sim] extra is optional on a meter
    except ImportError:
        log.info("emulated chips follow the built-in lab model (install enerlink[sim] for the physics)")
        return LabModel()
    truth: TruthModel = SimTruth.lab(meter_id)
    return truth


def open_bus(config: HardwareConfig) -> Any:
    """The bus the drivers use: the given one, emulated chips, or the Pi's I2C through Blinka."""
    if config.bus is not None:
        return config.bus
    if config.emulate:
        return emulated_bus(config.sensors, config.truth or default_truth(config.meter_id))
    return open_board_bus()


def scan_bus(config: HardwareConfig, bus: Any) -> list[int]:
    """Addresses that answer: smbus2 on a real bus (as i2cdetect), the emulated bus's own list."""
    if isinstance(bus, EmulatedBus):
        return bus.scan()
    return smbus_scan(config.i2c_bus)


class HardwareMeter:
    """The state shared by the runner's tasks (exposed for tests and the doctor)."""

    def __init__(self, config: HardwareConfig) -> None:
        self.config = config
        bus = open_bus(config)
        self.bus = bus
        self.sensors = SensorArray(bus, config.sensors, retry_s=config.sensor_retry_s)
        self.sampler = Sampler(self.sensors, rate_hz=config.sample_rate_hz)
        self.counters = Counters(
            config.state_dir / f"{config.meter_id}.counters.sqlite3",
            timezone=config.common.timezone,
            persist_every_s=config.persist_every_s,
        )
        self.readings = ReadingsLog(config.state_dir / f"{config.meter_id}.log.sqlite3", settings=config.log)
        # every published data message went through the log first: continue right after its newest,
        # with its counters if the saved ones are older (they are written once a minute)
        self.counters.resume_after(self.readings.highest(config.meter_id))
        if (newest := self.readings.newest(config.meter_id)) is not None and self.counters.resume_from(
            newest.seq, newest.payload
        ):
            log.info("meter %s: counters continue from logged reading %d", config.meter_id, newest.seq)
        self.outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1000)
        self.status_wanted = asyncio.Event()
        self.grid_power = (0.0, 0.0)
        self.published_data = 0
        self.samples = 0
        self.publisher: Publisher | None = None
        self.delivery: Delivery | None = None

    @property
    def topics(self) -> Any:
        return self.config.common.topics

    def take_interval(self, now_wall: float, now_mono: float) -> dict[str, Any]:
        interval = self.sampler.harvest(now_mono)
        self.counters.add(
            {self.sensors.sensors[n].spec.role: s.energy_wh for n, s in interval.channels.items()}
        )
        message = data_message(
            meter_id=self.config.meter_id,
            when=now_wall,
            interval=interval,
            sensors=self.sensors,
            counters=self.counters,
            seq=self.counters.next_seq(),
            alert_threshold=self.config.alert_threshold,
            battery_capacity_mah=self.config.battery_capacity_mah,
        )
        grid = message["data"]["net_grid"]
        self.grid_power = (grid["export_power"], grid["import_power"])
        self.counters.maybe_persist()
        return message

    def status(self) -> dict[str, Any]:
        os_status = read_os_status(broker_host=self.config.common.mqtt.host)
        stats = self.publisher.stats if self.publisher is not None else None
        connected = bool(stats and stats.connected)
        inventory = self.sensors.inventory()
        total = len(self.sensors.sensors)
        mqtt = {
            "connected": connected,
            "attempts": stats.attempts if stats else 0,
            "qos": 2,
            "queued": stats.queued if stats else 0,
            "published": stats.published if stats else 0,
        }
        return status_message(
            meter_id=self.config.meter_id,
            when=time.time(),
            sensors=self.sensors,
            os_status=os_status,
            mqtt=mqtt,
            grid_power=self.grid_power,
            health=overall(
                mqtt_connected=connected,
                sensors_ok=inventory["total_count"],
                sensors_total=total,
                free_heap=os_status.free_heap,
            ),
            events=self.sensors.drain_events(),
        )

    def command(self, payload: bytes) -> CommandAck:
        """Answer one command (:mod:`enerlink.schemas.commands`): ``settle`` (reset the settlement
        counters) or ``status_now``; anything else gets an error ack."""
        at, meter_id = iso(time.time()), self.config.meter_id
        try:
            command = parse_command(payload)
        except CommandError as exc:
            return make_ack(meter_id, at=at, cmd=None, command_id=command_id_of(payload), error=str(exc))
        result: dict[str, Any] | None = None
        error: str | None = None
        if command.cmd == "settle":
            settled = self.counters.settle()
            result = {
                **SettleResult(
                    settled_import_wh=round(settled["import"], 5),
                    settled_export_wh=round(settled["export"], 5),
                ).model_dump(),
                "settled": {k: round(v, 5) for k, v in settled.items()},  # every channel, for the log
            }
        elif command.cmd == "status_now":
            self.status_wanted.set()
        else:
            error = f"unsupported command {command.cmd!r} on a hardware meter"
        return make_ack(meter_id, at=at, cmd=command.cmd, command_id=command.id, result=result, error=error)


async def _sample_loop(meter: HardwareMeter, *, max_messages: int | None) -> None:
    loop = asyncio.get_running_loop()
    period = 1.0 / meter.config.sample_rate_hz
    interval = meter.config.interval_s
    await asyncio.to_thread(meter.sensors.start)
    next_sample = loop.time()
    next_publish = (time.time() // interval + 1) * interval
    produced = 0
    while max_messages is None or produced < max_messages:
        events_before = len(meter.sensors.events)
        await asyncio.to_thread(meter.sampler.sample, time.monotonic())
        meter.samples += 1
        if len(meter.sensors.events) != events_before:
            meter.status_wanted.set()
        now = time.time()
        if now >= next_publish:
            message = meter.take_interval(now, time.monotonic())
            if meter.config.on_data is not None:
                meter.config.on_data(message)
            payload = orjson.dumps(message)
            meter.readings.append(meter.config.meter_id, message["seq"], meter.topics.data, payload)
            await meter.outbox.put((meter.topics.data, payload))
            produced += 1
            next_publish = (now // interval + 1) * interval
        next_sample += period
        await asyncio.sleep(max(0.0, next_sample - loop.time()))
    await meter.outbox.join()


async def _watchdog_loop(meter: HardwareMeter, period: float) -> None:
    """Ping systemd only while sampling makes progress: a hung I2C read gets the service restarted."""
    last = -1
    while True:
        if meter.samples != last:
            notify("WATCHDOG=1")
            last = meter.samples
        await asyncio.sleep(period)


async def _send_loop(meter: HardwareMeter, pub: Publisher) -> None:
    while True:
        topic, payload = await meter.outbox.get()
        try:
            await pub.publish(topic, payload)
            meter.published_data += topic == meter.topics.data
        finally:
            meter.outbox.task_done()


async def _status_loop(meter: HardwareMeter) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(meter.status_wanted.wait(), meter.config.status_interval_s)
        meter.status_wanted.clear()
        await meter.outbox.put((meter.topics.status, orjson.dumps(meter.status())))


async def _command_loop(meter: HardwareMeter, pub: Publisher, outcomes: Counter) -> None:
    """Confirmations, resend requests and commands; ``outcomes`` counts the commands by outcome (``ok``,
    ``rejected``: an error ack) and every message that failed (``failed``)."""
    delivery = meter.delivery
    async for message in pub.messages():
        topic = str(message.topic)
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        try:
            if delivery is not None and delivery.confirm_meter(topic):
                delivery.on_confirmation(topic, payload)
                continue
            if delivery is not None and is_resend(payload):
                await delivery.request(meter.config.meter_id, payload)
                continue
            ack = meter.command(payload)
            log.info("command %s: ok=%s", ack.cmd, ack.ok)
            await pub.publish(meter.topics.command_ack(meter.config.meter_id), ack.payload())
            outcomes.labels("ok" if ack.ok else "rejected").inc()
        except Exception:  # one boundary per message: log, count, move on
            outcomes.labels("failed").inc()
            log.exception("message on %s failed", topic)


async def run_hardware(config: HardwareConfig, *, max_messages: int | None = None) -> None:
    """Run one hardware meter until cancelled (or until ``max_messages`` data messages are out)."""
    meter = HardwareMeter(config)
    topics = config.common.topics
    pub_config = PublisherConfig(
        endpoint=config.common.mqtt,
        client_id=f"enerlink-edge-{config.meter_id}",
        queue_path=config.state_dir / f"{config.meter_id}.outbox.sqlite3",
        max_inflight=config.max_inflight,
        queue_limits=config.queue_limits,
        replay_rate=config.replay_rate,
        presence_topic=topics.presence(config.meter_id),
    )

    async def on_connect() -> None:
        meter.status_wanted.set()

    log.info(
        "edge %s: %s sensors, %.0f Hz sampling, data every %.0f s, state in %s",
        config.meter_id,
        "emulated" if config.emulate or config.bus is not None else "I2C",
        config.sample_rate_hz,
        config.interval_s,
        config.state_dir,
    )
    try:
        found = await asyncio.to_thread(scan_bus, config, meter.bus)
        expected = {spec.address for spec in config.sensors}
        log.info(
            "I2C scan: devices at %s; missing %s",
            ", ".join(f"0x{a:02x}" for a in found) or "none",
            ", ".join(f"0x{a:02x}" for a in sorted(expected - set(found))) or "none",
        )
    except OSError as exc:
        log.warning("I2C scan failed: %s", exc)
    try:
        async with Publisher(config=pub_config, on_connect=on_connect) as pub:
            meter.publisher = pub
            meter.delivery = delivery = Delivery(
                log=meter.readings, pub=pub, topics=topics, meters={config.meter_id}
            )
            registry = CollectorRegistry()
            register_publisher(registry, lambda: pub.stats)
            register_log(registry, lambda: meter.readings.stats)
            outcomes = Counter(
                "enerlink_edge_commands",
                "Command-topic messages handled, by outcome (ok, rejected: error ack, failed)",
                ["outcome"],
                registry=registry,
            )
            await pub.subscribe(topics.command(config.meter_id))
            await pub.subscribe(topics.confirm(config.meter_id), qos=1)  # kept across reconnects
            async with metrics_server(registry, port=config.metrics_port), asyncio.TaskGroup() as tg:
                sampler = tg.create_task(_sample_loop(meter, max_messages=max_messages), name="edge-sample")
                others = [
                    tg.create_task(_send_loop(meter, pub), name="edge-send"),
                    tg.create_task(_status_loop(meter), name="edge-status"),
                    tg.create_task(_command_loop(meter, pub, outcomes), name="edge-commands"),
                    tg.create_task(delivery.run(), name="edge-delivery"),
                ]
                if (period := watchdog_period_s()) is not None:
                    others.append(tg.create_task(_watchdog_loop(meter, period), name="edge-watchdog"))
                notify("READY=1")
                await sampler
                async with asyncio.timeout(30):
                    await pub.drain()
                for task in others:
                    task.cancel()
    finally:
        notify("STOPPING=1")
        meter.counters.close()
        meter.readings.close()
