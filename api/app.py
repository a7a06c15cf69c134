"""``create_app(settings)``: the FastAPI application with its stores opened in the lifespan.

Auth: when ``ENERLINK_API_TOKEN`` is set every API route needs ``Authorization: Bearer <token>``
(the WebSocket also accepts ``?token=``), except ``/health``, the dashboard page and its static
files (the page asks for the token and sends it with its API calls) and the OpenAPI docs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from psycopg_pool import AsyncConnectionPool

from enerlink.api import ws
from enerlink.api.deps import State, require_token
from enerlink.api.live import LiveHub
from enerlink.api.routes import (
    archive,
    commands,
    completeness,
    device_health,
    energy,
    health,
    history,
    latest,
    meters,
    raw,
    settlements,
    simulation,
)
from enerlink.api.settings import Settings
from enerlink.archiver.storage import open_store
from enerlink.db import migrate
from enerlink.redis_client import async_client, lazily

log = logging.getLogger(__name__)


def _metrics(registry: CollectorRegistry, app: FastAPI) -> None:
    def _hub() -> LiveHub | None:
        state = getattr(app.state, "enerlink", None)
        return state.hub if state else None

    Gauge("enerlink_api_ws_clients", "Connected WebSocket clients", registry=registry).set_function(
        lambda: float(h.clients) if (h := _hub()) else 0.0
    )
    for name, doc in (
        ("received", "Live MQTT data messages received"),
        ("invalid", "Live messages rejected by validation"),
        ("delivered", "Messages queued to WebSocket clients"),
        ("dropped_clients", "WebSocket clients dropped as too slow"),
    ):
        Gauge(f"enerlink_api_live_{name}", doc, registry=registry).set_function(
            lambda n=name: float(getattr(h.stats, n)) if (h := _hub()) else 0.0  # type: ignore[misc]
        )


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422; when the input it echoes cannot be written as UTF-8 (a lone surrogate from a JSON
    escape), the same answer with every non-ASCII character escaped."""
    try:
        return await request_validation_exception_handler(request, exc)
    except UnicodeEncodeError:
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        common = settings.common
        await migrate(common.database_url)
        hub = LiveHub(endpoint=common.mqtt, topics=common.topics, queue_size=settings.ws_queue)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            common.database_url, min_size=1, max_size=10, open=False, kwargs={"autocommit": True}
        )
        async with lazily(async_client(common.redis_url)) as redis, pool, asyncio.TaskGroup() as group:
            app.state.enerlink = State(
                settings=settings, redis=redis, pool=pool, store=open_store(settings.storage), hub=hub
            )
            live = group.create_task(hub.run(), name="api-live-mqtt")
            log.info("api: ready (auth %s)", "on" if settings.token else "off")
            try:
                yield
            finally:
                live.cancel()

    app = FastAPI(
        title="EnerLink API",
        version="1.0.0",
        summary="Latest values, history, events, archive and a live stream of EnerLink smart meters",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    secured = [Depends(require_token)]
    app.include_router(health.router)
    for module in (
        latest,
        history,
        meters,
        archive,
        raw,
        settlements,
        commands,
        device_health,
        completeness,
        energy,
        simulation,
    ):
        app.include_router(module.router, dependencies=secured)
    app.include_router(ws.router)

    registry = CollectorRegistry()
    _metrics(registry, app)
    registry.register(history.QUERY_STATS)  # refused, timed-out and auto-resolved history/health queries

    @app.get("/metrics", include_in_schema=False, dependencies=secured)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    try:  # the dashboard (``/`` and its static files) is its own module
        dashboard = importlib.import_module("enerlink.api.dashboard")
    except ModuleNotFoundError as exc:
        if exc.name != "enerlink.api.dashboard":
            raise
        log.warning("api: no dashboard module; serving the API only")
    else:
        app.include_router(dashboard.router)
    return app
