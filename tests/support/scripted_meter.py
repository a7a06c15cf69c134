"""A meter on the real broker whose answers the test scripts: it subscribes to the command topics of
some meter ids and acknowledges each command like the simulator does (``enerlink.edge.sim.commands.ack``),
with the datetime and settlement readings the test chooses, after an optional delay, or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from enerlink.config import CommonSettings
from enerlink.edge.sim import commands as sim_commands
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.commands import parse_command

#: (meter_id, command JSON) -> (epoch_s of the ack, result) or None for no answer
Script = Callable[[str, dict[str, Any]], tuple[float, dict[str, Any]] | None]


@dataclass
class ScriptedMeter:
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delay_s: float = 0.0

    def commands(self, cmd: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(m, c) for m, c in self.received if cmd is None or c.get("cmd") == cmd]


@contextlib.asynccontextmanager
async def scripted_meter(
    common: CommonSettings, meters: list[str], script: Script, *, delay_s: float = 0.0
) -> AsyncIterator[ScriptedMeter]:
    state = ScriptedMeter(delay_s=delay_s)
    async with mqtt_client(common.mqtt, identifier=f"test-meter-{uuid.uuid4().hex[:8]}") as client:
        for meter in meters:
            await client.subscribe(common.topics.command(meter), qos=2)

        async def _answer(meter: str, body: dict[str, Any]) -> None:
            await asyncio.sleep(state.delay_s)
            answer = script(meter, body)
            if answer is None:
                return
            epoch_s, result = answer
            command = parse_command(json.dumps(body).encode())
            await client.publish(
                common.topics.command_ack(meter),
                sim_commands.ack(meter, epoch_s=epoch_s, command=command, result=result),
                qos=1,
            )

        async def _serve() -> None:
            async with asyncio.TaskGroup() as group:
                async for message in client.messages:
                    meter = str(message.topic).split("/")[-2]
                    body = json.loads(bytes(message.payload))
                    state.received.append((meter, body))
                    group.create_task(_answer(meter, body), name=f"answer-{meter}")

        task = asyncio.create_task(_serve(), name="scripted-meter")
        try:
            yield state
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
