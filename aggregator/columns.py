"""The column catalogue of ``telemetry_aggregates`` and its rollups, derived from enerlink.schemas.fields.

One place decides every statistic column and its type, so the aggregator's COPY rows, the rollup
SQL and the readers can never disagree (the migrations are fixed text; a test checks that a fresh
database has exactly these columns and types). docs/data-model.md lists them with their units.

* a measured quantity (voltage, power, the battery's voltage): ``{column}_avg``, ``_min``, ``_max``
  as ``real`` (float4: 24-bit mantissa, finer than the INA219's 4 mV / 0.1 mA and the MAX17048's
  steps over their whole range). :data:`FEWER_STATS` stores less of three of them: a channel's
  current is not stored (the INA219 computes power from current and bus voltage, so the power's
  average over the voltage's gives the current's average, and the power's extremes over the voltage
  its extremes, within the voltage's movement in the bucket: served as ``{ch}_current_avg``, see
  :data:`DERIVED`); the battery's SOC and charge rate keep their average only (the fuel gauge's
  SOC moves by at most a few tenths of a percent a minute, and its charge rate is itself a rate
  over time);
* a counter (daily / total / settlement energy): ``{column}_last`` as ``double precision`` (Wh with
  up to 5 decimals over a lifetime), and, per metered channel, ``{subsystem}_energy_10uwh``, the
  energy of the bucket from counter deltas (see :mod:`enerlink.aggregator.compute`) as a ``bigint``
  count of 10 uWh (the counters' 5th decimal: exact sums; the first minute after a gap in the readings
  carries the gap's energy, so no smaller bound holds); no average, minimum or maximum of a counter
  (they only say when in the minute it grew);
* a slowly changing setting (:data:`LAST_ONLY`: the battery's alert threshold and estimated
  capacity): ``{column}_last`` only;
* every bool field: ``{column}_count``, how many of the bucket's snapshots had it true (exact; the
  share is ``count / sample_count``, served as ``{column}_ratio``);
* every enum field: ``{column}_last``, the state at the end of the bucket, as a PostgreSQL enum whose
  labels are the contract's values (4 bytes; read as text);
* the firmware's derived ``net_solar`` / ``net_grid`` values are not stored where they copy a
  channel or can be recomputed exactly from stored columns: :data:`DERIVED` says how a reader
  computes each (the API serves them under their old names, and the ratios and energies in Wh).
  Only what cannot be recomputed is stored: the minimum and maximum of ``net_solar.load_power`` (a
  sum of two channels) and of both ``net_power`` (differences), and both ``status``.

Integer widths by level (:func:`table_columns`): the minute and 5-minute rows hold ``sample_count``
and the counts as ``smallint``, the folded hourly and daily rows (and their views) as ``integer``.

The minute table's rows are the narrowest (:data:`MINUTE_KEY_COLUMNS`): the times of the minute's
first and last snapshot are ``first_ms`` / ``last_ms``, integer milliseconds after ``bucket``
(served as ``first_at`` / ``last_at``, the rollups' timestamp columns). The minute table alone also
has :data:`SEQ_COLUMNS`: ``seq_first``, the ``seq`` of the minute's first snapshot carrying one,
``seq_span``, the last one's minus it (``seq_last`` = ``seq_first + seq_span``; both null when no
snapshot carries one, the span alone when it does not fit 32 bits, a restart of ``seq`` from beyond
two billion inside the minute: the minute then counts as one without ``seq``), and ``repaired_count``,
its snapshots listed in ``Keys.repaired`` (stored from a meter's re-sent readings). Completeness is
computed from them (enerlink/completeness.py); the rollups do not carry them.

:data:`MINUTE_COLUMNS` is the order the aggregator writes (COPY names its columns);
:func:`table_columns` the order of the table itself: widest types first, so no byte is lost to
alignment padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from enerlink.db import quote
from enerlink.schemas.fields import BOOL_FIELDS, DATA_FIELDS, ENERGY_CHANNELS, ENUM_FIELDS, Field
from enerlink.schemas.wire import Tables

Stat = Literal["avg", "min", "max", "last", "count", "energy"]
#: the minute and 5-minute tables' type of each statistic; an enum column's type is its enum's name
SqlType = str
#: the tables of statistics: minute rows, 5-minute rows (closed and open) and the folded hours and days
Level = Literal["minute", "5m", "folded"]

#: Channels with INA219 energy counters; each gets ``{subsystem}_energy_10uwh``.
ENERGY_SUBSYSTEMS: tuple[str, ...] = ENERGY_CHANNELS

#: Stored energy units in a watt-hour (10 uWh: the counters' 5th decimal).
ENERGY_UNITS_PER_WH = Tables.ENERGY_UNITS_PER_WH

#: Settings that change seldom: their value at the end of the minute is all there is to know.
LAST_ONLY: dict[str, SqlType] = {
    "battery_estimated_capacity": "real",
    "battery_alert_threshold": "smallint",
}

#: Measured quantities stored with fewer statistics than avg / min / max (see the module's docstring).
FEWER_STATS: dict[str, tuple[Stat, ...]] = {
    **{f"{sub}_current": () for sub in ENERGY_SUBSYSTEMS},
    "battery_soc": ("avg",),
    "battery_charge_rate": ("avg",),
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
    ("sample_count", "smallint not null"),
    ("first_at", "timestamptz not null"),
    ("last_at", "timestamptz not null"),
)


@dataclass(frozen=True, slots=True)
class StatColumn:
    name: str
    sql_type: SqlType  # in the minute and 5-minute tables (:func:`level_type` for the folded ones)
    stat: Stat
    field: Field | None  # None for energy columns
    subsystem: str


#: Widening of the integer types in the folded hourly and daily rows.
_FOLDED: dict[str, str] = {"smallint": "integer"}


def level_type(sql_type: str, level: Level, *, stat: Stat | None = None) -> str:
    """A statistic's (or ``sample_count``'s) type in the tables of ``level``: counts and sample counts
    are wider in the folded rows (the threshold, a smallint ``last``, is not)."""
    if level == "folded" and stat in (None, "count"):
        return _FOLDED.get(sql_type, sql_type)
    return sql_type


#: The enum types of the enum columns.
ENUM_TYPES: frozenset[str] = frozenset(Tables.enum_type(f.column) for f in ENUM_FIELDS)


def _copy_group(sql_type: str) -> int:
    """Sort key of the COPY order: 8-byte floats, 8-byte integers, reals, smallints, then enums
    (text on the wire: :mod:`enerlink.aggregator.copybin` encodes each numeric group in one pass)."""
    if sql_type in ENUM_TYPES:
        return 4
    return {"double precision": 0, "bigint": 1, "real": 2, "smallint": 3}[sql_type]


def _stat_columns() -> tuple[StatColumn, ...]:
    out: list[StatColumn] = []
    for f in DATA_FIELDS:
        if f.subsystem in DERIVED_SUBSYSTEMS and f.kind != "enum":
            for stat in PARTLY_STORED.get(f.column, ()):
                out.append(StatColumn(f"{f.column}_{stat}", "real", stat, f, f.subsystem))
        elif f.column in LAST_ONLY:
            out.append(StatColumn(f"{f.column}_last", LAST_ONLY[f.column], "last", f, f.subsystem))
        elif f.kind == "number":
            stats = FEWER_STATS.get(f.column, ("avg", "min", "max"))
            for stat in stats:
                out.append(StatColumn(f"{f.column}_{stat}", "real", stat, f, f.subsystem))
        elif f.kind == "counter":
            out.append(StatColumn(f"{f.column}_last", "double precision", "last", f, f.subsystem))
    for sub in ENERGY_SUBSYSTEMS:
        out.append(StatColumn(energy_column(sub), "bigint", "energy", None, sub))
    for f in BOOL_FIELDS:
        out.append(StatColumn(f"{f.column}_count", "smallint", "count", f, f.subsystem))
    for f in ENUM_FIELDS:
        out.append(StatColumn(f"{f.column}_last", Tables.enum_type(f.column), "last", f, f.subsystem))
    return tuple(sorted(out, key=lambda c: _copy_group(c.sql_type)))  # stable


energy_column = Tables.energy_column
energy_wh = Tables.energy_wh_sql


STAT_COLUMNS: tuple[StatColumn, ...] = _stat_columns()
ALL_COLUMNS: tuple[str, ...] = tuple(name for name, _ in KEY_COLUMNS) + tuple(c.name for c in STAT_COLUMNS)
#: The minute table's first columns (see the module's docstring), in COPY order.
MINUTE_KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("meter_id", "text not null"),
    ("bucket", "timestamptz not null"),
    ("sample_count", "smallint not null"),
    ("first_ms", "integer not null"),
    ("last_ms", "integer not null"),
)
#: Columns of the minute table only (see the module's docstring), after the statistics in COPY order.
SEQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq_first", "bigint"),
    ("seq_span", "integer"),
    ("repaired_count", "smallint"),
)
#: What the aggregator writes into the minute table, in this order.
MINUTE_COLUMNS: tuple[str, ...] = (
    tuple(name for name, _ in MINUTE_KEY_COLUMNS)
    + tuple(c.name for c in STAT_COLUMNS)
    + tuple(name for name, _ in SEQ_COLUMNS)
)
#: The minute row's offsets: readers get them as the values of :data:`DERIVED` they encode.
OFFSET_COLUMNS: frozenset[str] = frozenset({"first_ms", "last_ms", "seq_span"})


def table_columns(level: Level) -> list[tuple[str, str]]:
    """``(name, type)`` in the order of the tables of ``level``: 8-byte types first, then 4-, 2-byte
    and variable-length ones (no alignment padding between them)."""
    minute = level == "minute"
    key = dict(MINUTE_KEY_COLUMNS if minute else KEY_COLUMNS)
    seq = dict(SEQ_COLUMNS) if minute else {}
    typed = [(c.name, level_type(c.sql_type, level, stat=c.stat)) for c in STAT_COLUMNS]
    count = level_type("smallint", level)
    out = [("bucket", key["bucket"])]
    out += [] if minute else [(n, key[n]) for n in ("first_at", "last_at")]
    out += [(n, t) for n, t in seq.items() if t == "bigint"]
    out += [(n, t) for n, t in typed if t in ("double precision", "bigint")]
    out += [("sample_count", f"{count} not null")] if count == "integer" else []
    out += [(n, key[n]) for n in ("first_ms", "last_ms")] if minute else []
    out += [(n, t) for n, t in seq.items() if t == "integer"]
    out += [(n, t) for n, t in typed if t == "integer"]
    out += [(n, t) for n, t in typed if t == "real" or t in ENUM_TYPES]
    out += [("sample_count", f"{count} not null")] if count == "smallint" else []
    out += [(n, t) for n, t in seq.items() if t == "smallint"]
    out += [(n, t) for n, t in typed if t == "smallint"]
    out += [("meter_id", key["meter_id"])]
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

    for f in BOOL_FIELDS:  # the share of the bucket's snapshots in which a flag was true
        add(f"{f.column}_ratio", "({0}::float8 / nullif({1}, 0))", f"{f.column}_count", "sample_count")
    for sub in ENERGY_SUBSYSTEMS:  # the energies in Wh
        out.append(Derived(f"{sub}_energy_wh", energy_wh(sub), (energy_column(sub),)))
    for sub in ENERGY_SUBSYSTEMS:  # a channel's current: its power over its voltage (mW / V = mA)
        add(
            f"{sub}_current_avg",
            "coalesce({0}::float8 / nullif({1}::float8, 0), case when {0} = 0 then 0::float8 end)",
            f"{sub}_power_avg",
            f"{sub}_voltage_avg",
        )
    # the minute row's times and last seq (the rollups store the times as they are)
    for name, offset in Tables.MINUTE_OFFSETS.items():
        out.append(Derived(name, Tables.minute_time_sql(name), ("bucket", offset)))
    add("seq_last", "({0} + {1})", "seq_first", "seq_span")
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


def column_ddl(level: Level) -> list[str]:
    """``name type`` for every column of a statistics table, in :func:`table_columns` order."""
    return [f"{quote(n)} {t}" for n, t in table_columns(level)]
