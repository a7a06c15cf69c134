"""``GET /health``: Redis and PostgreSQL answer (200) or not (503). Never needs the token."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from enerlink.api.deps import AppState
from enerlink.api.models import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


async def _redis(state: AppState) -> str:
    try:
        await asyncio.wait_for(state.redis.ping(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure is the answer, not an error of ours
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"


async def _postgres(state: AppState) -> str:
    try:
        async with state.pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
            await asyncio.wait_for(conn.execute("select 1"), CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or PostgreSQL does not answer"}},
    summary="Liveness of the API and its stores",
)
async def health(state: AppState) -> JSONResponse:
    redis_state, pg_state = await asyncio.gather(_redis(state), _postgres(state))
    ok = redis_state == "ok" and pg_state == "ok"
    body = Health(
        status="ok" if ok else "degraded",
        redis=redis_state,
        postgres=pg_state,
        live_mqtt="connected" if state.hub.connected.is_set() else "reconnecting",
    )
    if not ok:
        log.warning("health: redis=%s postgres=%s", redis_state, pg_state)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
