"""``enerlink edge replay FILE.csv``: publish recorded telemetry, with a small console.

    enerlink edge replay day.csv --map solar_output.power=pv_w*1000 --map battery.soc=soc
    enerlink edge replay archive/telemetry_aggregates/2025/01.csv.gz --fast --timestamps original

Pace: as recorded (default), ``--speed X`` times faster, or ``--fast`` (as fast as the broker
takes it). Timestamps: ``now`` (default: re-dated as if live) or ``original``.
On a terminal the console reads commands: ``start``, ``stop``, ``status`` (index, total, elapsed,
rate), ``help``, ``exit``; it starts paused unless ``--autostart``. Without a terminal (scripts)
it starts at once, prints a status line every ``--status-every`` seconds and exits at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.edge.publish_config import PublisherConfig
from enerlink.edge.publisher import Publisher
from enerlink.edge.sim.console import stdin_lines
from enerlink.edge.sim.replay_source import Mapping, Record, ReplayError, load
from enerlink.runtime import configure_logging

log = logging.getLogger(__name__)
PublishFn = Callable[[dict[str, Any]], Awaitable[None]]
HELP = "commands: start | stop | status | help | exit"


def _iso(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Player:
    """Plays records in order at their recorded pace / ``speed`` (``None`` = as fast as possible)."""

    records: Sequence[Record]
    publish: PublishFn
    speed: float | None = 1.0
    timestamps: str = "now"  # or "original"
    loop: bool = False
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    index: int = 0
    sent: int = 0
    state: str = "stopped"  # stopped | playing | finished
    _played_s: float = 0.0
    _since: float | None = None
    _base_clock: float = 0.0
    _base_offset: float = 0.0
    _shift: float = 0.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return len(self.records)

    def elapsed(self) -> float:
        return self._played_s + (self.clock() - self._since if self._since is not None else 0.0)

    def status(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "state": self.state,
            "index": self.index,
            "total": self.total,
            "sent": self.sent,
            "elapsed_s": round(elapsed, 3),
            "rate": round(self.sent / elapsed, 2) if elapsed > 0 else 0.0,
        }

    def start(self) -> None:
        if self.state == "playing" or not self.records:
            return
        if self.state == "finished":
            self.index = 0
        self.state = "playing"
        self._since = self.clock()
        self._rebase()
        self._wake.set()

    def stop(self) -> None:
        if self.state != "playing":
            return
        self.state = "stopped"
        if self._since is not None:
            self._played_s += self.clock() - self._since
        self._since = None
        self._wake.set()

    def _rebase(self) -> None:
        self._base_clock = self.clock()
        self._base_offset = self.records[self.index].epoch_s
        if self.timestamps == "now":
            self._shift = self.wall() - self._base_offset

    async def run(self) -> None:
        """Play until the end (or forever with ``loop``); waits while stopped."""
        while True:
            if self.state != "playing":
                self._wake.clear()
                await self._wake.wait()
                continue
            record = self.records[self.index]
            if self.speed is not None:
                due = self._base_clock + (record.epoch_s - self._base_offset) / self.speed
                delay = due - self.clock()
                if delay > 0:
                    self._wake.clear()
                    await self._interruptible_sleep(delay)  # start/stop wake it early
                    if self.state != "playing":
                        continue
            message = record.message
            if self.timestamps == "now":
                message = {**message, "datetime": _iso(record.epoch_s + self._shift)}
            await self.publish(message)
            self.sent += 1
            self.index += 1
            if self.index >= self.total:
                if self.loop:
                    self.index = 0
                    self._rebase()
                    continue
                self.stop()
                self.state = "finished"
                return

    async def _interruptible_sleep(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)


def handle(player: Player, line: str) -> tuple[str, bool]:
    """One console command -> (reply, keep going)."""
    command = line.strip().lower()
    if command == "start":
        player.start()
        return f"playing from {player.index}/{player.total}", True
    if command == "stop":
        player.stop()
        return f"stopped at {player.index}/{player.total}", True
    if command == "status":
        s = player.status()
        return (
            f"{s['state']}: index {s['index']}/{s['total']}, sent {s['sent']}, "
            f"elapsed {s['elapsed_s']:.1f} s, rate {s['rate']:.1f} msg/s"
        ), True
    if command in ("exit", "quit"):
        player.stop()
        return "bye", False
    if command in ("help", "?", ""):
        return HELP, True
    return f"unknown command {command!r}; {HELP}", True


async def console(player: Player, lines: AsyncIterator[str], out: TextIO) -> None:
    """Read commands until ``exit`` or end of input."""
    print(HELP, file=out, flush=True)
    async for line in lines:
        reply, go_on = handle(player, line)
        print(reply, file=out, flush=True)
        if not go_on:
            return


async def play(
    player: Player,
    *,
    interactive: bool,
    out: TextIO,
    status_every: float,
    lines: AsyncIterator[str] | None = None,
) -> None:
    """Drive ``player``: with a console (until exit) or unattended (until the end)."""
    if interactive:
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(player.run(), name="replay-player")
            await console(player, lines or stdin_lines(), out)
            runner.cancel()
        return
    player.start()

    async def _report() -> None:
        while True:
            await asyncio.sleep(status_every)
            print(handle(player, "status")[0], file=out, flush=True)

    async with asyncio.TaskGroup() as group:
        reporter = group.create_task(_report(), name="replay-status")
        await player.run()
        reporter.cancel()
    print(handle(player, "status")[0], file=out, flush=True)


def configure(actions: Any) -> None:
    parser = actions.add_parser(
        "replay", help="publish recorded telemetry from a CSV file", description=__doc__.splitlines()[0]
    )
    parser.add_argument("file", type=Path)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="x recorded pace (default 1)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible")
    parser.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN[*FACTOR]")
    parser.add_argument("--time-column", help="time column (default: time, timestamp or datetime)")
    parser.add_argument("--meter-id", default="METER001", help="meterId for a per-second CSV")
    parser.add_argument("--meter-column", help="column holding the meterId")
    parser.add_argument("--voltage", type=float, default=230.0, help="voltage of unmapped channels")
    parser.add_argument("--date", help="date for HH:MM:SS times (default today)")
    parser.add_argument("--timestamps", choices=("now", "original"), default="now")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--interactive", dest="interactive", action="store_true", default=None)
    mode.add_argument("--no-interactive", dest="interactive", action="store_false")
    parser.add_argument("--autostart", action="store_true", help="interactive: start playing at once")
    parser.add_argument("--status-every", type=float, default=10.0)
    parser.set_defaults(_action=main)


def main(args: argparse.Namespace) -> int:

    try:
        common = CommonSettings.from_env(Env())
        records = load(
            args.file,
            mappings=[Mapping.parse(m) for m in args.map],
            time_column=args.time_column,
            meter_id=args.meter_id,
            meter_column=args.meter_column,
            voltage=args.voltage,
            date=dt.date.fromisoformat(args.date) if args.date else None,
        )
    except (ReplayError, ConfigError, ValueError) as exc:
        print(f"enerlink edge replay: {exc}", file=sys.stderr)
        return 2
    configure_logging(common.log_level, common.log_format)
    interactive = sys.stdin.isatty() if args.interactive is None else args.interactive
    print(f"{len(records)} records from {args.file}", flush=True)

    async def _main() -> None:
        config = PublisherConfig(endpoint=common.mqtt, client_id=f"enerlink-replay-{uuid.uuid4().hex[:8]}")
        async with Publisher(config=config) as pub:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pub.wait_connected(), timeout=10.0)

            async def _publish(message: dict[str, Any]) -> None:
                await pub.publish(common.topics.data, orjson.dumps(message))

            player = Player(
                records,
                _publish,
                speed=None if args.fast else args.speed,
                timestamps=args.timestamps,
                loop=args.loop,
            )
            if interactive and args.autostart:
                player.start()
            await play(player, interactive=interactive, out=sys.stdout, status_every=args.status_every)
            await pub.drain()

    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        return 130
    return 0
