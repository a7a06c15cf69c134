"""``GET /meters/{meter_id}/energy`` and ``GET /energy`` (the fleet): kWh per local hour or day of
each energy flow, with self-consumption and self-sufficiency (computation in :mod:`enerlink.api.energy`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from enerlink.api import energy
from enerlink.api.deps import AppState, State, iso, utc
from enerlink.api.models import Problem
from enerlink.api.routes.history import bounded_rows, meter_known
from enerlink.api.routes.latest import MeterIdPath
from enerlink.schemas.wire import Tables

router = APIRouter(tags=["energy"])


class EnergyFigures(BaseModel):
    grid_import_kwh: float
    grid_export_kwh: float
    solar_kwh: float = Field(description="solar production (solar_output channel)")
    load_kwh: float = Field(description="home load (load_home + load_smart_mtr)")
    battery_charge_kwh: float = Field(description="from the energy balance, per 5 minutes")
    battery_discharge_kwh: float
    self_consumption_pct: float | None = Field(description="(solar - export) / solar; null without solar")
    self_sufficiency_pct: float | None = Field(description="(load - import) / load; null without load")


class EnergyBucket(EnergyFigures):
    start: str = Field(description="ISO 8601 UTC start of the local hour or day")
    meters: int = Field(description="meters with data in the bucket")


class EnergyResponse(BaseModel):
    meter_id: str | None = Field(description="null for the fleet")
    bucket: energy.Bucket
    timezone: str = Field(examples=["Europe/Lisbon"])
    start: str
    end: str
    buckets: list[EnergyBucket] = Field(description="buckets with data, oldest first")
    total: EnergyFigures


_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "unknown meter"},
    422: {"model": Problem, "description": "bad id, bucket or range, or too long a range"},
    503: {"model": Problem, "description": "no 5-minute table yet, unknown timezone, or query timed out"},
}
BucketQuery = Annotated[energy.Bucket, Query(description="local hours (1h) or local days (1d)")]
Start = Annotated[
    datetime | None,
    Query(description="inclusive, moved back to its bucket's start; default: today (1h), 30 days ago (1d)"),
]
End = Annotated[
    datetime | None,
    Query(description="exclusive, moved on to a bucket boundary; default: tonight's midnight"),
]


async def _energy(
    *, state: State, meter_id: str | None, bucket: energy.Bucket, start: datetime | None, end: datetime | None
) -> EnergyResponse:
    name = state.settings.common.timezone
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise HTTPException(503, f"ENERLINK_TIMEZONE {name!r} is not a known time zone") from exc
    try:
        span = energy.window(
            bucket=bucket,
            start=utc(start) if start else None,
            end=utc(end) if end else None,
            now=datetime.now(UTC),
            zone=zone,
        )
    except (OverflowError, ValueError) as exc:  # RangeError, or a date beyond the calendar
        raise HTTPException(422, f"bad range: {exc}") from exc
    if not await state.columns(Tables.TELEMETRY_5M):
        raise HTTPException(503, f"table {Tables.TELEMETRY_5M} does not exist yet")
    if meter_id is not None and not await meter_known(state, meter_id, Tables.TELEMETRY_5M):
        raise HTTPException(404, f"unknown meter {meter_id}")
    params = {"tz": name, "start": span.start, "end": span.end, "meter_id": meter_id}
    rows = await bounded_rows(state, energy.energy_query(bucket=bucket, fleet=meter_id is None), params)
    buckets, total = energy.summarise(rows)
    return EnergyResponse(
        meter_id=meter_id,
        bucket=bucket,
        timezone=name,
        start=iso(span.start) or "",
        end=iso(span.end) or "",
        buckets=[EnergyBucket.model_validate({**b, "start": iso(b["start"])}) for b in buckets],
        total=EnergyFigures.model_validate(total),
    )


@router.get(
    "/meters/{meter_id}/energy",
    response_model=EnergyResponse,
    responses=_RESPONSES,
    summary="A meter's kWh per local hour or day: grid, solar, load, battery, self-consumption",
)
async def meter_energy(
    *,
    meter_id: MeterIdPath,
    state: AppState,
    bucket: BucketQuery = "1h",
    start: Start = None,
    end: End = None,
) -> EnergyResponse:
    return await _energy(state=state, meter_id=meter_id, bucket=bucket, start=start, end=end)


@router.get(
    "/energy",
    response_model=EnergyResponse,
    responses=_RESPONSES,
    summary="The fleet's kWh per local hour or day (every meter summed)",
)
async def fleet_energy(
    *, state: AppState, bucket: BucketQuery = "1h", start: Start = None, end: End = None
) -> EnergyResponse:
    return await _energy(state=state, meter_id=None, bucket=bucket, start=start, end=end)
