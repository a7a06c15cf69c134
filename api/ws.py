"""``WS /ws/telemetry``: data messages as they arrive, optionally for one meter, with keep-alive pings.

Each text frame is either a data message exactly as the meter published it, or a keep-alive
``{"type": "ping", "at": "..."}`` sent after ``ENERLINK_API_WS_PING_S`` seconds without data.
A client that falls ``ENERLINK_API_WS_QUEUE`` messages behind is closed with code 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from api.deps import iso, state_of, token_ok, websocket_token
from api.live import LiveClient
from schemas.telemetry import METER_ID_PATTERN

router = APIRouter()

TRY_AGAIN_LATER = 1013


class _Gone(Exception):
    """The client went away."""


class _Dropped(Exception):
    """The client was too slow."""


async def _send(websocket: WebSocket, client: LiveClient, ping_s: float) -> None:
    while True:
        try:
            text = await asyncio.wait_for(client.queue.get(), timeout=ping_s)
        except TimeoutError:
            text = json.dumps({"type": "ping", "at": iso(datetime.now(UTC))})
        await websocket.send_text(text)


async def _receive(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()  # clients need not send anything; we only watch for close
    raise _Gone


async def _watch(client: LiveClient) -> None:
    await client.dropped.wait()
    raise _Dropped


@router.websocket("/ws/telemetry")
async def telemetry_stream(
    websocket: WebSocket,
    meter_id: Annotated[str | None, Query(pattern=METER_ID_PATTERN, max_length=64)] = None,
) -> None:
    state = state_of(websocket)
    if not token_ok(state.settings.token, websocket_token(websocket)):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="missing or wrong token")
        return
    await websocket.accept()
    client = state.hub.subscribe(meter_id)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_send(websocket, client, state.settings.ws_ping_s), name="ws-send")
            group.create_task(_receive(websocket), name="ws-receive")
            group.create_task(_watch(client), name="ws-watch")
    except* _Gone:
        pass
    except* _Dropped:
        with contextlib.suppress(Exception):
            await websocket.close(code=TRY_AGAIN_LATER, reason="client too slow; reconnect")
    except* (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        state.hub.unsubscribe(client)
