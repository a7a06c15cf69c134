"""The one metrics endpoint every service opens: served while its block runs, gone after it."""

from __future__ import annotations

import asyncio
import socket
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from prometheus_client import CollectorRegistry, Counter

from enerlink.metrics_server import MetricsServerError, metrics_server
from tests.support.services import free_port


def _get(url: str) -> str:
    with urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_serves_the_registry_only_while_the_block_runs() -> None:
    registry = CollectorRegistry()
    Counter("enerlink_probe", "a probe", registry=registry).inc(3)
    port = free_port()
    async with metrics_server(registry, port=port) as url:
        assert url == f"http://127.0.0.1:{port}/metrics"
        assert "enerlink_probe_total 3.0" in await asyncio.to_thread(_get, url)
    with pytest.raises(URLError):
        await asyncio.to_thread(_get, url)
    with socket.socket() as sock:  # nobody listens there any more: a restarted service can take it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        sock.bind(("127.0.0.1", port))
        sock.listen()


async def test_port_zero_is_off_and_a_taken_port_is_a_clear_error() -> None:
    async with metrics_server(CollectorRegistry(), port=0) as url:
        assert url is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            async with metrics_server(CollectorRegistry(), port=port):
                pass
