"""The newest message of each meter, straight from Redis (the ingest writes these hashes)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

from enerlink import redis_parts as parts
from enerlink.api.deps import AppState
from enerlink.api.models import Problem
from enerlink.schemas.telemetry import METER_ID_PATTERN, DataMessage, StatusMessage

router = APIRouter(prefix="/telemetry/latest", tags=["latest"])

MeterIdPath = Annotated[
    str,
    Path(pattern=METER_ID_PATTERN, min_length=1, max_length=64, description="meterId", examples=["METER001"]),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no message from this meter (unknown meter)"}
}


def _json(body: bytes | str) -> Response:
    return Response(body, media_type="application/json")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@router.get(
    "/data",
    response_model=dict[str, DataMessage],
    summary="Newest data message of every meter, keyed by meterId",
)
async def latest_data_all(state: AppState) -> Response:
    entries = await parts.hgetall(state.redis, state.settings.common.keys, lambda k: k.latest_data)
    body = {_text(k): orjson.Fragment(v) for k, v in sorted(entries.items())}
    return _json(orjson.dumps(body))


@router.get(
    "/data/{meter_id}",
    response_model=DataMessage,
    responses=NOT_FOUND,
    summary="Newest data message of a meter",
)
async def latest_data(meter_id: MeterIdPath, state: AppState) -> Response:
    value = await state.redis.hget(state.settings.common.keys.of(meter_id).latest_data, meter_id)
    if value is None:
        raise HTTPException(404, f"meter {meter_id} has no data")
    return _json(value)


@router.get(
    "/status/{meter_id}",
    response_model=StatusMessage,
    responses=NOT_FOUND,
    summary="Newest status message of a meter",
)
async def latest_status(meter_id: MeterIdPath, state: AppState) -> Response:
    value = await state.redis.hget(state.settings.common.keys.of(meter_id).latest_status, meter_id)
    if value is None:
        raise HTTPException(404, f"meter {meter_id} has no status")
    return _json(value)
