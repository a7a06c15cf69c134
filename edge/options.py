"""The fleet's command-line options, shared by ``enerlink edge`` and its actions (scenario, settle, ...)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from enerlink.config import Env
from enerlink.edge.settings import Settings, parse_when


def fleet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=int, help="generate a fleet of N meters (METER001..)")
    parser.add_argument("--fleet", help="fleet file (TOML) instead of a generated fleet")
    parser.add_argument("--seed", type=int, help="fleet seed (generated fleet, weather, noise)")
    parser.add_argument("--scale", choices=("home", "lab", "mixed"), help="generated meters' scale")


def settings_from_args(args: argparse.Namespace, env: Env | None = None) -> Settings:
    settings = Settings.from_env(env or Env())
    changes: dict[str, object] = {}
    for attr, name in (
        ("meters", "meters"),
        ("seed", "seed"),
        ("scale", "scale"),
        ("interval", "interval_s"),
        ("status_interval", "status_interval_s"),
        ("speed", "speed"),
        ("weather", "weather"),
        ("client_id", "client_id"),
        ("steps", "max_steps"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "fleet", None):
        changes["fleet_file"] = Path(args.fleet)
    if getattr(args, "state_dir", None):
        changes["state_dir"] = Path(args.state_dir)
    if getattr(args, "start", None):
        changes["start"] = parse_when(args.start)
    if getattr(args, "end", None):
        changes["end"] = parse_when(args.end)
    if getattr(args, "console", False):
        changes["console"] = True
    if getattr(args, "interactive", False):
        changes["interactive"] = True
    if getattr(args, "idle", False):
        changes["idle"] = True
    if getattr(args, "no_progress", False):
        changes["progress"] = False
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    settings.validate()
    return settings
