"""The API service: uvicorn's Server running inside our event loop, cancellable like every service.

Signals are handled by :func:`enerlink.runtime.run_service` (uvicorn's own handlers are disabled);
cancelling :func:`run` asks uvicorn to shut down gracefully and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from enerlink.api.app import create_app
from enerlink.api.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # the service runner owns signals
        yield


def server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_ping_interval=settings.ws_ping_s,
        ws_ping_timeout=settings.ws_ping_s,
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


async def run(settings: Settings) -> None:
    """Serve until cancelled, then shut down gracefully."""
    instance = server(settings)
    serving = asyncio.ensure_future(instance.serve())
    try:
        await asyncio.shield(serving)
        if instance.started is False:
            raise RuntimeError(f"api: could not start on {settings.host}:{settings.port}")
    finally:
        instance.should_exit = True
        await serving
