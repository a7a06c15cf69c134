"""The ``enerlink`` command: one subcommand per service, plus ``up`` to run them all.

Each service package owns its subcommand in ``<package>/cli.py`` with two functions:
``configure(parser)`` adds its arguments and ``main(args) -> int`` runs it. Modules are imported
only for the subcommand that runs, so ``enerlink api`` never imports the I2C drivers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "edge": (
        "enerlink.edge.cli",
        "run a meter: simulated, emulated hardware or real sensors; publish telemetry",
    ),
    "ingest": ("enerlink.ingest.cli", "MQTT -> Redis: validate and store every message exactly once"),
    "aggregate": ("enerlink.aggregator.cli", "Redis -> PostgreSQL: per-minute statistics and rollups"),
    "archive": ("enerlink.archiver.cli", "PostgreSQL -> MinIO (or a folder): archive year-old months"),
    "hass": (
        "enerlink.hass.cli",
        "Home Assistant MQTT discovery and states for every meter (ENERLINK_HA_DISCOVERY)",
    ),
    "api": ("enerlink.api.cli", "HTTP API, live WebSocket and dashboard"),
    "settle": (
        "enerlink.settlement.cli",
        "close a meter's billing period (settle command + settlement record)",
    ),
    "inspect": ("enerlink.inspect_cli", "look inside: a meter's stored readings in Redis as JSON lines"),
    "up": ("enerlink.up", "everything in one process: a simulated fleet and every service"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enerlink", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module that will run
            module = importlib.import_module(module_name)
            module.configure(child)
            child.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(args_list)
        args = parser.parse_args(args_list)
        result: int = args._main(args)
    except KeyboardInterrupt:
        # Ctrl-C before a service's runner took the signals over (while its modules import) or in a
        # command that has no runner: stopped, nothing drained, no traceback.
        print(f"enerlink: interrupted ({' '.join(args_list[:1]) or 'no command'})", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
