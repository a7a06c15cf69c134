"""The simulated fleet over HTTP: ``GET /simulation``, ``POST /simulation/start`` and ``/simulation/stop``.

The fleet runs in its own process (``enerlink edge --simulate``) or inside ``enerlink up``; these routes
reach it over MQTT (:mod:`enerlink.simulation`, :mod:`enerlink.schemas.simulation`): the state is what the
fleet
last published (retained), a start or stop returns the state that answers the command.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from enerlink import simulation
from enerlink.api.deps import AppState, State
from enerlink.api.models import Problem
from enerlink.commands import BrokerError
from enerlink.schemas.simulation import FleetCommand, FleetCommandName, FleetState, SimulationParams

router = APIRouter(tags=["simulation"])

ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Problem,
        "description": "the fleet refused the command (e.g. running with other parameters)",
    },
    503: {"model": Problem, "description": "the MQTT broker is unreachable"},
    504: {"model": Problem, "description": "no simulated fleet answered in time"},
}


@router.get(
    "/simulation",
    response_model=FleetState,
    responses={503: ERRORS[503]},
    summary="The simulated fleet: running or not, meters, interval, speed, scenarios, messages sent",
)
async def simulation_state(state: AppState) -> FleetState:
    common = state.settings.common
    try:
        found = await simulation.read_state(common.mqtt, common.topics)
    except BrokerError as exc:
        raise HTTPException(503, str(exc)) from exc
    return found or FleetState(online=False, running=False)


async def _command(state: State, cmd: FleetCommandName, params: SimulationParams | None) -> FleetState:
    common = state.settings.common
    timeout_s = state.settings.settlement.commands.timeout_s
    command = FleetCommand(cmd=cmd, **(params.model_dump(exclude_none=True) if params else {}))
    try:
        answer = await simulation.send(common.mqtt, common.topics, command, timeout_s=timeout_s)
    except BrokerError as exc:
        raise HTTPException(503, str(exc)) from exc
    if answer is None:
        raise HTTPException(
            504,
            f"no simulated fleet answered {cmd} on {common.topics.fleet_command} within {timeout_s:g} s"
            " (is `enerlink edge --simulate` or `enerlink up` running with this topic prefix?)",
        )
    if answer.error is not None:
        raise HTTPException(409, answer.error)
    return answer


@router.post(
    "/simulation/start",
    response_model=FleetState,
    responses=ERRORS,
    summary="Start the simulated meters (a no-op returning the state when they run with these parameters)",
)
async def simulation_start(
    state: AppState, body: Annotated[SimulationParams | None, Body()] = None
) -> FleetState:
    """Fields left out keep the fleet's current values. Counters and ``seq`` continue where they
    stopped. Running with other parameters: 409 (stop first)."""
    return await _command(state, "start", body)


@router.post(
    "/simulation/stop",
    response_model=FleetState,
    responses=ERRORS,
    summary="Stop the simulated meters (their presence goes offline; the fleet process keeps listening)",
)
async def simulation_stop(state: AppState) -> FleetState:
    return await _command(state, "stop", None)
