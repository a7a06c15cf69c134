"""Fast reading of stored data snapshots: orjson and a cheap sanity check instead of pydantic.

Every snapshot in Redis was validated in full (``DataMessage``, strict types and bounds) by the
ingest before it was stored, so the aggregator treats Redis as trusted internal storage and does
not validate again field by field: that cost more than everything else in a job. What it still
checks, so that a corrupt or foreign member is counted as bad and skipped instead of crashing the
batch or poisoning a statistic:

* the bytes are JSON (orjson: NaN/Infinity are not JSON, so every number is finite) and an object;
* ``meterId`` is the meter the key belongs to, ``datetime`` an ISO 8601 string with a timezone;
* ``seq``, when present (firmware that numbers its data messages), an integer (not a bool);
* every numeric and bool field of every subsystem is present and a JSON number or boolean (no
  null, string, array or object: one ``set(map(type, ...))`` per snapshot), every enum field one of
  its allowed values.

Physical bounds (SOC within 0-100 ...) and the strict number/bool distinction are not re-checked:
they were when the message came in. :func:`parse` reads the JSON message: a stored member goes through
:func:`enerlink.schemas.snapshot.decode_snapshot` first (compact members are read in bulk by
aggregator/batch.py).
"""

from __future__ import annotations

import itertools
import operator
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import orjson

from enerlink.schemas.fields import BOOL_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS, Field
from enerlink.schemas.telemetry import MeterData

#: Field order of a snapshot's vector (numbers, then bools as 0/1): the aggregator's matrix columns.
VALUE_FIELDS: tuple[Field, ...] = NUMERIC_FIELDS + BOOL_FIELDS
N_NUMERIC = len(NUMERIC_FIELDS)
_SCALAR_TYPES = frozenset((int, float, bool))
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


_GETTERS, _ORDER = _getters(VALUE_FIELDS)
#: The field at each position of a raw vector (subsystem by subsystem).
RAW_ORDER: tuple[Field, ...] = tuple(_ORDER)
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
    vector: tuple[Any, ...]  # RAW_ORDER; bools as True/False
    # ``at`` keeps the message's own offset (the same instant as UTC)
    enums: tuple[str, ...]
    soc: float
    alert_threshold: int
    temperature: float | None
    seq: int | None = None  # the message's ``seq`` (None: the firmware sends none)


def _temperature(data: dict[str, Any]) -> float | None:
    """Highest ``temperature`` (°C) any subsystem reports (newer firmware adds it as an extra field)."""
    return max_temperature([data[sub].get("temperature") for sub in _SUBSYSTEMS])


def _parse_orjson(raw: bytes, meter_id: str) -> Snap:
    try:
        msg = orjson.loads(raw)
        if msg["meterId"] != meter_id:
            raise BadSnapshot(f"meterId {msg['meterId']!r} in the series of {meter_id!r}")
        at = datetime.fromisoformat(msg["datetime"])
        data = msg["data"]
        vector: list[Any] = []
        for sub, get in _GETTERS:
            vector += get(data[sub])
        enums = tuple(data[sub][name] for sub, name, _ in _ENUMS)
        battery = data["battery"]
        soc, threshold = battery["soc"], battery["alert_threshold"]
        seq = msg.get("seq")
    except BadSnapshot:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadSnapshot(f"unusable snapshot: {type(exc).__name__}: {exc}") from exc
    if at.tzinfo is None:
        raise BadSnapshot("datetime without a timezone")
    if not set(map(type, vector)) <= _SCALAR_TYPES:
        raise BadSnapshot("a field is not a number or a boolean")
    for value, (_, name, allowed) in zip(enums, _ENUMS, strict=True):
        if not isinstance(value, str) or value not in allowed:
            raise BadSnapshot(f"{name} {value!r} not one of {sorted(allowed)}")
    if seq is not None and type(seq) is not int:
        raise BadSnapshot(f"seq {seq!r} is not an integer")
    temperature = _temperature(data) if b'"temperature"' in raw else None
    at_ms = int(at.timestamp() * 1000)
    return Snap(at_ms, at, tuple(vector), enums, float(soc), int(threshold), temperature, seq)


def decode_envelope(
    decode: Callable[[bytes], Any], raw: bytes, *, meter_id: str, what: str
) -> tuple[Any, datetime]:
    """Decode a stored message with a msgspec decoder and check its envelope (its series' meterId, a
    datetime with a timezone); returns the decoded message and its datetime."""

    try:
        msg: Any = decode(raw)
        at = datetime.fromisoformat(msg.datetime)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise BadSnapshot(f"unusable {what}: {exc}") from exc
    if msg.meterId != meter_id:
        raise BadSnapshot(f"meterId {msg.meterId!r} in the series of {meter_id!r}")
    if at.tzinfo is None:
        raise BadSnapshot("datetime without a timezone")
    return msg, at


