"""The fleet: which meters a simulator runs, from a TOML file or generated deterministically.

A fleet file lists meters under ``[[meter]]``; every key but ``id`` has a default::

    seed = 7                      # fleet seed (noise, weather); optional
    [[meter]]
    id = "METER001"
    latitude = -6.2
    longitude = 106.8
    timezone = "Asia/Jakarta"
    scale = "home"                # home (230 V, kW) or lab (the DC test rig: ~9 V, mW, 1.7 Ah cell)
    pv_kw = 5.0                   # PV peak power (kWp)
    battery_kwh = 10.0
    profile = "residential"       # residential | commercial | industrial
    annual_kwh = 3500
    tilt = 15
    azimuth = 0                   # degrees clockwise from north (pvlib): 0 faces north, 180 south
    seed = 1
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from enerlink.schemas.telemetry import METER_ID_PATTERN

Scale = Literal["home", "lab"]
Profile = Literal["residential", "commercial", "industrial"]
SCALES: tuple[Scale, ...] = ("home", "lab")
PROFILES: tuple[Profile, ...] = ("residential", "commercial", "industrial")


class FleetError(ValueError):
    """A fleet file that cannot be used; the message says which meter and key."""


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    latitude: float
    longitude: float
    timezone: str


# Where generated meters live: mostly Indonesian cities (the firmware's home market), a few abroad
# so that time zones and seasons differ within one fleet.
SITES: tuple[Site, ...] = (
    Site("Jakarta", -6.21, 106.85, "Asia/Jakarta"),
    Site("Surabaya", -7.25, 112.75, "Asia/Jakarta"),
    Site("Bandung", -6.91, 107.61, "Asia/Jakarta"),
    Site("Semarang", -6.97, 110.42, "Asia/Jakarta"),
    Site("Yogyakarta", -7.80, 110.36, "Asia/Jakarta"),
    Site("Medan", 3.59, 98.67, "Asia/Jakarta"),
    Site("Denpasar", -8.65, 115.22, "Asia/Makassar"),
    Site("Makassar", -5.15, 119.43, "Asia/Makassar"),
    Site("Balikpapan", -1.27, 116.83, "Asia/Makassar"),
    Site("Jayapura", -2.53, 140.72, "Asia/Jayapura"),
    Site("Singapore", 1.35, 103.82, "Asia/Singapore"),
    Site("Berlin", 52.52, 13.40, "Europe/Berlin"),
)


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """One simulated meter: where it is and what it is made of."""

    id: str
    latitude: float = -6.21
    longitude: float = 106.85
    timezone: str = "Asia/Jakarta"
    scale: Scale = "home"
    pv_kw: float = 5.0
    battery_kwh: float = 10.0
    profile: Profile = "residential"
    annual_kwh: float = 3500.0
    tilt: float = 15.0
    azimuth: float = 0.0
    seed: int = 0
    alert_threshold: int = 10

    def validate(self) -> None:

        if not re.match(METER_ID_PATTERN, self.id):
            raise FleetError(f"meter id {self.id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
        if self.scale not in SCALES:
            raise FleetError(f"{self.id}: scale {self.scale!r} is not one of {SCALES}")
        if self.profile not in PROFILES:
            raise FleetError(f"{self.id}: profile {self.profile!r} is not one of {PROFILES}")
        if not (-90 <= self.latitude <= 90 and -180 <= self.longitude <= 180):
            raise FleetError(f"{self.id}: latitude/longitude out of range")
        if self.pv_kw < 0 or self.battery_kwh <= 0 or self.annual_kwh < 0:
            raise FleetError(f"{self.id}: pv_kw and annual_kwh must be >= 0, battery_kwh > 0")
        try:
            ZoneInfo(self.timezone)
        except Exception as exc:
            raise FleetError(f"{self.id}: unknown timezone {self.timezone!r}") from exc


@dataclass(frozen=True, slots=True)
class Fleet:
    meters: tuple[MeterSpec, ...]
    seed: int = 0

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.meters]


def lab_spec(meter_id: str, *, seed: int = 0, site: Site = SITES[0]) -> MeterSpec:
    """The small DC rig of the firmware's test bench: ~2 W panel, 1.7 Ah Li-ion cell, ~0.5 W load."""
    return MeterSpec(
        id=meter_id,
        latitude=site.latitude,
        longitude=site.longitude,
        timezone=site.timezone,
        scale="lab",
        pv_kw=0.002,
        battery_kwh=1.7 * 3.7 / 1000,
        profile="residential",
        annual_kwh=2.5,
        tilt=10.0,
        azimuth=0.0,
        seed=seed,
    )


