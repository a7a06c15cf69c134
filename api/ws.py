"""``WS /ws/telemetry``: data messages as they arrive, optionally for one meter, with keep-alive pings.

Each text frame is either a data message exactly as the meter published it, or a keep-alive
``{"type": "ping", "at": "..."}`` sent after ``ENERLINK_API_WS_PING_S`` seconds without data.
A client that falls ``ENERLINK_API_WS_QUEUE`` messages behind, or whose socket accepts nothing for
``ENERLINK_API_WS_SEND_TIMEOUT_S`` (a peer that never reads: the kernel buffers are full), is
dropped (``enerlink_api_live_dropped_clients``) and closed with code 1013 and the reason. The close
itself is bounded by the same timeout: a peer that reads nothing cannot receive the close frame
either, so the handler gives up and the connection is closed under it; it then holds at most the
server's write buffer (64 KiB) and one frame until the peer reads or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from enerlink.api.deps import iso, state_of, token_ok, websocket_token
from enerlink.api.live import LiveClient, LiveHub
from enerlink.schemas.telemetry import METER_ID_PATTERN

router = APIRouter()

TRY_AGAIN_LATER = 1013


class _Gone(Exception):
    """The client went away."""


class _Dropped(Exception):
    """The client was too slow."""


async def _send(
    websocket: WebSocket, client: LiveClient, *, hub: LiveHub, ping_s: float, timeout_s: float
) -> None:
    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that races with
    # the queue handing over an item, which left this task running after its client was dropped
    while True:
        try:
            async with asyncio.timeout(ping_s):
                text = await client.queue.get()
        except TimeoutError:
            text = json.dumps({"type": "ping", "at": iso(datetime.now(UTC))})
        try:
            async with asyncio.timeout(timeout_s):
                await websocket.send_text(text)
        except TimeoutError:
            hub.drop(client, f"client not reading: a send blocked for {timeout_s:g} s")
            raise _Dropped from None


async def _receive(websocket: WebSocket) -> None:
    """Whatever a client sends, text or binary, is read and ignored (it need not send anything): only
    its close matters."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
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
    settings = state.settings
    client = state.hub.subscribe(meter_id)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                _send(
                    websocket,
                    client,
                    hub=state.hub,
                    ping_s=settings.ws_ping_s,
                    timeout_s=settings.ws_send_timeout_s,
                ),
                name="ws-send",
            )
            group.create_task(_receive(websocket), name="ws-receive")
            group.create_task(_watch(client), name="ws-watch")
    except* _Gone:
        pass
    except* _Dropped:
        # bounded: a peer that reads nothing cannot take the close frame either
        with contextlib.suppress(Exception):
            reason = f"{client.reason}; reconnect"[:120]  # a close reason fits in 123 bytes
            async with asyncio.timeout(settings.ws_send_timeout_s):
                await websocket.close(code=TRY_AGAIN_LATER, reason=reason)
    except* (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        state.hub.unsubscribe(client)
