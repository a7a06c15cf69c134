"""``enerlink edge``: run a simulated fleet, switch scenarios, replay recorded telemetry.

enerlink edge --simulate --meters 3 --interval 5          # live fleet (default when no action)
enerlink edge --fleet fleet.toml --speed 60               # a fleet file, 60x real time
enerlink edge --meters 100 --from 2025-01-01 --to 2025-12-31 --interval 300   # backfill
enerlink edge scenario grid_outage --meter METER001 --duration 600
enerlink edge scenario clear --all --meters 3
enerlink edge settle --meter METER001
enerlink edge replay recorded.csv --speed 10
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from enerlink.config import ConfigError, Env
from enerlink.edge.options import fleet_options, settings_from_args
from enerlink.edge.settings import WEATHER_SOURCES
from enerlink.edge.sim import control, replay
from enerlink.runtime import configure_logging, run_service


def configure(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False  # "--meter" of an action must not match "--meters" of the fleet
    parser.add_argument("--simulate", action="store_true", help="simulated meters (the default)")
    fleet_options(parser)
    parser.add_argument("--interval", type=float, help="seconds between data messages (default 5)")
    parser.add_argument("--status-interval", type=float, help="seconds between status messages (30)")
    parser.add_argument("--speed", type=float, help="simulated seconds per real second (default 1)")
    parser.add_argument("--from", dest="start", help="start of simulated time (date or ISO date-time)")
    parser.add_argument("--to", dest="end", help="with --from: backfill up to here as fast as possible")
    parser.add_argument("--state-dir", help="where meter state is kept (ENERLINK_STATE_DIR)")
    parser.add_argument("--weather", choices=WEATHER_SOURCES, help="weather source (default offline)")
    parser.add_argument("--client-id", help="MQTT client id of the fleet connection")
    parser.add_argument("--console", action="store_true", help="print a line per data message")
    parser.add_argument("--no-progress", action="store_true", help="no backfill progress bar")
    parser.add_argument("--once", action="store_true", help="publish one step and exit")
    parser.add_argument("--steps", type=int, help="publish N steps, deliver everything queued, then exit")
    parser.add_argument("--interactive", action="store_true", help="command line on stdin (type help)")
    parser.add_argument(
        "--idle",
        action="store_true",
        help="start stopped: the meters run once started (POST /simulation/start)",
    )
    hardware = parser.add_mutually_exclusive_group()
    hardware.add_argument("--hardware", action="store_true", help="read the real INA219/MAX17048 over I2C")
    hardware.add_argument(
        "--emulate-hardware",
        action="store_true",
        help="the hardware path on register-level emulated chips fed by the simulator's physics",
    )
    parser.add_argument("--meter-id", help="hardware: this meter's id (ENERLINK_METER_ID)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    control.configure(actions)
    replay.configure(actions)
    doctor = actions.add_parser("doctor", help="check the I2C bus, sensors, broker and clock")
    doctor.set_defaults(_action=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from enerlink.edge import doctor  # the hardware path and the MQTT client load only for this action

    return doctor.main(args)


def _run_hardware(args: argparse.Namespace) -> int:
    from enerlink.edge.hardware.runner import HardwareConfig, run_hardware  # the I2C path only on a meter

    try:
        config = HardwareConfig.from_env(Env())
        changes: dict[str, object] = {"emulate": bool(args.emulate_hardware)}
        if args.meter_id:
            changes["meter_id"] = args.meter_id
        if args.interval:
            changes["interval_s"] = args.interval
        if args.status_interval:
            changes["status_interval_s"] = args.status_interval
        if args.state_dir:
            changes["state_dir"] = Path(args.state_dir)
        config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"enerlink edge: {exc}")
        return 2
    if config.emulate and config.truth is None:
        from enerlink.edge.sim.truth import SimTruth  # the simulator's physics only when emulating chips

        config = dataclasses.replace(config, truth=SimTruth.lab(config.meter_id))
    configure_logging(config.common.log_level, config.common.log_format)
    steps = 1 if args.once else args.steps  # bounded: this many data messages out, then exit
    return run_service(lambda: run_hardware(config, max_messages=steps), name=f"edge-{config.meter_id}")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "action", None):
        result: int = args._action(args)
        return result
    if args.hardware or args.emulate_hardware:
        return _run_hardware(args)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"enerlink edge: {exc}")
        return 2
    configure_logging(settings.common.log_level, settings.common.log_format)
    from enerlink.edge.service import run  # the fleet runner only when a fleet runs

    return run_service(lambda: run(settings, once=args.once), name="edge")
