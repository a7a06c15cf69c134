"""A loopback TCP proxy the chaos test puts between the edge and the broker.

    python -m tests.support.chaos_proxy LISTEN_PORT TARGET_PORT

It forwards bytes both ways, nothing else. The test cuts the link by killing the process (every
connection is reset and new ones are refused until it is started again on the same port) or
freezes it with SIGSTOP (a silent network: nothing forwarded, nothing refused) and SIGCONT.
Only 127.0.0.1 is ever bound or dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

_HOST = "127.0.0.1"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _serve(listen_port: int, target_port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(_HOST, target_port)
        except OSError:
            client_w.close()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(_pipe(client_r, broker_w), name="to-broker")
            group.create_task(_pipe(broker_r, client_w), name="to-client")

    server = await asyncio.start_server(handle, _HOST, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(listen_port, target_port))


if __name__ == "__main__":
    main()
