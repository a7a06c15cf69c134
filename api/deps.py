"""What route handlers share: the application state, bearer-token auth, table column look-ups."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection

from enerlink.api.live import LiveHub
from enerlink.api.settings import Settings
from enerlink.archiver.storage import ObjectStore
from enerlink.redis_client import AsyncRedis


@dataclass(slots=True)
class State:
    settings: Settings
    redis: AsyncRedis
    pool: AsyncConnectionPool[Any]
    store: ObjectStore
    hub: LiveHub
    _columns: dict[str, list[str]] = field(default_factory=dict)

    async def fetch(self, query: sql.Composable, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Every row of a query, as dicts."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

    async def columns(self, table: str, *, refresh: bool = False) -> list[str]:
        """The table's real columns (information_schema), cached; empty when the table is missing."""
        if refresh or table not in self._columns:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "select column_name from information_schema.columns"
                    " where table_schema = current_schema() and table_name = %s order by ordinal_position",
                    (table,),
                )
                found = [str(row[0]) for row in await cur.fetchall()]
            if not found:
                return []
            self._columns[table] = found
        return self._columns[table]


def state_of(connection: HTTPConnection) -> State:
    result: State = connection.app.state.enerlink
    return result


def get_state(request: Request) -> State:
    return state_of(request)


AppState = Annotated[State, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="ENERLINK_API_TOKEN, when the server sets one")


def token_ok(expected: str | None, given: str | None) -> bool:
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries ``Authorization: Bearer <ENERLINK_API_TOKEN>`` (when one is set)."""
    expected = state_of(request).settings.token
    if not token_ok(expected, credentials.credentials if credentials else None):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def websocket_token(websocket: WebSocket) -> str | None:
    """Browsers cannot set headers on a WebSocket: accept ``?token=`` as well as the header."""
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.query_params.get("token")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc(moment: datetime) -> datetime:
    """Query datetimes without an offset are taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
