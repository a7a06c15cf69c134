"""Control of meters over HTTP: ``GET /scenarios``, ``POST /meters/{id}/commands`` and ``POST /commands``
(a list of meters or all known ones), each returning every meter's ack or its timeout.

Commands are those of the MQTT command topic (``scenario``, ``clear``, ``settle``, ``status_now``).
``settle`` is always a recorded settlement (:mod:`enerlink.settlement.records`), never a bare counter reset,
so no billing period can be lost by a command sent from here. Each meter's outcome is logged in the
events table (kind ``command``). Meters the pipeline has never heard of are not sent anything
(outcome ``unknown``; 404 for the single-meter route).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from enerlink import commands
from enerlink import redis_parts as parts
from enerlink.api.deps import AppState, State
from enerlink.api.models import Problem
from enerlink.api.routes.settlements import REQUEST_ID_PATTERN, SettlementOut, settlement_settings
from enerlink.schemas.commands import SCENARIO_NAMES, SCENARIOS, Command, CommandName, PlainText
from enerlink.schemas.telemetry import METER_ID_PATTERN, MeterId
from enerlink.settlement import records, settling

router = APIRouter(tags=["commands"])

MeterIdPath = Annotated[
    str, Path(pattern=METER_ID_PATTERN, min_length=1, max_length=64, description="meterId")
]
Outcome = Literal["ok", "error", "timeout", "unknown", "busy"]
_STATUS: dict[str, int] = {"timeout": 504, "error": 502, "unknown": 404, "busy": 409}
_OUTCOME: dict[int, Outcome] = {504: "timeout", 502: "error", 404: "unknown", 409: "busy"}
_UNAVAILABLE = 503


class Scenario(BaseModel):
    name: str = Field(examples=["grid_outage"])
    description: str


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cmd: CommandName
    name: str | None = Field(default=None, max_length=64, description="scenario: which one (GET /scenarios)")
    duration_s: float | None = Field(default=None, gt=0, le=365 * 86400, description="scenario: how long")
    sensor: PlainText | None = Field(default=None, max_length=64, description="sensor_failure: which INA219")
    timeout_s: float | None = Field(
        default=None, gt=0, le=600, description="wait at most this long for acks (capped by the server's)"
    )
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN, description="echoed as the id")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cmd == "scenario" and self.name not in SCENARIO_NAMES:
            raise ValueError(f"scenario needs a name, one of {list(SCENARIO_NAMES)}")
        if self.cmd == "clear" and self.name is not None and self.name not in SCENARIO_NAMES:
            raise ValueError(f"clear: unknown scenario {self.name!r}")
        if self.cmd not in ("scenario", "clear") and self.name is not None:
            raise ValueError(f"{self.cmd} takes no name")
        if self.cmd != "scenario" and (self.duration_s is not None or self.sensor is not None):
            raise ValueError("duration_s and sensor go with cmd scenario only")
        return self

    def message(self) -> dict[str, Any]:
        """The JSON the meter receives (without ``id``)."""
        return Command(cmd=self.cmd, name=self.name, duration_s=self.duration_s, sensor=self.sensor).body()


class FleetCommandIn(CommandIn):
    meters: list[MeterId] | None = Field(default=None, min_length=1, max_length=10_000)
    all: bool = Field(default=False, description="every meter the pipeline knows (the meters registry)")

    @model_validator(mode="after")
    def _targets(self) -> Self:
        if bool(self.meters) == self.all:
            raise ValueError("give either meters (a list) or all: true")
        return self


class MeterOutcome(BaseModel):
    meter_id: str
    outcome: Outcome
    ack: dict[str, Any] | None = None
    error: str | None = None
    settlement: SettlementOut | None = None


class CommandOut(BaseModel):
    request_id: str
    cmd: str
    sent: int = Field(description="meters the command was sent to (not unknown or busy ones)")
    ok: int = Field(description="meters that acknowledged with ok")
    results: list[MeterOutcome]


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown meter"},
    409: {"model": Problem, "description": "a settlement of the meter is already waiting for its ack"},
    502: {"model": Problem, "description": "the meter refused the command"},
    503: {"model": Problem, "description": "the MQTT broker is unreachable"},
    504: {"model": Problem, "description": "the meter did not acknowledge in time (offline?)"},
}


@router.get("/scenarios", response_model=list[Scenario], summary="Scenarios a simulated meter can run")
async def scenarios() -> list[Scenario]:
    return [Scenario(name=n, description=d) for n, d in SCENARIOS.items()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _all_known(state: State) -> list[str]:
    """Every meter the pipeline knows: the meters registry and the presence hash."""
    keys = state.settings.common.keys
    known = await parts.hkeys(state.redis, keys, [lambda k: k.meters, lambda k: k.presence])
    return sorted({_text(m) for m in known})


async def _known(state: State, meters: list[str]) -> set[str]:
    keys = state.settings.common.keys
    seen, present = await parts.hmget(state.redis, keys, [lambda k: k.meters, lambda k: k.presence], meters)
    return {m for m, a, b in zip(meters, seen, present, strict=True) if a is not None or b is not None}


def _settled(result: settling.Result) -> MeterOutcome:
    if result.error is not None:
        outcome = _OUTCOME.get(result.error.status, "error")
        return MeterOutcome(meter_id=result.meter_id, outcome=outcome, error=str(result.error))
    assert result.settlement is not None
    return MeterOutcome(
        meter_id=result.meter_id,
        outcome="ok",
        ack=result.settlement.ack,
        settlement=SettlementOut.model_validate(result.settlement.to_dict()),
    )


async def _run(state: State, body: CommandIn, meters: list[str]) -> CommandOut:
    request_id = body.request_id or commands.new_command_id()
    known = await _known(state, meters) if meters else set()
    targets = [m for m in dict.fromkeys(meters) if m in known]
    results: dict[str, MeterOutcome] = {
        m: MeterOutcome(meter_id=m, outcome="unknown", error=f"unknown meter {m}: never heard from")
        for m in meters
        if m not in known
    }
    if body.cmd == "settle" and targets:
        try:
            settled = await settling.settle_many(
                connect=state.pool.connection,
                redis=state.redis,
                common=state.settings.common,
                settings=settlement_settings(state),
                meters=targets,
                request_id=request_id,
                source="api-command",
                timeout_s=body.timeout_s,
            )
        except records.BrokerUnavailable as exc:
            raise HTTPException(_UNAVAILABLE, str(exc)) from exc
        results.update((r.meter_id, _settled(r)) for r in settled)
    elif targets:
        server_s = settlement_settings(state).commands.timeout_s
        timeout_s = min(body.timeout_s or server_s, server_s)
        common = state.settings.common
        message = body.message()
        try:
            answers = await commands.send(
                common.mqtt, common.topics, targets, message, timeout_s=timeout_s, command_id=request_id
            )
        except commands.BrokerError as exc:
            raise HTTPException(_UNAVAILABLE, str(exc)) from exc
        async with state.pool.connection() as conn:
            await commands.log_outcomes(
                conn, list(answers.values()), body=message, request_id=request_id, source="api"
            )
        described = {
            m: await commands.describe_meter(state.redis, common.keys, m)
            for m, a in answers.items()
            if a.outcome == "timeout"
        }
        for meter, answer in answers.items():
            error = None
            if answer.outcome == "timeout":
                error = commands.timeout_message(meter, body.cmd, timeout_s, described[meter])
            elif answer.outcome == "error" and answer.ack is not None:
                error = str(answer.ack.get("error"))
            results[meter] = MeterOutcome(meter_id=meter, outcome=answer.outcome, ack=answer.ack, error=error)
    ordered = [results[m] for m in dict.fromkeys(meters)]
    return CommandOut(
        request_id=request_id,
        cmd=body.cmd,
        sent=sum(1 for r in ordered if r.outcome not in ("unknown", "busy")),
        ok=sum(1 for r in ordered if r.outcome == "ok"),
        results=ordered,
    )


@router.post(
    "/meters/{meter_id}/commands",
    response_model=CommandOut,
    responses=ERRORS,
    summary="Send a command to one meter and return its acknowledgement",
)
async def meter_command(meter_id: MeterIdPath, body: CommandIn, state: AppState) -> CommandOut:
    out = await _run(state, body, [meter_id])
    result = out.results[0]
    if result.outcome != "ok":
        raise HTTPException(_STATUS[result.outcome], result.error or result.outcome)
    return out


@router.post(
    "/commands",
    response_model=CommandOut,
    summary="Send a command to a list of meters (or all known ones); each meter's ack or timeout",
)
async def fleet_command(body: FleetCommandIn, state: AppState) -> CommandOut:
    meters = await _all_known(state) if body.all else list(body.meters or [])
    return await _run(state, body, meters)
