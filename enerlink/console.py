"""Live console lines for ``make run``: what each meter is doing, as it reaches the broker.

    [14:05:00] METER001: solar 12.5 kW, battery 75 %, load 8.2 kW, grid import 0.3 kW

It subscribes to the data topic like any other MQTT client (QoS 0, no session), so what it shows
is what meters really publish.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import TextIO

import aiomqtt
from pydantic import ValidationError

from enerlink.backoff import Backoff
from enerlink.config import CommonSettings
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.telemetry import DataMessage

log = logging.getLogger(__name__)


def format_power(milliwatts: float) -> str:
    """mW as the unit a person reads: kW for homes, W or mW for the lab rig."""
    magnitude = abs(milliwatts)
    if magnitude >= 1_000_000:
        return f"{milliwatts / 1_000_000:.1f} kW"
    if magnitude >= 1_000:
        return f"{milliwatts / 1_000:.1f} W"
    return f"{milliwatts:.0f} mW"


def format_line(message: DataMessage) -> str:
    data = message.data
    grid = data.net_grid
    if grid.status == "exporting":
        grid_text = f"grid export {format_power(grid.export_power)}"
    elif grid.status == "importing":
        grid_text = f"grid import {format_power(grid.import_power)}"
    else:
        grid_text = "grid idle"
    load = data.net_solar.load_power
    return (
        f"[{message.datetime.astimezone().strftime('%H:%M:%S')}] {message.meterId}: "
        f"solar {format_power(data.solar_output.power)}, battery {data.battery.soc:.0f} %, "
        f"load {format_power(load)}, {grid_text}"
    )


async def run(common: CommonSettings, *, out: TextIO = sys.stdout) -> None:
    """Print one line per data message until cancelled; reconnects with backoff."""
    backoff = Backoff()
    while True:
        try:
            async with mqtt_client(
                common.mqtt, identifier=f"enerlink-console-{uuid.uuid4().hex[:8]}"
            ) as client:
                await client.subscribe(common.topics.data, qos=0)
                backoff.reset()
                async for message in client.messages:
                    try:
                        parsed = DataMessage.model_validate_json(bytes(message.payload))
                    except ValidationError:
                        continue  # the ingest counts and reports bad messages
                    print(format_line(parsed), file=out, flush=True)
        except aiomqtt.MqttError as exc:
            log.warning("console: broker unreachable (%s), retry %d", exc, backoff.attempt + 1)
            await backoff.sleep()
