"""``enerlink aggregate``: per-minute statistics, rollups and events, Redis -> PostgreSQL."""

from __future__ import annotations

import argparse

from aggregator.settings import Settings
from enerlink.config import Env
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once", action="store_true", help="aggregate every complete minute not yet aggregated, then exit"
    )


def main(args: argparse.Namespace) -> int:
    from aggregator.service import run

    settings = Settings.from_env(Env())
    configure_logging(settings.common.log_level, settings.common.log_format)

    async def _main() -> None:
        await run(settings, once=args.once)

    return run_service(_main, name="aggregate", grace_s=30.0)
