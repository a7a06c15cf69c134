"""Fast reading of stored data snapshots: orjson and a cheap sanity check instead of pydantic.

Every snapshot in Redis was validated in full (``DataMessage``, strict types and bounds) by the
ingest before it was stored, so the aggregator treats Redis as trusted internal storage and does
not validate again field by field: that cost more than everything else in a job. What it still
checks, so that a corrupt or foreign member is counted as bad and skipped instead of crashing the
batch or poisoning a statistic:

* the bytes are JSON (orjson: NaN/Infinity are not JSON, so every number is finite) and an object;
* ``meterId`` is the meter the key belongs to, ``datetime`` an ISO 8601 string with a timezone;
* every numeric field of every subsystem is present and an ``int`` or ``float`` (not a bool),
  every bool field a ``bool``, every enum field one of its allowed values.

Physical bounds (SOC within 0-100 ...) are not re-checked: they were when the message came in.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.fields import BOOL_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS, Field
from schemas.telemetry import MeterData

#: Field order of a snapshot's vector (numbers, then bools as 0/1): the aggregator's matrix columns.
VALUE_FIELDS: tuple[Field, ...] = NUMERIC_FIELDS + BOOL_FIELDS
N_NUMERIC = len(NUMERIC_FIELDS)
_NUMBER_TYPES = frozenset((int, float))
_BOOL_TYPES = frozenset((bool,))
_SUBSYSTEMS: tuple[str, ...] = tuple((info.alias or attr) for attr, info in MeterData.model_fields.items())


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    getter = operator.itemgetter(*names)
    if len(names) == 1:
        return lambda d: (getter(d),)
    return getter


_Getters = list[tuple[str, Callable[[Any], tuple[Any, ...]]]]


def _getters(fields: Sequence[Field]) -> tuple[_Getters, list[Field]]:
    """One ``itemgetter`` per subsystem, and the field order they produce."""
    by_sub: dict[str, list[Field]] = {}
    for f in fields:
        by_sub.setdefault(f.subsystem, []).append(f)
    getters = [(sub, _getter([f.name for f in fs])) for sub, fs in by_sub.items()]
    return getters, [f for fs in by_sub.values() for f in fs]


_NUM_GETTERS, _NUM_ORDER = _getters(NUMERIC_FIELDS)
_BOOL_GETTERS, _BOOL_ORDER = _getters(BOOL_FIELDS)
#: Column of ``VALUE_FIELDS`` for each position of a raw vector (numbers first, then bools).
RAW_ORDER: tuple[Field, ...] = tuple(_NUM_ORDER + _BOOL_ORDER)
PERM: list[int] = [RAW_ORDER.index(f) for f in VALUE_FIELDS]


def _allowed(f: Field) -> frozenset[str]:
    model = MeterData.model_fields
    sub_model = next(i.annotation for a, i in model.items() if (i.alias or a) == f.subsystem)
    assert sub_model is not None and hasattr(sub_model, "model_fields")
    return frozenset(typing.get_args(sub_model.model_fields[f.name].annotation))


_ENUMS: tuple[tuple[str, str, frozenset[str]], ...] = tuple(
    (f.subsystem, f.name, _allowed(f)) for f in ENUM_FIELDS
)


class BadSnapshot(ValueError):
    """A stored snapshot that is not a usable data message (counted and skipped)."""


@dataclass(slots=True)
class Snap:
    """What the statistics and events need of one snapshot (not frozen: cheaper to build)."""

    at_ms: int
    at: datetime
    vector: list[Any]  # RAW_ORDER; bools as True/False
    enums: tuple[str, ...]
    soc: float
    alert_threshold: int
    temperature: float | None


def _temperature(data: dict[str, Any]) -> float | None:
    """Highest ``temperature`` (°C) any subsystem reports (newer firmware adds it as an extra field)."""
    best: float | None = None
    for sub in _SUBSYSTEMS:
        value = data[sub].get("temperature")
        if isinstance(value, int | float) and not isinstance(value, bool):
            best = float(value) if best is None else max(best, float(value))
    return best


def parse(raw: bytes, meter_id: str) -> Snap:
    """One snapshot; raises :class:`BadSnapshot` saying why it is unusable."""
    try:
        msg = orjson.loads(raw)
        if msg["meterId"] != meter_id:
            raise BadSnapshot(f"meterId {msg['meterId']!r} in the series of {meter_id!r}")
        at = datetime.fromisoformat(msg["datetime"])
        data = msg["data"]
        numbers: list[Any] = []
        for sub, get in _NUM_GETTERS:
            numbers += get(data[sub])
        bools: list[Any] = []
        for sub, get in _BOOL_GETTERS:
            bools += get(data[sub])
        enums = tuple(data[sub][name] for sub, name, _ in _ENUMS)
        battery = data["battery"]
        soc, threshold = battery["soc"], battery["alert_threshold"]
    except BadSnapshot:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadSnapshot(f"unusable snapshot: {type(exc).__name__}: {exc}") from exc
    if at.tzinfo is None:
        raise BadSnapshot("datetime without a timezone")
    if not set(map(type, numbers)) <= _NUMBER_TYPES or set(map(type, bools)) - _BOOL_TYPES:
        raise BadSnapshot("a field has the wrong type")
    for value, (_, name, allowed) in zip(enums, _ENUMS, strict=True):
        if not isinstance(value, str) or value not in allowed:
            raise BadSnapshot(f"{name} {value!r} not one of {sorted(allowed)}")
    temperature = _temperature(data) if b'"temperature"' in raw else None
    at_ms = int(at.timestamp() * 1000)
    return Snap(at_ms, at.astimezone(UTC), numbers + bools, enums, float(soc), int(threshold), temperature)
