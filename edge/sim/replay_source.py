"""Reading recorded telemetry for replay: this project's archive CSV, or any per-second CSV.

* **Archive CSV** (``telemetry_aggregates`` rows as the archiver writes them, ``.csv`` or
  ``.csv.gz``; recognised by its ``meter_id`` and ``bucket`` columns): one data message per row,
  numbers from ``{column}_avg`` (or ``_last``: settings), counters from ``{column}_last``, booleans
  from ``{column}_ratio`` or ``{column}_count / sample_count`` (true when >= 0.5), enums from
  ``{column}_last``; dated at ``bucket``.
  ``net_solar`` / ``net_grid`` numbers are computed from the channels when the archive does not hold
  them (months archived since migration 0010: docs/data-model.md).
* **Per-second CSV** with a time column (ISO date-time, epoch seconds or milliseconds, or
  ``HH:MM:SS`` anchored to ``--date``) and a mapping ``FIELD=COLUMN[*FACTOR]`` per measured value,
  e.g. ``solar_output.power=pv_w*1000 battery.soc=soc``. Unmapped channel voltages default to
  ``--voltage``; currents follow from P = V x I; energy counters are integrated from power when not
  mapped; net_solar and net_grid are computed as the firmware does.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from enerlink.schemas.fields import DATA_FIELDS, ENERGY_CHANNELS
from enerlink.schemas.telemetry import DATA_UNITS, DataMessage

CHANNELS = ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output")
INTEGER_FIELDS = {("battery", "alert_threshold")}


class ReplayError(ValueError):
    """A replay file or mapping that cannot be used; the message says where."""


@dataclass(frozen=True, slots=True)
class Record:
    epoch_s: float  # when it was recorded
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Mapping:
    field: tuple[str, str]  # (subsystem, name)
    column: str
    factor: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Mapping:
        target, sep, source = text.partition("=")
        subsystem, dot, name = target.strip().partition(".")
        if not sep or not dot:
            raise ReplayError(
                f"mapping {text!r}: use FIELD=COLUMN[*FACTOR], e.g. solar_output.power=pv_w*1000"
            )
        known = {(f.subsystem, f.name) for f in DATA_FIELDS}
        if (subsystem, name) not in known:
            raise ReplayError(f"mapping {text!r}: {target} is not a data field")
        column, star, factor = source.partition("*")
        try:
            scale = float(factor) if star else 1.0
        except ValueError as exc:
            raise ReplayError(f"mapping {text!r}: factor {factor!r} is not a number") from exc
        return cls(field=(subsystem, name), column=column.strip(), factor=scale)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def parse_time(value: str, *, date: dt.date | None = None, tz: dt.tzinfo = dt.UTC) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number / 1000.0 if number > 1e11 else number
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            clock = dt.time.fromisoformat(text)
        except ValueError as exc:
            raise ReplayError(f"time {value!r} is not ISO 8601, epoch or HH:MM:SS") from exc
        moment = dt.datetime.combine(date or dt.date.today(), clock)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def _iso(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


def _number(value: str | None, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise ReplayError(f"{where}: {value!r} is not a number") from exc
    return number if math.isfinite(number) else None


def from_archive(rows: Iterable[dict[str, str]]) -> list[Record]:
    records: list[Record] = []
    for line, row in enumerate(rows, start=2):
        data: dict[str, dict[str, Any]] = {}
        for f in DATA_FIELDS:
            section = data.setdefault(f.subsystem, {})
            if f.kind == "bool":  # a share (archives before migration 0012) or a count of samples
                ratio = _number(row.get(f"{f.column}_ratio"), f"line {line}")
                count = _number(row.get(f"{f.column}_count"), f"line {line}")
                samples = _number(row.get("sample_count"), f"line {line}")
                if ratio is None and count is not None and samples:
                    ratio = count / samples
                section[f.name] = ratio is not None and ratio >= 0.5
            elif f.kind == "enum":
                section[f.name] = row.get(f"{f.column}_last") or None
            else:
                first = "last" if f.kind == "counter" else "avg"
                value = None
                for stat in dict.fromkeys((first, "last", "avg")):
                    if value is None:
                        value = _number(row.get(f"{f.column}_{stat}"), f"line {line}")
                value = value or 0.0
                section[f.name] = round(value) if (f.subsystem, f.name) in INTEGER_FIELDS else value
        for channel in ENERGY_CHANNELS:  # rows since migration 0014: the current from power and voltage
            if f"{channel}_current_avg" not in row:
                section = data[channel]
                volts = section["voltage"]
                section["current"] = round(section["power"] / volts, 5) if volts else 0.0
        if "net_grid_import_total_last" not in row:  # rows since migration 0010: nets not stored
            statuses = data["net_solar"]["status"], data["net_grid"]["status"]
            firmware_nets(data)
            data["net_solar"]["status"], data["net_grid"]["status"] = statuses
        epoch = parse_time(row["bucket"])
        records.append(
            Record(
                epoch,
                {"meterId": row["meter_id"], "datetime": _iso(epoch), "units": DATA_UNITS, "data": data},
            )
        )
    records.sort(key=lambda r: r.epoch_s)
    return records


def _template() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {}
    for f in DATA_FIELDS:
        value: Any = False if f.kind == "bool" else 0.0
        if f.kind == "enum":
            value = "idle" if f.subsystem == "net_grid" else "balanced"
        data.setdefault(f.subsystem, {})[f.name] = value
    data["battery"].update(alert_threshold=10, connected=True, valid=True)
    return data


def derive(
    data: dict[str, dict[str, Any]],
    mapped: set[tuple[str, str]],
    *,
    voltage: float,
    dt_s: float,
    previous: dict[str, dict[str, Any]] | None,
) -> None:
    """Fill what the CSV did not give so the message is self-consistent (firmware rules)."""
    for name in CHANNELS:
        ch = data[name]
        if (name, "voltage") not in mapped:
            ch["voltage"] = voltage if ch["power"] or (name, "current") in mapped else 0.0
        if (name, "power") not in mapped and (name, "current") in mapped:
            ch["power"] = round(ch["voltage"] * ch["current"], 4)
        if (name, "current") not in mapped:
            ch["current"] = round(ch["power"] / ch["voltage"], 4) if ch["voltage"] else 0.0
            ch["power"] = round(ch["voltage"] * ch["current"], 4)
        for counter in ("daily_energy", "total_energy", "settlement_energy"):
            if counter in ch and (name, counter) not in mapped:
                before = previous[name][counter] if previous else 0.0
                ch[counter] = round(before + max(ch["power"], 0.0) / 1000.0 * dt_s / 3600.0, 6)
    data["export"]["active"] = data["export"]["power"] > 0
    data["import"]["active"] = data["import"]["power"] > 0
    data["solar_input"]["generating"] = data["solar_input"]["power"] > 0
    data["solar_output"]["generating"] = data["solar_output"]["power"] > 0
    firmware_nets(data)
    battery = data["battery"]
    battery["alert_active"] = battery["soc"] < battery["alert_threshold"]
    battery["is_charging"] = battery["charge_rate"] > 0


def firmware_nets(data: dict[str, dict[str, Any]]) -> None:
    """``net_solar`` and ``net_grid`` from the channels, as the firmware computes them."""
    ns, ng = data["net_solar"], data["net_grid"]
    so, ls, lh = data["solar_output"], data["load_smart_mtr"], data["load_home"]
    ns.update(solar_power=so["power"], load_power=round(ls["power"] + lh["power"], 4))
    ns["net_power"] = round(ns["solar_power"] - ns["load_power"], 4)
    ns.update(
        solar_daily=so["daily_energy"],
        load_daily=round(ls["daily_energy"] + lh["daily_energy"], 6),
        solar_total=so["total_energy"],
        load_total=round(ls["total_energy"] + lh["total_energy"], 6),
    )
    ns["net_daily"] = round(ns["solar_daily"] - ns["load_daily"], 6)
    ns["net_total"] = round(ns["solar_total"] - ns["load_total"], 6)
    ns["status"] = (
        "balanced" if abs(ns["net_power"]) < 1.0 else "surplus" if ns["net_power"] > 0 else "deficit"
    )
    ex, im = data["export"], data["import"]
    ng.update(
        export_power=ex["power"],
        import_power=im["power"],
        export_daily=ex["daily_energy"],
        import_daily=im["daily_energy"],
        export_total=ex["total_energy"],
        import_total=im["total_energy"],
    )
    ng["net_power"] = round(ng["export_power"] - ng["import_power"], 4)
    ng["net_daily"] = round(ng["export_daily"] - ng["import_daily"], 6)
    ng["net_total"] = round(ng["export_total"] - ng["import_total"], 6)
    ng["status"] = "exporting" if ng["net_power"] > 0 else "importing" if ng["net_power"] < 0 else "idle"


def from_series(
    rows: Iterable[dict[str, str]],
    *,
    mappings: Sequence[Mapping],
    time_column: str,
    meter_id: str,
    meter_column: str | None,
    voltage: float,
    date: dt.date | None,
) -> list[Record]:
    if not mappings:
        raise ReplayError("a per-second CSV needs at least one --map FIELD=COLUMN")
    mapped = {m.field for m in mappings}
    records: list[Record] = []
    previous: dict[str, dict[str, dict[str, Any]]] = {}
    last_time: dict[str, float] = {}
    for line, row in enumerate(rows, start=2):
        if time_column not in row:
            raise ReplayError(f"no time column {time_column!r}; columns: {sorted(row)}")
        epoch = parse_time(row[time_column], date=date)
        meter = (row.get(meter_column) if meter_column else None) or meter_id
        data = _template()
        for m in mappings:
            if m.column not in row:
                raise ReplayError(f"mapping for {'.'.join(m.field)}: no column {m.column!r}")
            value = _number(row[m.column], f"line {line}, {m.column}")
            if value is not None:
                scaled = value * m.factor
                data[m.field[0]][m.field[1]] = round(scaled) if m.field in INTEGER_FIELDS else scaled
        step = epoch - last_time[meter] if meter in last_time else 0.0
        derive(data, mapped, voltage=voltage, dt_s=max(step, 0.0), previous=previous.get(meter))
        previous[meter], last_time[meter] = data, epoch
        records.append(
            Record(epoch, {"meterId": meter, "datetime": _iso(epoch), "units": DATA_UNITS, "data": data})
        )
    records.sort(key=lambda r: r.epoch_s)
    return records


def load(
    path: Path,
    *,
    mappings: Sequence[Mapping] = (),
    time_column: str | None = None,
    meter_id: str = "METER001",
    meter_column: str | None = None,
    voltage: float = 230.0,
    date: dt.date | None = None,
) -> list[Record]:
    """Read ``path`` into records (sorted by time); each message validated against the contract."""
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if {"meter_id", "bucket"} <= set(header) and not mappings:
                records = from_archive(reader)
            else:
                column = time_column or next(
                    (c for c in ("time", "timestamp", "datetime") if c in header), None
                )
                if column is None:
                    raise ReplayError(f"{path}: no time column (give --time-column); columns: {header}")
                records = from_series(
                    reader,
                    mappings=mappings,
                    time_column=column,
                    meter_id=meter_id,
                    meter_column=meter_column,
                    voltage=voltage,
                    date=date,
                )
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from exc
    for index, record in enumerate(records):
        try:
            DataMessage.model_validate_json(orjson.dumps(record.message))
        except ValueError as exc:
            raise ReplayError(
                f"{path}: record {index + 1} does not make a valid data message: {exc}"
            ) from exc
    return records
