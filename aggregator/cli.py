"""``enerlink aggregate``: per-minute statistics, rollups and events, Redis -> PostgreSQL;
``--from-raw DAY`` recomputes a UTC day's minute rows from the raw readings in the archive."""

from __future__ import annotations

import argparse
import asyncio
from datetime import date, timedelta

import psycopg

from enerlink.aggregator.fromraw import RawReading, recompute
from enerlink.aggregator.service import run
from enerlink.aggregator.settings import Settings
from enerlink.archiver.raw_objects import day_readings, last_readings
from enerlink.archiver.storage import StorageSettings, open_store
from enerlink.config import Env
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--once", action="store_true", help="aggregate every complete minute not yet aggregated, then exit"
    )
    action.add_argument(
        "--from-raw",
        metavar="YYYY-MM-DD",
        type=date.fromisoformat,
        help="recompute the minute rows of this UTC day from the raw readings in the archive, then exit",
    )


async def from_raw(env: Env, day: date) -> int:
    """The minute rows of ``day`` from the archive's raw readings; returns the rows written."""

    settings = Settings.from_env(env)
    store = open_store(StorageSettings.from_env(env))

    def _read() -> tuple[list[RawReading], dict[str, bytes]]:
        with psycopg.connect(settings.common.database_url, autocommit=True) as conn:
            found = [RawReading(*row) for row in day_readings(conn, store, day)]
            return found, last_readings(conn, store, day - timedelta(days=1))

    readings, baselines = await asyncio.to_thread(_read)
    result = await recompute(settings, readings, baselines)
    return len(result.keys)


def main(args: argparse.Namespace) -> int:

    env = Env()
    settings = Settings.from_env(env)
    configure_logging(settings.common.log_level, settings.common.log_format)

    async def _main() -> None:
        if args.from_raw is not None:
            await from_raw(env, args.from_raw)
            return
        await run(settings, once=args.once)

    return run_service(_main, name="aggregate", grace_s=30.0)
