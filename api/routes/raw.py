"""Raw readings from the archive: ``GET /meters/{id}/raw?day=`` (one meter's readings of a UTC day as
one Parquet file) and ``GET /telemetry/archive/raw?day=`` (the day's raw objects, from their manifest).
pyarrow is imported on the first download only: the API does not carry it otherwise."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from psycopg import sql
from pydantic import BaseModel, Field

from enerlink.api.deps import AppState, iso
from enerlink.api.models import Problem
from enerlink.archiver.storage import StorageError
from enerlink.schemas.telemetry import METER_ID_PATTERN
from enerlink.schemas.wire import Buckets, Tables

router = APIRouter(tags=["archive"])


class RawObjectEntry(BaseModel):
    day: str = Field(examples=["2026-12-06"])
    group: int = Field(description="meter group: CRC-32 of the meter id modulo 16", examples=[3])
    hour: int = Field(description="UTC hour of the readings", examples=[13])
    part: int = Field(description="0: the hour as exported; 1..: readings that arrived later", examples=[0])
    object_key: str = Field(examples=["raw/2026-12-06/g03/13-000.parquet"])
    backend: str = Field(examples=["minio"])
    row_count: int
    size_bytes: int
    sha256: str
    first_at: str | None = None
    last_at: str | None = None
    meters: list[str]
    archived_at: str


async def _rows(state: AppState, day: date, group: int | None = None) -> list[dict[str, Any]]:
    where = sql.SQL("day = %s") if group is None else sql.SQL("day = %s and grp = %s")
    params = (day,) if group is None else (day, group)
    query = sql.SQL("select * from {} where {} order by grp, hour, part").format(
        sql.Identifier(Tables.RAW_MANIFEST), where
    )
    return await state.fetch(query, params)


@router.get(
    "/telemetry/archive/raw",
    response_model=list[RawObjectEntry],
    summary="Raw-reading objects of a UTC day (from the raw archive manifest)",
)
async def raw_list(
    state: AppState, day: Annotated[date, Query(description="UTC day")]
) -> list[RawObjectEntry]:
    return [
        RawObjectEntry(
            day=row["day"].isoformat(),
            group=row["grp"],
            hour=row["hour"],
            part=row["part"],
            object_key=row["object_key"],
            backend=row["backend"],
            row_count=row["row_count"],
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            first_at=iso(row["first_at"]),
            last_at=iso(row["last_at"]),
            meters=list(row["meters"]),
            archived_at=iso(row["archived_at"]) or "",
        )
        for row in await _rows(state, day)
    ]


@router.get(
    "/meters/{meter_id}/raw",
    response_class=Response,
    responses={
        200: {
            "content": {Buckets.RAW_CONTENT_TYPE: {}},
            "description": "the meter's readings of the day, Parquet",
        },
        404: {"model": Problem, "description": "no archived reading of this meter on that day"},
    },
    summary="A meter's raw readings of a UTC day (Parquet, from the archive)",
)
async def meter_raw(
    state: AppState,
    meter_id: Annotated[str, Path(pattern=METER_ID_PATTERN, max_length=64)],
    day: Annotated[date, Query(description="UTC day")],
) -> Response:
    rows = await _rows(state, day, Buckets.raw_group(meter_id))

    def _build() -> tuple[bytes, int]:
        from enerlink.archiver.raw_format import write_parquet  # pyarrow loads only when a raw file is served
        from enerlink.archiver.raw_objects import meter_day

        table = meter_day(state.store, rows, meter_id)
        return (write_parquet(table) if table.num_rows else b""), table.num_rows

    try:
        data, count = await asyncio.to_thread(_build)
    except (OSError, ValueError, StorageError) as exc:  # an object missing or not as in the manifest
        raise HTTPException(404, f"raw readings of {meter_id} on {day}: {exc}") from exc
    if not count:
        raise HTTPException(404, f"no archived raw reading of {meter_id} on {day}")
    headers = {
        "Content-Disposition": f'attachment; filename="{meter_id}-{day.isoformat()}.parquet"',
        "X-Row-Count": str(count),
    }
    return Response(data, media_type=Buckets.RAW_CONTENT_TYPE, headers=headers)
