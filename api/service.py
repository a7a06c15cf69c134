"""The API service: uvicorn's Server running inside our event loop, cancellable like every service.

Signals are handled by :func:`enerlink.runtime.run_service` (uvicorn's own handlers are disabled);
cancelling :func:`run` asks uvicorn to shut down gracefully and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from enerlink.api.app import create_app
from enerlink.api.settings import Settings
from enerlink.db import migrate

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.through_startup = asyncio.Event()  # set when startup is over, started or not

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # the service runner owns signals
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.through_startup.set()


def server(settings: Settings) -> _Server:
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


class ApiStartError(RuntimeError):
    """The API could not start (its port taken, its lifespan failed)."""


async def run(settings: Settings, *, once: bool = False) -> None:
    """Serve until cancelled, then shut down gracefully; ``once``: start (schema, port, Redis, the live
    feed), then shut down at once: a check that it can run here."""
    # The schema first, here rather than only in the app's lifespan, which uvicorn does not let a
    # signal interrupt: while PostgreSQL is out of reach a SIGTERM stops this at once.
    await migrate(settings.common.database_url)
    listening = _listen(settings)  # before the app starts: a port taken stops nothing half-started
    instance = server(settings)
    serving = asyncio.ensure_future(_serve(instance, listening))
    try:
        if once:  # up to the end of its startup, then the shutdown below
            started = asyncio.ensure_future(instance.through_startup.wait())
            await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await started
        else:
            await asyncio.shield(serving)
        if instance.started is False:
            raise ApiStartError(f"could not start on {settings.host}:{settings.port} (see above)")
    finally:
        instance.should_exit = True
        await serving


def _listen(settings: Settings) -> socket.socket:
    """The listening socket, made as uvicorn makes it (IPv6 for an address with a colon)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ApiStartError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from exc
    return sock


async def _serve(instance: _Server, listening: socket.socket) -> None:
    try:
        await instance.serve(sockets=[listening])
    except SystemExit:  # uvicorn ends the process when it cannot start: here, run() says so
        instance.started = False
    finally:
        listening.close()
