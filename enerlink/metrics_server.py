"""Every service's Prometheus endpoint: one async context manager that serves a registry on
``http://host:port/metrics`` while its block runs and shuts the server down when the block ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsServerError(RuntimeError):
    """The metrics port could not be opened (taken, not allowed)."""


@contextlib.asynccontextmanager
async def metrics_server(
    registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[str | None]:
    """Serve ``registry`` while the block runs; yields the URL (None when ``port`` is 0: off)."""
    if port <= 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    url = f"http://{host}:{server.server_port}/metrics"
    log.info("metrics on %s", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
