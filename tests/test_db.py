"""enerlink.db: a service started while PostgreSQL is down waits for it instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.services import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _forward(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, *, host: str, port: int
) -> None:
    server_r, server_w = await asyncio.open_connection(host, port)
    with contextlib.suppress(OSError):
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))


async def test_migrate_waits_for_postgres_to_come_up(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    real = conninfo_to_dict(database_url)
    port = free_port()  # nothing listens here yet: "PostgreSQL is down"
    url = make_conninfo(**{**real, "host": "127.0.0.1", "port": str(port)})
    caplog.set_level(logging.WARNING, logger="enerlink.db")
    waiting = asyncio.create_task(migrate(url))
    await asyncio.sleep(2.0)
    assert not waiting.done(), "migrate gave up while PostgreSQL was down"
    attempts = [r for r in caplog.records if "not reachable (attempt" in r.getMessage()]
    assert len(attempts) >= 2, [r.getMessage() for r in caplog.records]
    forward = functools.partial(
        _forward, host=str(real.get("host") or "127.0.0.1"), port=int(real.get("port") or 5432)
    )
    proxy = await asyncio.start_server(forward, "127.0.0.1", port)  # "PostgreSQL is back"
    async with proxy:
        applied = await asyncio.wait_for(waiting, 60)
        assert applied and applied == sorted(applied)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(f"select count(*) from {Tables.MIGRATIONS}")
            assert (await cur.fetchone()) == (len(applied),)
        proxy.close()
