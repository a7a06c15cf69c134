"""Billing settlements: ``POST /meters/{id}/settlements`` closes a period (sends ``settle``, waits for
the ack, records it), ``GET`` lists them or returns one as JSON or CSV (``Accept: text/csv`` or
``?format=csv``). The logic lives in :mod:`enerlink.settlement.records` (shared with ``enerlink settle``).

A settlement answers ``pending`` until the aggregator has covered its last minute (at most about a
minute and its grace later); reading it after that returns it ``final`` with the energies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from enerlink.api.deps import AppState, State
from enerlink.api.models import Problem
from enerlink.schemas.telemetry import METER_ID_PATTERN
from enerlink.settlement import records, settling
from enerlink.settlement.settings import SettlementSettings

router = APIRouter(tags=["settlements"])

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
MeterIdPath = Annotated[
    str, Path(pattern=METER_ID_PATTERN, min_length=1, max_length=64, description="meterId")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown meter or settlement"},
    409: {"model": Problem, "description": "another settlement of this meter is waiting for its ack"},
    422: {"model": Problem, "description": "invalid request"},
    502: {"model": Problem, "description": "the meter refused the settle command"},
    503: {"model": Problem, "description": "the MQTT broker is unreachable (nothing recorded)"},
    504: {"model": Problem, "description": "the meter did not acknowledge in time (offline?)"},
}


class SettleRequest(BaseModel):
    request_id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="idempotency key (or the Idempotency-Key header)",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=600, description="wait at most this long for the ack (capped by the server's)"
    )


class SettlementOut(BaseModel):
    id: int
    meter_id: str
    seq: int = Field(description="the meter's settlement number: 1, 2, 3 …")
    status: Literal["requested", "pending", "final"]
    period_start: datetime | None = Field(description="= the previous period's end; null until final")
    period_end: datetime | None = Field(description="the ack's datetime (device clock)")
    import_wh: float | None = Field(description="from the minute aggregates (counter deltas)")
    export_wh: float | None
    net_wh: float | None = Field(description="export - import")
    device_import_wh: float | None = Field(description="the meter's settlement counter at the close")
    device_export_wh: float | None
    diff_import_wh: float | None = Field(description="device - pipeline")
    diff_export_wh: float | None
    tolerance_wh: float | None
    mismatch: bool | None
    minutes: int | None = Field(description="minute aggregates the period touches")
    request_id: str
    source: str
    requested_at: datetime
    acked_at: datetime | None
    finalized_at: datetime | None
    readings_expected: int | None = Field(
        None, description="readings the period's minutes should hold, from seq; null: unknown (no seq)"
    )
    readings_received: int | None = Field(None, description="readings stored in the period's minutes")
    readings_repaired: int | None = Field(None, description="of those, stored after a re-send")
    readings_missing: int | None = Field(
        None, description="still missing when final (the repair deadline passed); a pending period waits"
    )


CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": SettlementOut, "description": "a retried request: the settlement recorded for it"},
    **ERRORS,
}


def settlement_settings(state: State) -> SettlementSettings:
    return state.settings.settlement


def _wants_csv(request: Request, format: str | None) -> bool:
    if format is not None:
        return format == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _csv(rows: list[records.Settlement], name: str) -> Response:
    return Response(
        records.to_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _json(s: records.Settlement) -> dict[str, Any]:
    return s.to_dict()


@router.post(
    "/meters/{meter_id}/settlements",
    response_model=SettlementOut,
    status_code=201,
    responses=CREATE_RESPONSES,
    summary="Close the meter's billing period: send settle, wait for the ack, record the settlement",
)
async def create_settlement(
    meter_id: MeterIdPath,
    state: AppState,
    response: Response,
    body: SettleRequest | None = None,
    idempotency_key: Annotated[
        str | None, Header(pattern=REQUEST_ID_PATTERN, description="a retried request returns the same one")
    ] = None,
) -> dict[str, Any]:
    request_id = idempotency_key
    if body is not None and body.request_id is not None:
        if request_id is not None and request_id != body.request_id:
            raise HTTPException(422, "Idempotency-Key and request_id differ")
        request_id = body.request_id
    try:
        settlement, created = await settling.settle(
            connect=state.pool.connection,
            redis=state.redis,
            common=state.settings.common,
            settings=settlement_settings(state),
            meter_id=meter_id,
            request_id=request_id,
            source="api",
            timeout_s=body.timeout_s if body else None,
        )
    except records.SettlementError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    response.headers["Location"] = f"/meters/{meter_id}/settlements/{settlement.id}"
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return _json(settlement)


@router.get(
    "/meters/{meter_id}/settlements",
    response_model=list[SettlementOut],
    responses={200: {"content": {"text/csv": {}}}},
    summary="The meter's settlements, newest first (JSON, or CSV with Accept: text/csv or ?format=csv)",
)
async def list_settlements(
    meter_id: MeterIdPath,
    state: AppState,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> Any:
    rows = await records.list_for(
        state.pool.connection, settlement_settings(state), meter_id=meter_id, limit=limit
    )
    if _wants_csv(request, format):
        return _csv(rows, f"settlements-{meter_id}")
    return [_json(s) for s in rows]


@router.get(
    "/meters/{meter_id}/settlements/{settlement_id}",
    response_model=SettlementOut,
    responses={200: {"content": {"text/csv": {}}}, 404: ERRORS[404]},
    summary="One settlement (JSON, or CSV for a billing system)",
)
async def get_settlement(
    meter_id: MeterIdPath,
    settlement_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    state: AppState,
    request: Request,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> Any:
    found = await records.get(
        state.pool.connection, settlement_settings(state), meter_id=meter_id, id=settlement_id
    )
    if found is None:
        raise HTTPException(404, f"meter {meter_id} has no settlement {settlement_id}")
    if _wants_csv(request, format):
        return _csv([found], f"settlement-{meter_id}-{found.seq}")
    return _json(found)
