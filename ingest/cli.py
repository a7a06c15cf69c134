"""``enerlink ingest``: MQTT -> Redis (see :mod:`enerlink.ingest.service`)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from enerlink.config import Env
from enerlink.ingest.service import run
from enerlink.ingest.settings import Settings
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        help="store what the broker holds for this worker's session, exit after 1 s without messages"
        " (at most 60 s; exit 1 without a broker or Redis by then)",
    )
    parser.add_argument("--client-id", help="override ENERLINK_INGEST_CLIENT_ID")


def main(args: argparse.Namespace) -> int:

    settings = Settings.from_env(Env())
    if args.client_id:
        settings = replace(settings, client_id=args.client_id)
    configure_logging(settings.common.log_level, settings.common.log_format)
    return run_service(lambda: run(settings, once=args.once), name="ingest")
