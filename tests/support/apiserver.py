"""The API served for real (uvicorn inside the test's event loop) on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import httpx

from enerlink.api.service import run
from enerlink.api.settings import Settings
from enerlink.config import Env
from tests.support.services import free_port


@dataclass
class LiveApi:
    settings: Settings
    url: str
    client: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


@asynccontextmanager
async def serve_api(environ: dict[str, str], **extra: str) -> AsyncIterator[LiveApi]:
    port = free_port()
    env = {**environ, "ENERLINK_API_HOST": "127.0.0.1", "ENERLINK_API_PORT": str(port), **extra}
    settings = Settings.from_env(Env(env))
    task = asyncio.create_task(run(settings), name="test-api")
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(400):
                if task.done():
                    task.result()
                try:
                    await client.get("/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.025)
            yield LiveApi(settings=settings, url=url, client=client)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
