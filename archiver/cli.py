"""``enerlink archive``: nightly archive of year-old months; ``--once`` now; ``--restore YYYY-MM``."""

from __future__ import annotations

import argparse
from dataclasses import replace

from enerlink.archiver.months import Month
from enerlink.archiver.restore import RestoreError
from enerlink.archiver.service import run
from enerlink.archiver.settings import Settings
from enerlink.config import Env
from enerlink.runtime import configure_logging, run_service

RESTORE_REFUSED = 2  # exit status of ``--restore`` when the object is missing or damaged


def configure(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--once", action="store_true", help="archive every due month now and exit")
    action.add_argument(
        "--restore", metavar="YYYY-MM", type=Month.parse, help="load an archived month back into PostgreSQL"
    )
    parser.add_argument(
        "--retention-days",
        type=int,
        default=None,
        help="override ENERLINK_ARCHIVE_RETENTION_DAYS (default 365)",
    )


def main(args: argparse.Namespace) -> int:

    settings = Settings.from_env(Env())
    if args.retention_days is not None:
        settings = replace(settings, retention_days=args.retention_days)
    configure_logging(settings.common.log_level, settings.common.log_format)

    refused: list[str] = []

    async def _main() -> None:
        try:
            await run(settings, once=args.once, restore=args.restore)
        except RestoreError as exc:  # already logged with its problem and the object's name
            refused.append(exc.problem)

    # a month in flight may take a while to abort cleanly (the multipart upload is aborted)
    code = run_service(_main, name="archive", grace_s=60.0)
    return code or (RESTORE_REFUSED if refused else 0)
