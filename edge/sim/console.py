"""The running simulator's own command line (``enerlink edge --interactive``), one command a line:

scenario NAME [METERS|all] [DURATION_S]    e.g. scenario grid_outage METER001,METER002 600
clear [METERS|all]                         end scenarios
settle [METERS|all]                        reset settlement counters
status                                     steps, messages, active scenarios
help | exit
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TextIO

from enerlink.edge.sim import commands
from enerlink.edge.sim.scenarios import ACTIVE_SCENARIOS
from enerlink.schemas.commands import Command, CommandError

if TYPE_CHECKING:
    from enerlink.edge.sim.runner import FleetRunner

HELP = (
    "scenario NAME [METERS|all] [DURATION_S] | clear [METERS|all] | settle [METERS|all] | "
    "status | help | exit"
)


def _meters(runner: FleetRunner, text: str | None) -> list[int]:
    if text is None or text == "all":
        return list(range(runner.sim.size))
    picked = []
    for meter_id in text.split(","):
        index = runner.sim.index.get(meter_id.strip())
        if index is None:
            raise CommandError(f"unknown meter {meter_id.strip()!r}")
        picked.append(index)
    return picked


def handle(runner: FleetRunner, line: str, *, now: float) -> tuple[str, bool]:
    words = line.split()
    if not words or words[0] in ("help", "?"):
        return HELP, True
    verb, rest = words[0].lower(), words[1:]
    try:
        if verb == "exit":
            return "stopping the fleet", False
        if verb == "status":
            board = runner.sim.scenarios
            active = {
                name: int(board.active[row].sum())
                for row, name in enumerate(ACTIVE_SCENARIOS)
                if board.active[row].any()
            }
            return (
                f"{runner.sim.size} meters, {runner.steps} steps, {runner.published} data + "
                f"{runner.statuses} status messages, scenarios {active or 'none'}"
            ), True
        if verb == "scenario":
            if not rest:
                raise CommandError("scenario needs a NAME")
            body: dict[str, object] = {"cmd": "scenario", "name": rest[0]}
            if len(rest) > 2:
                body["duration_s"] = float(rest[2])
            command = Command.model_validate(body)
            meters = _meters(runner, rest[1] if len(rest) > 1 else None)
        elif verb in ("clear", "settle"):
            command = Command(cmd=verb)  # type: ignore[arg-type]
            meters = _meters(runner, rest[0] if rest else None)
        else:
            return f"unknown command {verb!r}; {HELP}", True
        result = commands.apply(runner.sim, meters, command, epoch_s=now)
    except (CommandError, ValueError) as exc:
        return f"error: {exc}", True
    return f"ok: {command.cmd} on {len(meters)} meters {result}", True


async def stdin_lines() -> AsyncIterator[str]:
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line


async def run_console(
    runner: FleetRunner,
    clock_now: object,
    *,
    lines: AsyncIterator[str] | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Read commands until ``exit`` (or end of input); returns so the caller stops the fleet."""
    now = clock_now if callable(clock_now) else None
    print(HELP, file=out, flush=True)
    async for line in lines or stdin_lines():
        reply, go_on = handle(runner, line, now=float(now()) if now else 0.0)
        print(reply, file=out, flush=True)
        if not go_on:
            return
    await asyncio.Event().wait()  # end of input (no terminal): keep running until stopped
