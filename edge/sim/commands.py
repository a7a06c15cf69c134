"""Simulated meters carry out commands (:mod:`enerlink.schemas.commands`: the contract, its scenarios and
acks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.messages import iso
from enerlink.edge.sim.scenarios import ScenarioError
from enerlink.schemas.commands import SCENARIOS, Command, CommandError, SettleResult, make_ack


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
        return SettleResult(
            settled_export_wh=round(float(before[:, 0].sum()), 5),
            settled_import_wh=round(float(before[:, 1].sum()), 5),
        ).model_dump()
    return {}


def ack(
    meter_id: str,
    *,
    epoch_s: float,
    command: Command | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bytes:
    return make_ack(
        meter_id,
        at=iso(epoch_s),
        cmd=command.cmd if command else None,
        command_id=command.id if command else None,
        result=result,
        error=error,
    ).payload()
