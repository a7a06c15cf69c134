"""The column catalogue of ``telemetry_aggregates`` and its rollups, derived from schemas.fields.

One place decides every statistic column, so the migration's DDL, the aggregator's COPY rows and
the rollup SQL can never disagree:

* every numeric field (``number`` and ``counter``): ``{column}_avg``, ``_min``, ``_max``;
* every counter field: ``{column}_last`` (the last value seen in the minute);
* the six metered channels: ``{subsystem}_energy_wh``, energy that flowed in the minute, computed
  from counter deltas (see :mod:`aggregator.energy`);
* every bool field: ``{column}_ratio``, the share of the minute's snapshots in which it was true
  (a reader wants "importing 40 % of the minute" rather than one arbitrary last value);
* every enum field: ``{column}_last`` (text), the state at the end of the minute.

The minute table alone also has :data:`SEQ_COLUMNS` (migration 0009, after every statistic column):
``seq_first`` / ``seq_last``, the ``seq`` of the minute's first and last snapshot carrying one (null
when none does), and ``repaired_count``, its snapshots listed in ``Keys.repaired`` (stored from a
meter's re-sent readings). Completeness is computed from them (enerlink/completeness.py); the
rollups do not carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.fields import BOOL_FIELDS, DATA_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS, Field

Stat = Literal["avg", "min", "max", "last", "ratio", "energy"]

#: Channels with INA219 energy counters; each gets ``{subsystem}_energy_wh``.
ENERGY_SUBSYSTEMS: tuple[str, ...] = (
    "export",
    "import",
    "load_smart_mtr",
    "load_home",
    "solar_input",
    "solar_output",
)

KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("meter_id", "text not null"),
    ("bucket", "timestamptz not null"),
    ("sample_count", "integer not null"),
    ("first_at", "timestamptz not null"),
    ("last_at", "timestamptz not null"),
)


@dataclass(frozen=True, slots=True)
class StatColumn:
    name: str
    sql_type: str
    stat: Stat
    field: Field | None  # None for energy columns
    subsystem: str


def _stat_columns() -> tuple[StatColumn, ...]:
    out: list[StatColumn] = []
    for f in NUMERIC_FIELDS:
        for stat in ("avg", "min", "max"):
            out.append(StatColumn(f"{f.column}_{stat}", "double precision", stat, f, f.subsystem))
    for f in DATA_FIELDS:
        if f.kind == "counter":
            out.append(StatColumn(f"{f.column}_last", "double precision", "last", f, f.subsystem))
    for sub in ENERGY_SUBSYSTEMS:
        out.append(StatColumn(f"{sub}_energy_wh", "double precision", "energy", None, sub))
    for f in BOOL_FIELDS:
        out.append(StatColumn(f"{f.column}_ratio", "double precision", "ratio", f, f.subsystem))
    for f in ENUM_FIELDS:
        out.append(StatColumn(f"{f.column}_last", "text", "last", f, f.subsystem))
    return tuple(out)


STAT_COLUMNS: tuple[StatColumn, ...] = _stat_columns()
ALL_COLUMNS: tuple[str, ...] = tuple(name for name, _ in KEY_COLUMNS) + tuple(c.name for c in STAT_COLUMNS)
#: Columns of the minute table only (see the module's docstring), in table order after ALL_COLUMNS.
SEQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq_first", "bigint"),
    ("seq_last", "bigint"),
    ("repaired_count", "smallint"),
)
#: What the aggregator writes into the minute table, in this order.
MINUTE_COLUMNS: tuple[str, ...] = ALL_COLUMNS + tuple(name for name, _ in SEQ_COLUMNS)


def quote(name: str) -> str:
    """Double-quote an identifier for generated DDL (names come from the catalogue, never input)."""
    return '"' + name.replace('"', '""') + '"'


def column_ddl() -> list[str]:
    """``name type`` for every column of a statistics table, key columns first."""
    keys = [f"{quote(n)} {t}" for n, t in KEY_COLUMNS]
    return keys + [f"{quote(c.name)} {c.sql_type}" for c in STAT_COLUMNS]
