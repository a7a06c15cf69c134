"""``enerlink hass``: Home Assistant MQTT discovery and states for every meter (see
:mod:`enerlink.hass.service`)."""

from __future__ import annotations

import argparse

from enerlink.config import Env
from enerlink.hass.service import run
from enerlink.hass.settings import Settings
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit after 1 s without messages (at most 60 s)")


def main(args: argparse.Namespace) -> int:

    settings = Settings.from_env(Env())
    configure_logging(settings.common.log_level, settings.common.log_format)
    return run_service(lambda: run(settings, once=args.once), name="hass")
