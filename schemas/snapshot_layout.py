"""The compact snapshot's layout: which values have a fixed slot, in which order, and how each is coded.

A compact member (:mod:`enerlink.schemas.snapshot`) is::

    VERSION (1 byte) | len(meterId) (1 byte) | len(rest) (2 bytes, big-endian) | meterId | rest | slots

``slots`` is a run of :data:`SLOT_COUNT` unsigned LEB128 varints, in this order:

* ``flags``: bit 0 ``units`` is :data:`enerlink.schemas.telemetry.DATA_UNITS`, bit 1 ``meterId`` is the string
  in the head, bit 2 ``data`` is an object, bit 3 + k subsystem k of :data:`SUBSYSTEMS` is an object;
* ``style`` and ``t``: the ``datetime`` (see :func:`datetime_style`; style 0: not in a slot);
* ``seq``: 0 = not in a slot, else seq + 1;
* one per :data:`NUMBER_SLOTS` (the numeric fields of :data:`enerlink.schemas.fields.DATA_FIELDS`, then the
  optional extras newer firmware and the simulated fleet send): ``zigzag(m) << 4 | code``, the value
  being the decimal ``m * 10**-decimals``: code 0 = a JSON integer ``m``, 1..13 = a JSON float with
  ``code - 1`` decimals, :data:`ABSENT` = not in a slot, :data:`COPY` = the same value as the slot
  :data:`COPIES` names (the net sections repeat the channels' values);
* the bool fields' values (bit k) and which are not in a slot (bit k);
* one per enum field: 0 = not in a slot, else 1 + the value's index in :data:`ENUM_VALUES`;
* ``battery.alerts``: 0 = not in a slot, else 1 + a bitmask over :data:`ALERTS` (canonical order).

``rest`` is every part of the message that has no slot (extra fields at any level, a value of an
unexpected type or one that does not fit), as a MessagePack map with sorted keys, nested like the
message; empty when there is none.
"""

from __future__ import annotations

import typing

from enerlink.schemas.fields import BOOL_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS, Field
from enerlink.schemas.telemetry import MeterData

VERSION = 1
HEAD = 4  # version, len(meterId), len(rest) (2 bytes)
MAX_REST = 65_535

SUBSYSTEMS: tuple[str, ...] = tuple((info.alias or attr) for attr, info in MeterData.model_fields.items())

#: Extra numbers with a slot of their own: the battery section of newer firmware and the simulated fleet.
OPTIONAL_NUMBERS: tuple[tuple[str, str], ...] = (
    ("battery", "temperature"),
    ("battery", "health"),
    ("battery", "cycles"),
)
NUMBER_SLOTS: tuple[tuple[str, str], ...] = (
    tuple((f.subsystem, f.name) for f in NUMERIC_FIELDS) + OPTIONAL_NUMBERS
)
N_REQUIRED_NUMBERS = len(NUMERIC_FIELDS)
BOOL_SLOTS: tuple[tuple[str, str], ...] = tuple((f.subsystem, f.name) for f in BOOL_FIELDS)


def _allowed(f: Field) -> tuple[str, ...]:
    model = next(i.annotation for a, i in MeterData.model_fields.items() if (i.alias or a) == f.subsystem)
    assert model is not None and hasattr(model, "model_fields")
    return tuple(sorted(typing.get_args(model.model_fields[f.name].annotation)))


ENUM_SLOTS: tuple[tuple[str, str], ...] = tuple((f.subsystem, f.name) for f in ENUM_FIELDS)
ENUM_VALUES: tuple[tuple[str, ...], ...] = tuple(_allowed(f) for f in ENUM_FIELDS)
ALERTS: tuple[str, ...] = ("low_soc", "thermal_runaway")

#: Number slot -> the slot whose value it usually repeats (``net_grid.import_power`` is ``import.power``).
_COPY_NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("net_grid", "export_power"): ("export", "power"),
    ("net_grid", "import_power"): ("import", "power"),
    ("net_grid", "export_daily"): ("export", "daily_energy"),
    ("net_grid", "import_daily"): ("import", "daily_energy"),
    ("net_grid", "export_total"): ("export", "total_energy"),
    ("net_grid", "import_total"): ("import", "total_energy"),
    ("net_solar", "solar_power"): ("solar_output", "power"),
    ("net_solar", "solar_daily"): ("solar_output", "daily_energy"),
    ("net_solar", "solar_total"): ("solar_output", "total_energy"),
}
COPIES: dict[int, int] = {NUMBER_SLOTS.index(k): NUMBER_SLOTS.index(v) for k, v in _COPY_NAMES.items()}
assert all(source < slot for slot, source in COPIES.items())  # a copy's source is decoded first

ABSENT = 14
COPY = 15
MAX_DECIMALS = 12
MAX_MANTISSA = 2**53  # exact as a float64, so m / 10**d is the correctly rounded value

# Positions in the slot run.
FLAGS, STYLE, T, SEQ = 0, 1, 2, 3
NUMBERS = 4
BOOL_VALUES = NUMBERS + len(NUMBER_SLOTS)
BOOL_MISSING = BOOL_VALUES + 1
ENUMS = BOOL_MISSING + 1
ALERT_SLOT = ENUMS + len(ENUM_SLOTS)
SLOT_COUNT = ALERT_SLOT + 1

FLAG_UNITS, FLAG_METER, FLAG_DATA, FLAG_SUB0 = 1, 2, 4, 8
ALL_SUBSYSTEMS = ((1 << len(SUBSYSTEMS)) - 1) * FLAG_SUB0
#: A complete message (units as usual, every subsystem an object): what the aggregator's fast path needs.
FULL_FLAGS = FLAG_UNITS | FLAG_METER | FLAG_DATA | ALL_SUBSYSTEMS
REQUIRED_FLAGS = FLAG_METER | FLAG_DATA | ALL_SUBSYSTEMS

# datetime styles: 1 + (zigzag(offset minutes) << 3 | zulu << 2 | precision); t in that precision.
PRECISIONS: tuple[tuple[str, int], ...] = (
    ("seconds", 1),
    ("milliseconds", 1_000),
    ("microseconds", 1_000_000),
)
