"""``enerlink api``: the HTTP API, live WebSocket and dashboard."""

from __future__ import annotations

import argparse
from dataclasses import replace

from enerlink.api.service import run
from enerlink.api.settings import Settings
from enerlink.config import Env
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="listen address (ENERLINK_API_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help="listen port (ENERLINK_API_PORT, default 8000)"
    )
    parser.add_argument("--once", action="store_true", help="start everything, then stop: a check")


def main(args: argparse.Namespace) -> int:

    settings = Settings.from_env(Env())
    if args.host is not None:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    configure_logging(settings.common.log_level, settings.common.log_format)
    return run_service(lambda: run(settings, once=args.once), name="api", grace_s=15.0)
