"""``GET /telemetry/archive`` (the manifest) and ``/telemetry/archive/{year}/{month}`` (the object,
streamed from MinIO or the local folder in chunks, never loaded whole into memory)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from psycopg import sql

from enerlink.api.deps import AppState, iso
from enerlink.api.models import ArchiveEntry, Problem
from enerlink.archiver.months import ARCHIVED_TABLES
from enerlink.schemas.wire import Tables

router = APIRouter(prefix="/telemetry/archive", tags=["archive"])

ArchivedName = Literal[tuple(t.name for t in ARCHIVED_TABLES)]  # type: ignore[valid-type]


def _entry(row: dict[str, Any]) -> ArchiveEntry:
    return ArchiveEntry(
        table=row["table_name"],
        year=row["year"],
        month=row["month"],
        object_key=row["object_key"],
        backend=row["backend"],
        row_count=row["row_count"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        first_at=iso(row["first_at"]),
        last_at=iso(row["last_at"]),
        schema_version=row["schema_version"],
        archived_at=iso(row["archived_at"]) or "",
        download=f"/telemetry/archive/{row['year']}/{row['month']}?table={row['table_name']}",
    )


async def _manifest(state: AppState, where: sql.Composable, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    query = sql.SQL("select * from {} where {} order by year, month, table_name").format(
        sql.Identifier(Tables.ARCHIVE_MANIFEST), where
    )
    return await state.fetch(query, params)


@router.get("", response_model=list[ArchiveEntry], summary="Archived months (from the archive manifest)")
async def archive_list(
    state: AppState,
    table: Annotated[ArchivedName | None, Query(description="only this table")] = None,  # type: ignore[valid-type]
) -> list[ArchiveEntry]:
    if table is None:
        rows = await _manifest(state, sql.SQL("true"), ())
    else:
        rows = await _manifest(state, sql.SQL("table_name = %s"), (table,))
    return [_entry(r) for r in rows]


@router.get(
    "/{year}/{month}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/gzip": {}},
            "description": "the month as gzip-compressed CSV with a header row",
        },
        404: {"model": Problem, "description": "month not archived, or object missing from the store"},
    },
    summary="Download an archived month (.csv.gz)",
)
async def archive_download(
    state: AppState,
    year: Annotated[int, Path(ge=1970, le=9999)],
    month: Annotated[int, Path(ge=1, le=12)],
    table: Annotated[ArchivedName, Query()] = Tables.TELEMETRY_AGGREGATES,  # type: ignore[valid-type]
) -> StreamingResponse:
    rows = await _manifest(
        state, sql.SQL("table_name = %s and year = %s and month = %s"), (table, year, month)
    )
    if not rows:
        raise HTTPException(404, f"{table} {year:04d}-{month:02d} is not archived")
    key = str(rows[0]["object_key"])
    info = await asyncio.to_thread(state.store.stat, key)
    if info is None:
        raise HTTPException(404, f"{key} is in the manifest but not in the {state.store.backend} store")
    headers = {
        "Content-Length": str(info.size),
        "Content-Disposition": f'attachment; filename="{table}-{year:04d}-{month:02d}.csv.gz"',
        "X-Row-Count": str(rows[0]["row_count"]),
        "X-Sha256": str(rows[0]["sha256"]),
    }
    # a sync iterator: Starlette pulls each chunk in a worker thread
    return StreamingResponse(state.store.iter_chunks(key), media_type="application/gzip", headers=headers)
