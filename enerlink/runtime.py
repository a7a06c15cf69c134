"""The thin entry every service shares: logging set-up, signals, drain and exit code.

A service is ``async def run(settings)``: it runs until cancelled and cleans up in ``finally``.
:func:`run_service` cancels it on SIGTERM/SIGINT; the service then stops taking input and
flushes what it holds. If the drain takes longer than the grace period the process exits 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, at the entry point. ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "uvicorn.access", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


#: A bounded run (``--once``) of a service that reads a stream (the ingest, the Home Assistant bridge)
#: ends this long after its start at the latest, under steady traffic or without a broker.
ONCE_LIMIT_S = 60.0


class OnceLimitError(RuntimeError):
    """A bounded run (``--once``) could not do its work within its time limit (no broker, no Redis)."""


def describe(exc: BaseException) -> str:
    """One line for an error: its type and message, those of each error in a group (a TaskGroup's)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def run_service(main: Callable[[], Awaitable[None]], *, name: str, grace_s: float = 10.0) -> int:
    """Run ``main()`` until it returns or a signal arrives; return the process exit code: 0, or 1 when
    ``main()`` fails (one line says why; the traceback is logged at debug level)."""

    async def _supervise() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stopping: list[str] = []

        def _stop(signame: str) -> None:
            if stopping:  # a second signal: stop waiting for the drain
                log.warning("%s: second %s, exiting now", name, signame)
                os._exit(1)
            stopping.append(signame)
            log.info("%s: %s received, draining (grace %.0f s)", name, signame, grace_s)
            loop.call_later(grace_s, _overdue)
            task.cancel()

        def _overdue() -> None:
            log.error("%s: drain exceeded %.0f s grace period, exiting", name, grace_s)
            os._exit(1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop, sig.name)
        try:
            await main()
        except asyncio.CancelledError:
            if not stopping:
                raise
            log.info("%s: stopped cleanly", name)
        except Exception as exc:  # the service's own boundary: one line, exit 1
            log.error("%s: stopped by an error: %s", name, describe(exc))
            log.debug("%s: the error's traceback", name, exc_info=exc)
            return 1
        return 0

    return asyncio.run(_supervise())
