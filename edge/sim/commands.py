"""Commands to simulated meters (``{prefix}/meters/{meterId}/cmd``) and their acknowledgements.

Accepted JSON (unknown keys are ignored, ``id`` is echoed in the ack)::

    {"cmd": "scenario", "name": "grid_outage", "duration_s": 600}
    {"cmd": "scenario", "name": "sensor_failure", "sensor": "Solar Input"}
    {"cmd": "clear"}            {"cmd": "clear", "name": "heatwave"}
    {"cmd": "settle"}           {"cmd": "status_now"}

Every command gets an ack on ``{prefix}/meters/{meterId}/cmd/ack``:
``{"meterId", "datetime", "cmd", "ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.sim.engine import Simulator
from edge.sim.messages import iso
from edge.sim.scenarios import SCENARIOS, ScenarioError

CommandName = Literal["scenario", "clear", "settle", "status_now"]


class Command(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    cmd: CommandName
    name: str | None = None
    duration_s: float | None = Field(default=None, gt=0, le=365 * 86400)
    sensor: str | None = None
    id: str | None = Field(default=None, max_length=128)


class CommandError(ValueError):
    pass


def parse(payload: bytes) -> Command:
    try:
        return Command.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise CommandError(f"{where}: {first['msg']}") from exc


def apply(sim: Simulator, meters: list[int], command: Command, *, epoch_s: float) -> dict[str, Any]:
    """Apply ``command`` to the meters (indexes); returns the ack's ``result``.

    ``status_now`` is answered by the caller (it publishes the status); here it only validates.
    """
    rows = np.asarray(meters, dtype=np.intp)
    if command.cmd == "scenario":
        if command.name not in SCENARIOS:
            raise CommandError(f"unknown scenario {command.name!r}; one of {list(SCENARIOS)}")
        until = epoch_s + command.duration_s if command.duration_s else math.inf
        try:
            sim.scenarios.set(command.name, rows, until=until, sensor=command.sensor)
        except ScenarioError as exc:
            raise CommandError(str(exc)) from exc
        result: dict[str, Any] = {"scenario": command.name}
        if command.duration_s:
            result["until"] = iso(until)
        return result
    if command.cmd == "clear":
        if command.name is not None and command.name not in SCENARIOS:
            raise CommandError(f"unknown scenario {command.name!r}")
        sim.scenarios.clear(rows, command.name)
        return {"cleared": command.name or "all"}
    if command.cmd == "settle":
        before = sim.counters.settlement[rows].copy()
        sim.settle(rows)
        return {
            "settled_export_wh": round(float(before[:, 0].sum()), 5),
            "settled_import_wh": round(float(before[:, 1].sum()), 5),
        }
    return {}


def ack(
    meter_id: str,
    *,
    epoch_s: float,
    command: Command | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "meterId": meter_id,
        "datetime": iso(epoch_s),
        "cmd": command.cmd if command else None,
        "ok": error is None,
    }
    if command is not None and command.id is not None:
        body["id"] = command.id
    if error is None:
        body["result"] = result or {}
    else:
        body["error"] = error
    return orjson.dumps(body)