def generate(count: int, *, seed: int = 0, scale: Scale | Literal["mixed"] = "home") -> Fleet:
    """``count`` varied meters, METER001..; the same ``count`` and ``seed`` give the same fleet,
    and meter k is the same whatever ``count`` is (each meter draws from its own seeded RNG)."""
    if count < 1:
        raise FleetError("a fleet needs at least one meter")
    width = max(3, len(str(count)))
    meters: list[MeterSpec] = []
    for index in range(1, count + 1):
        rng = random.Random(f"{seed}:{index}")
        meter_id = f"METER{index:0{width}d}"
        site = SITES[0] if index == 1 else rng.choice(SITES)
        meter_scale: Scale = ("lab" if rng.random() < 0.1 else "home") if scale == "mixed" else scale
        if meter_scale == "lab":
            meters.append(lab_spec(meter_id, seed=rng.randrange(2**31), site=site))
            continue
        profile: Profile = rng.choices(PROFILES, weights=(0.8, 0.15, 0.05))[0]
        annual = {"residential": 3500.0, "commercial": 15000.0, "industrial": 60000.0}[profile]
        meters.append(
            MeterSpec(
                id=meter_id,
                latitude=round(site.latitude + rng.uniform(-0.05, 0.05), 4),
                longitude=round(site.longitude + rng.uniform(-0.05, 0.05), 4),
                timezone=site.timezone,
                scale="home",
                pv_kw=round(rng.uniform(3.0, 10.0) * (annual / 3500.0) ** 0.5, 1),
                battery_kwh=round(rng.uniform(5.0, 15.0), 1),
                profile=profile,
                annual_kwh=round(annual * rng.uniform(0.7, 1.4)),
                tilt=round(rng.uniform(5.0, 30.0)),
                azimuth=round(
                    (0.0 if site.latitude < 0 else 180.0) + rng.choice((0, 0, 90, -90)) + rng.uniform(-20, 20)
                )
                % 360,
                seed=rng.randrange(2**31),
                alert_threshold=rng.choice((10, 15, 20)),
            )
        )
    return Fleet(meters=tuple(meters), seed=seed)


_KEYS = {f.name for f in fields(MeterSpec)}


def load(path: Path) -> Fleet:
    """Read a fleet TOML file (``[[meter]]`` tables); raise :class:`FleetError` with the reason."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FleetError(f"cannot read fleet file {path}: {exc}") from exc
    entries: Any = document.get("meter", [])
    if not isinstance(entries, list) or not entries:
        raise FleetError(f"{path}: no [[meter]] tables")
    meters: list[MeterSpec] = []
    for number, entry in enumerate(entries, start=1):
        unknown = set(entry) - _KEYS
        if unknown:
            raise FleetError(f"{path}: meter #{number}: unknown keys {sorted(unknown)}")
        if "id" not in entry:
            raise FleetError(f"{path}: meter #{number} has no id")
        base = lab_spec(entry["id"]) if entry.get("scale") == "lab" else MeterSpec(id=entry["id"])
        spec = replace(base, **{k: v for k, v in entry.items() if k != "id"})
        if spec.seed == 0:
            spec = replace(spec, seed=number)
        spec.validate()
        meters.append(spec)
    ids = [m.id for m in meters]
    if len(set(ids)) != len(ids):
        raise FleetError(f"{path}: duplicate meter ids")
    return Fleet(meters=tuple(meters), seed=int(document.get("seed", 0)))
