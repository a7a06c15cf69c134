"""``enerlink edge scenario|settle|status-now``: send commands to running meters and show the acks.

enerlink edge scenario grid_outage --meter METER001 --meter METER002 --duration 600
enerlink edge scenario sensor_failure --meter METER001 --sensor "Solar Input"
enerlink edge scenario clear --all --meters 3      # --all: every meter of the fleet options
enerlink edge settle --meter METER001
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from enerlink import commands
from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.edge.options import fleet_options, settings_from_args
from enerlink.schemas.commands import SCENARIO_NAMES, Command


def configure(actions: Any) -> None:
    for name, help_text in (
        ("scenario", "switch a scenario on (or 'clear') for some or all meters"),
        ("settle", "reset the settlement counters (acknowledged)"),
        ("status-now", "ask meters for a status message now"),
    ):
        parser = actions.add_parser(name, help=help_text, description=help_text)
        if name == "scenario":
            parser.add_argument("name", choices=(*SCENARIO_NAMES, "clear"))
            parser.add_argument("--duration", type=float, help="seconds; default until cleared")
            parser.add_argument("--sensor", help="sensor_failure: which INA219 (default 'Solar Input')")
        parser.add_argument("--meter", action="append", default=[], help="meter id (repeat or comma list)")
        parser.add_argument("--all", action="store_true", help="every meter of the fleet (--meters/--fleet)")
        parser.allow_abbrev = False
        fleet_options(parser)
        parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for acks (0: don't)")
        parser.set_defaults(_action=_main, command_name=name)


def build_command(args: argparse.Namespace) -> dict[str, Any]:
    """The command body (:class:`enerlink.schemas.commands.Command`) the arguments ask for."""
    if args.command_name == "settle":
        command = Command(cmd="settle")
    elif args.command_name == "status-now":
        command = Command(cmd="status_now")
    elif args.name in ("clear", "normal"):
        command = Command(cmd="clear")
    else:
        command = Command(
            cmd="scenario", name=args.name, duration_s=args.duration or None, sensor=args.sensor or None
        )
    return command.body()


def target_meters(args: argparse.Namespace) -> list[str]:
    meters = [m.strip() for chunk in args.meter for m in chunk.split(",") if m.strip()]
    if args.all:
        from enerlink.edge.service import build_fleet  # the fleet (and numpy) only when --all names it

        meters += build_fleet(settings_from_args(args)).ids
    return list(dict.fromkeys(meters))


async def send(
    common: CommonSettings, meters: list[str], body: dict[str, Any], *, wait_s: float
) -> list[dict[str, Any]]:
    """Publish ``body`` to each meter's command topic (QoS 2); the acks that came within ``wait_s``
    (0: publish only). The shared :func:`enerlink.commands.send` does the work."""
    answers = await commands.send(common.mqtt, common.topics, meters, body, timeout_s=wait_s)
    return [a.ack for a in sorted(answers.values(), key=lambda a: a.elapsed_s) if a.ack is not None]


def _main(args: argparse.Namespace) -> int:
    try:
        common = CommonSettings.from_env(Env())
        meters = target_meters(args)
    except ConfigError as exc:
        print(f"enerlink edge: {exc}", file=sys.stderr)
        return 2
    if not meters:
        print("enerlink edge: name meters with --meter ID or use --all", file=sys.stderr)
        return 2
    acks = asyncio.run(send(common, meters, build_command(args), wait_s=args.wait))
    for ack in acks:
        outcome = "ok" if ack.get("ok") else f"error: {ack.get('error')}"
        print(f"{ack.get('meterId')}: {ack.get('cmd')} {outcome} {json.dumps(ack.get('result', {}))}")
    if args.wait > 0 and len(acks) < len(meters):
        answered = {a.get("meterId") for a in acks}
        print(
            f"no ack within {args.wait:.0f} s from: {', '.join(m for m in meters if m not in answered)}",
            file=sys.stderr,
        )
        return 1
    return 0 if all(a.get("ok") for a in acks) else 1
