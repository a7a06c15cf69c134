"""The column catalogue of ``telemetry_aggregates`` and its rollups, derived from enerlink.schemas.fields.

One place decides every statistic column and its type, so the aggregator's COPY rows, the rollup
SQL and the readers can never disagree (the migrations are fixed text; a test checks that a fresh
database has exactly these columns and types). docs/data-model.md lists them with their units.

* a measured quantity (voltage, current, power, SOC, charge rate): ``{column}_avg``, ``_min``,
  ``_max`` as ``real`` (float4: 24-bit mantissa, finer than the INA219's 4 mV / 0.1 mA and the
  MAX17048's steps over their whole range);
* a counter (daily / total / settlement energy): ``{column}_last`` as ``double precision`` (Wh with
  up to 5 decimals over a lifetime), and, per metered channel, ``{subsystem}_energy_wh`` (double
  precision), the energy of the minute from counter deltas (see :mod:`enerlink.aggregator.compute`); no
  average, minimum or maximum of a counter (they only say when in the minute it grew);
* a slowly changing setting (:data:`LAST_ONLY`: the battery's alert threshold and estimated
  capacity): ``{column}_last`` only;
* every bool field: ``{column}_ratio`` (real), the share of the minute's snapshots in which it was
  true (exact to float4: a count of at most a few hundred over the same);
* every enum field: ``{column}_last`` (text), the state at the end of the minute;
* the firmware's derived ``net_solar`` / ``net_grid`` values are not stored where they copy a
  channel or can be recomputed exactly from stored columns: :data:`DERIVED` says how a reader
  computes each (the API serves them under their old names). Only what cannot be recomputed is
  stored: the minimum and maximum of ``net_solar.load_power`` (a sum of two channels) and of both
  ``net_power`` (differences), and both ``status``.

The minute table alone also has :data:`SEQ_COLUMNS`: ``seq_first`` / ``seq_last``, the ``seq`` of the
minute's first and last snapshot carrying one (null when none does), and ``repaired_count``, its
snapshots listed in ``Keys.repaired`` (stored from a meter's re-sent readings). Completeness is
computed from them (enerlink/completeness.py); the rollups do not carry them.

:data:`MINUTE_COLUMNS` is the order the aggregator writes (COPY names its columns);
:func:`table_columns` the order of the table itself: widest types first, so no byte is lost to
alignment padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from enerlink.db import quote
from enerlink.schemas.fields import BOOL_FIELDS, DATA_FIELDS, ENUM_FIELDS, Field

Stat = Literal["avg", "min", "max", "last", "ratio", "energy"]
SqlType = Literal["double precision", "real", "smallint", "text"]

#: Channels with INA219 energy counters; each gets ``{subsystem}_energy_wh``.
ENERGY_SUBSYSTEMS: tuple[str, ...] = (
    "export",
    "import",
    "load_smart_mtr",
    "load_home",
    "solar_input",
    "solar_output",
)

#: Settings that change seldom: their value at the end of the minute is all there is to know.
LAST_ONLY: dict[str, SqlType] = {
    "battery_estimated_capacity": "real",
    "battery_alert_threshold": "smallint",
}

#: Fields of the firmware's derived subsystems stored with some statistics only (the others are
#: recomputed: :data:`DERIVED`); every other field of ``net_solar`` / ``net_grid`` but ``status``
#: is not stored at all.
PARTLY_STORED: dict[str, tuple[Stat, ...]] = {
    "net_solar_load_power": ("min", "max"),
    "net_solar_net_power": ("min", "max"),
    "net_grid_net_power": ("min", "max"),
}
DERIVED_SUBSYSTEMS = ("net_solar", "net_grid")

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
    sql_type: SqlType
    stat: Stat
    field: Field | None  # None for energy columns
    subsystem: str


_WIDTH: dict[str, int] = {"double precision": 0, "real": 1, "smallint": 2, "text": 3}


def _stat_columns() -> tuple[StatColumn, ...]:
    out: list[StatColumn] = []
    for f in DATA_FIELDS:
        if f.subsystem in DERIVED_SUBSYSTEMS and f.kind != "enum":
            for stat in PARTLY_STORED.get(f.column, ()):
                out.append(StatColumn(f"{f.column}_{stat}", "real", stat, f, f.subsystem))
        elif f.column in LAST_ONLY:
            out.append(StatColumn(f"{f.column}_last", LAST_ONLY[f.column], "last", f, f.subsystem))
        elif f.kind == "number":
            for stat in ("avg", "min", "max"):
                out.append(StatColumn(f"{f.column}_{stat}", "real", stat, f, f.subsystem))
        elif f.kind == "counter":
            out.append(StatColumn(f"{f.column}_last", "double precision", "last", f, f.subsystem))
    for sub in ENERGY_SUBSYSTEMS:
        out.append(StatColumn(f"{sub}_energy_wh", "double precision", "energy", None, sub))
    for f in BOOL_FIELDS:
        out.append(StatColumn(f"{f.column}_ratio", "real", "ratio", f, f.subsystem))
    for f in ENUM_FIELDS:
        out.append(StatColumn(f"{f.column}_last", "text", "last", f, f.subsystem))
    # grouped by type (stable): COPY encodes each group in one numpy pass
    return tuple(sorted(out, key=lambda c: _WIDTH[c.sql_type]))


STAT_COLUMNS: tuple[StatColumn, ...] = _stat_columns()
ALL_COLUMNS: tuple[str, ...] = tuple(name for name, _ in KEY_COLUMNS) + tuple(c.name for c in STAT_COLUMNS)
#: Columns of the minute table only (see the module's docstring), after ALL_COLUMNS in COPY order.
SEQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq_first", "bigint"),
    ("seq_last", "bigint"),
    ("repaired_count", "smallint"),
)
#: What the aggregator writes into the minute table, in this order.
MINUTE_COLUMNS: tuple[str, ...] = ALL_COLUMNS + tuple(name for name, _ in SEQ_COLUMNS)


def table_columns(*, minute: bool) -> list[tuple[str, str]]:
    """``(name, type)`` in the order of the minute table (``minute``) or of a rollup table: 8-byte
    types first, then 4-, 2-byte and variable-length ones (no alignment padding between them)."""
    key = dict(KEY_COLUMNS)
    seq = dict(SEQ_COLUMNS) if minute else {}
    out = [(n, key[n]) for n in ("bucket", "first_at", "last_at")]
    out += [(n, t) for n, t in seq.items() if t == "bigint"]
    out += [(c.name, c.sql_type) for c in STAT_COLUMNS if c.sql_type == "double precision"]
    out += [("sample_count", key["sample_count"])]
    out += [(c.name, c.sql_type) for c in STAT_COLUMNS if c.sql_type == "real"]
    out += [(n, t) for n, t in seq.items() if t == "smallint"]
    out += [(c.name, c.sql_type) for c in STAT_COLUMNS if c.sql_type == "smallint"]
    out += [("meter_id", key["meter_id"])]
    out += [(c.name, c.sql_type) for c in STAT_COLUMNS if c.sql_type == "text"]
    return out


@dataclass(frozen=True, slots=True)
class Derived:
    """A value of the firmware's message that is not stored: ``sql`` computes it from ``sources``
    (stored columns of the same row, unqualified), exactly (to the sources' type)."""

    name: str
    sql: str
    sources: tuple[str, ...]


_LOADS = ("load_smart_mtr", "load_home")


def _derived() -> tuple[Derived, ...]:
    out: list[Derived] = []

    def add(name: str, expression: str, *sources: str) -> None:
        out.append(Derived(name, expression.format(*(quote(s) for s in sources)), sources))

    for stat in ("avg", "min", "max"):  # copies of a channel's power
        add(f"net_solar_solar_power_{stat}", "{0}", f"solar_output_power_{stat}")
        add(f"net_grid_export_power_{stat}", "{0}", f"export_power_{stat}")
        add(f"net_grid_import_power_{stat}", "{0}", f"import_power_{stat}")
    # averages of sums and differences: the sums and differences of the averages (same samples)
    loads = ("load_smart_mtr_power_avg", "load_home_power_avg")
    add("net_solar_load_power_avg", "({0}::float8 + {1}::float8)", *loads)
    add(
        "net_solar_net_power_avg",
        "({0}::float8 - ({1}::float8 + {2}::float8))",
        "solar_output_power_avg",
        *loads,
    )
    add("net_grid_net_power_avg", "({0}::float8 - {1}::float8)", "export_power_avg", "import_power_avg")
    # counters at the end of the minute: copies, sums and differences of the channels' (the
    # firmware rounds them to 5 decimals, as here)
    for period in ("daily", "total"):
        solar, smart, home = (
            f"{s}_{period}_energy_last" for s in ("solar_output", "load_smart_mtr", "load_home")
        )
        export, imp = f"export_{period}_energy_last", f"import_{period}_energy_last"
        add(f"net_solar_solar_{period}_last", "{0}", solar)
        add(f"net_solar_load_{period}_last", "round(({0} + {1})::numeric, 5)::float8", smart, home)
        add(
            f"net_solar_net_{period}_last",
            "round(({0} - ({1} + {2}))::numeric, 5)::float8",
            solar,
            smart,
            home,
        )
        add(f"net_grid_export_{period}_last", "{0}", export)
        add(f"net_grid_import_{period}_last", "{0}", imp)
        add(f"net_grid_net_{period}_last", "round(({0} - {1})::numeric, 5)::float8", export, imp)
    return tuple(out)


DERIVED: tuple[Derived, ...] = _derived()


def column_ddl(*, minute: bool = False) -> list[str]:
    """``name type`` for every column of a statistics table, in :func:`table_columns` order."""
    return [f"{quote(n)} {t}" for n, t in table_columns(minute=minute)]