@dataclass(frozen=True, slots=True)
class MsgspecLayout:
    """The typed msgspec decoder of a data message and where each field lands: the subsystems'
    structs, each turned into a tuple and laid end to end, hold ``flat[i]`` = (subsystem, field) at
    position ``i`` (numbers and bools in RAW_ORDER within a subsystem, then its enums and its
    ``temperature``)."""

    decode: Callable[[bytes], Any]
    flat: tuple[tuple[str, str], ...]

    def positions(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [self.flat.index(p) for p in pairs]


def _msgspec_layout() -> MsgspecLayout | None:
    """With msgspec installed: typed decoding straight into structs (types checked in C: a number
    is an int or float, a bool a bool, an enum one of its values; unknown fields skipped), about
    three times faster than orjson plus the checks above. Same results, same errors."""
    structs: list[tuple[str, Any, Any]] = []
    flat: list[tuple[str, str]] = []
    for sub in _SUBSYSTEMS:
        fields: list[Any] = [
            (f.name, float if f.kind in ("number", "counter") else bool)
            for f in RAW_ORDER
            if f.subsystem == sub
        ]
        fields += [(n, typing.Literal[tuple(sorted(a))]) for s, n, a in _ENUMS if s == sub]
        fields.append(("temperature", Any, None))
        flat += [(sub, f[0]) for f in fields]
        struct = msgspec.defstruct(f"_Data_{sub}", fields, gc=False)
        structs.append((f"f{len(structs)}", struct, msgspec.NODEFAULT))
    rename = {f"f{i}": sub for i, sub in enumerate(_SUBSYSTEMS)}
    data_type = msgspec.defstruct("_Data", structs, rename=rename, gc=False)
    message = msgspec.defstruct(
        "_Message",
        [("meterId", str), ("datetime", str), ("data", data_type), ("seq", int | None, None)],
        gc=False,
    )
    return MsgspecLayout(msgspec.json.Decoder(message).decode, tuple(flat))


#: The msgspec layout (None without msgspec); aggregator/batch.py decodes whole batches with it.
LAYOUT = _msgspec_layout()
#: (subsystem, field) of every enum field, in the order of ``Snap.enums``.
ENUM_POSITIONS: tuple[tuple[str, str], ...] = tuple((s, n) for s, n, _ in _ENUMS)
#: The per-subsystem ``temperature`` positions of a flat row, and their maximum (newer firmware).
TEMPERATURES: tuple[tuple[str, str], ...] = tuple((s, "temperature") for s in _SUBSYSTEMS)


def max_temperature(values: Sequence[Any]) -> float | None:
    """Highest ``temperature`` among the subsystems' values that are numbers (None if none is)."""
    best: float | None = None
    for value in values:
        if isinstance(value, int | float) and not isinstance(value, bool):
            best = float(value) if best is None else max(best, float(value))
    return best


def _msgspec_decoder(layout: MsgspecLayout | None) -> Callable[[bytes, str], Snap] | None:
    """One snapshot at a time through the msgspec layout."""
    if layout is None:
        return None

    decode = layout.decode
    astuple = msgspec.structs.astuple
    concat = itertools.chain.from_iterable
    # One itemgetter picks the vector (RAW_ORDER), the enums and every subsystem's temperature out
    # of all subsystems' fields laid end to end: a few C calls per snapshot instead of a loop.
    n_values = len(RAW_ORDER)
    n_head = n_values + len(_ENUMS)
    n_subs = len(_SUBSYSTEMS)
    pick = operator.itemgetter(
        *layout.positions([(f.subsystem, f.name) for f in RAW_ORDER]),
        *layout.positions(ENUM_POSITIONS),
        *layout.positions(TEMPERATURES),
    )
    soc_at = RAW_ORDER.index(next(f for f in RAW_ORDER if f.column == "battery_soc"))
    threshold_at = RAW_ORDER.index(next(f for f in RAW_ORDER if f.column == "battery_alert_threshold"))

    def parse(raw: bytes, meter_id: str) -> Snap:
        msg, at = decode_envelope(decode, raw, meter_id=meter_id, what="snapshot")
        picked = pick(tuple(concat(map(astuple, astuple(msg.data)))))
        vector = picked[:n_values]
        temperatures = picked[n_head:]
        temperature = None if temperatures.count(None) == n_subs else max_temperature(temperatures)
        return Snap(
            int(at.timestamp() * 1000),
            at,
            vector,
            picked[n_values:n_head],
            float(vector[soc_at]),
            int(vector[threshold_at]),
            temperature,
            msg.seq,
        )

    return parse


_FAST = _msgspec_decoder(LAYOUT)
#: Which decoder is in use ("msgspec" when installed, else "orjson").
DECODER = "msgspec" if _FAST is not None else "orjson"


def parse(raw: bytes, meter_id: str) -> Snap:
    """One snapshot; raises :class:`BadSnapshot` saying why it is unusable."""
    if _FAST is not None:
        return _FAST(raw, meter_id)
    return _parse_orjson(raw, meter_id)
