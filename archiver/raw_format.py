"""Raw readings as Parquet: one row per stored data reading, and back to the message's JSON.

Columns, in this order: ``meter_id`` (string), ``time`` (timestamp, µs, UTC: the message's
``datetime``), ``seq`` (int64, null when the meter sends none), ``resent`` (bool: stored from the
meter's re-sent readings, ``Keys.repaired``), one column per field of ``enerlink.schemas.fields.DATA_FIELDS``
(``{subsystem}_{name}``) and ``extra`` (JSON text of everything else the firmware sent, null when
nothing: fields newer firmware adds, units other than the standard ones, a ``datetime`` offset other
than UTC or a precision other than the usual one).

Numbers are kept exactly as the meter sent them: a numeric column whose values are all integers in
the file is int64 (they come back as integers); otherwise it is a
``decimal(18, s)`` stored as a Parquet INT64 with the smallest scale ``s`` (0-9) at which every
value of the column is exactly its decimal (the firmware rounds to 3-5 decimals), so the value read
back is the same binary number the message carried, bit for bit. A column whose values have no such
scale (a float with more than 9 decimals) is written as float64 in that file, also exact. A column
mixing integers and fractions gives its integers back as floats (``5`` as ``5.0``: the same number). Booleans
are bit-packed; enums and ``meter_id`` are dictionary-encoded; integers and decimals use
DELTA_BINARY_PACKED, float columns BYTE_STREAM_SPLIT; the whole file is zstd-compressed. Rows are
sorted by (meter_id, time, seq, member), so the same readings always give the same bytes (pyarrow
writes no timestamp or random identifier into the file; ``created_by`` names the pyarrow version).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from enerlink.schemas.fields import DATA_FIELDS, Field
from enerlink.schemas.telemetry import DATA_UNITS
from enerlink.schemas.wire import Buckets

KEY_COLUMNS = ("meter_id", "time", "seq", "resent")
EXTRA_COLUMN = "extra"
CONTENT_TYPE = Buckets.RAW_CONTENT_TYPE
MAX_SCALE = 9
_EXACT_LIMIT = float(2**53)  # unscaled integers below this divide back to the same float64
ZSTD_LEVEL = 9
_TOP_KNOWN = frozenset({"meterId", "datetime", "units", "data", "seq"})
_KNOWN: dict[str, frozenset[str]] = {}
for _f in DATA_FIELDS:
    _KNOWN[_f.subsystem] = _KNOWN.get(_f.subsystem, frozenset()) | {_f.name}


class RawFormatError(ValueError):
    """A stored snapshot is not a data message that can be kept as a row."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One stored data reading: its message (JSON bytes as ``decode_snapshot`` gives) and flags."""

    meter_id: str
    message: bytes
    repaired_seqs: frozenset[int] = frozenset()  # the meter's ``Keys.repaired`` members around it


def _micros(text: str) -> int:
    """Epoch µs of an ISO 8601 datetime with a time zone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise RawFormatError(f"datetime {text!r} has no time zone")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _render(micros: int) -> str:
    """The usual text of an instant: UTC ``Z``, seconds, milliseconds or microseconds as needed."""
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
    if not moment.microsecond:
        spec = "seconds"
    else:
        spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _row(reading: Reading) -> dict[str, Any]:
    try:
        message = orjson.loads(reading.message)
    except orjson.JSONDecodeError as exc:
        raise RawFormatError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise RawFormatError("not a data message")
    row: dict[str, Any] = {"meter_id": reading.meter_id}
    when = message.get("datetime")
    if not isinstance(when, str):
        raise RawFormatError("datetime missing")
    try:
        row["time"] = _micros(when)
    except ValueError as exc:
        raise RawFormatError(f"datetime {when!r}: {exc}") from exc
    seq = message.get("seq")
    row["seq"] = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    row["resent"] = row["seq"] is not None and row["seq"] in reading.repaired_seqs
    extra: dict[str, Any] = {k: v for k, v in message.items() if k not in _TOP_KNOWN}
    if seq is not None and row["seq"] is None:
        extra["seq"] = seq
    if _render(row["time"]) != when:  # another offset or precision: the text as sent
        extra["datetime"] = when
    if message.get("units") != DATA_UNITS:
        extra["units"] = message.get("units")
    data = message["data"]
    extra_data: dict[str, Any] = {}
    for subsystem, section in data.items():
        known = _KNOWN.get(subsystem)
        if known is None or not isinstance(section, dict):
            extra_data[subsystem] = section
            continue
        more = {k: v for k, v in section.items() if k not in known}
        if more:
            extra_data[subsystem] = more
        for name in known:
            row[f"{subsystem}_{name}"] = section.get(name)
    if extra_data:
        extra["data"] = extra_data
    row[EXTRA_COLUMN] = orjson.dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else None
    return row


def _number_array(values: list[Any]) -> pa.Array:
    """int64 when every value is an integer, else exact decimals at the smallest scale that holds every
    value, else float64."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 for v in present):
        return pa.array(values, type=pa.int64())
    mask = np.array([not isinstance(v, int | float) or isinstance(v, bool) for v in values])
    x = np.array([0.0 if m else float(v) for v, m in zip(values, mask, strict=True)], dtype=np.float64)
    for scale in range(MAX_SCALE + 1):
        unscaled = np.round(x * 10.0**scale)
        if np.all(np.abs(unscaled) < _EXACT_LIMIT) and np.array_equal(unscaled / 10.0**scale, x):
            ints = unscaled.astype(np.int64)
            pairs = np.stack([ints, ints >> 63], axis=1)  # little-endian 128-bit two's complement
            validity = pa.array(~mask).buffers()[1] if mask.any() else None
            return pa.Array.from_buffers(
                pa.decimal128(18, scale), len(values), [validity, pa.py_buffer(pairs.tobytes())]
            )
    return pa.array(x, type=pa.float64(), mask=mask if mask.any() else None)


def _column(field: Field, values: list[Any]) -> pa.Array:
    if field.kind == "bool":
        return pa.array([v if isinstance(v, bool) else None for v in values], type=pa.bool_())
    if field.kind == "enum":
        return pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())
    return _number_array(values)


def to_table(readings: Iterable[Reading]) -> tuple[pa.Table, int]:
    """The readings as one sorted table; returns it and the number of readings refused (not data
    messages), which are left out."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for reading in readings:
        try:
            rows.append(_row(reading))
        except RawFormatError:
            bad += 1
    rows.sort(key=lambda r: (r["meter_id"], r["time"], r["seq"] if r["seq"] is not None else -1, str(r)))
    arrays: dict[str, pa.Array] = {
        "meter_id": pa.array([r["meter_id"] for r in rows], type=pa.string()),
        "time": pa.array([r["time"] for r in rows], type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "seq": pa.array([r["seq"] for r in rows], type=pa.int64()),
        "resent": pa.array([r["resent"] for r in rows], type=pa.bool_()),
    }
    for field in DATA_FIELDS:
        arrays[field.column] = _column(field, [r.get(field.column) for r in rows])
    arrays[EXTRA_COLUMN] = pa.array([r[EXTRA_COLUMN] for r in rows], type=pa.string())
    return pa.table(arrays), bad


def _encodings(table: pa.Table) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, kind in zip(table.column_names, table.schema.types, strict=True):
        if pa.types.is_floating(kind):
            out[name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_integer(kind) or pa.types.is_decimal(kind) or pa.types.is_timestamp(kind):
            out[name] = "DELTA_BINARY_PACKED"
    return out


def write_parquet(table: pa.Table) -> bytes:
    """The table as Parquet bytes (zstd, the encodings above, one row group)."""
    sink = io.BytesIO()
    dictionary = ["meter_id", EXTRA_COLUMN, *(f.column for f in DATA_FIELDS if f.kind == "enum")]
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        use_dictionary=dictionary,
        column_encoding=_encodings(table),
        store_decimal_as_integer=True,
        row_group_size=max(1, table.num_rows),
        write_statistics=["meter_id", "time"],
        store_schema=False,
    )
    return sink.getvalue()


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of several files as one sorted table (decimal scales widened, float64 where needed)."""
    if not tables:
        return to_table([])[0]
    target: list[pa.Field] = []
    for name in tables[0].column_names:
        kinds = [t.schema.field(name).type for t in tables]
        if all(k == kinds[0] for k in kinds):
            target.append(pa.field(name, kinds[0]))
        elif all(pa.types.is_decimal(k) for k in kinds):
            target.append(pa.field(name, pa.decimal128(18, max(k.scale for k in kinds))))
        else:
            target.append(pa.field(name, pa.float64()))
    schema = pa.schema(target)
    merged = pa.concat_tables([t.cast(schema) for t in tables])
    return merged.sort_by([("meter_id", "ascending"), ("time", "ascending"), ("seq", "ascending")])


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return float(value)  # Decimal -> the nearest float64: the number the meter sent


def to_messages(table: pa.Table) -> list[tuple[str, int, bytes]]:
    """(meter_id, epoch ms, message JSON) of every row: the message rebuilt from its columns."""
    out: list[tuple[str, int, bytes]] = []
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    times = table.column("time").cast(pa.int64()).to_pylist()
    for i in range(table.num_rows):
        extra: dict[str, Any] = orjson.loads(columns[EXTRA_COLUMN][i]) if columns[EXTRA_COLUMN][i] else {}
        extra_data: dict[str, Any] = extra.pop("data", {})
        data: dict[str, dict[str, Any]] = {}
        for field in DATA_FIELDS:
            value = columns[field.column][i]
            if value is not None:
                data.setdefault(field.subsystem, {})[field.name] = _plain(value)
        for subsystem, section in extra_data.items():
            if isinstance(section, dict) and isinstance(data.get(subsystem), dict):
                data[subsystem].update(section)
            else:
                data[subsystem] = section
        micros = times[i]
        message: dict[str, Any] = {
            "meterId": columns["meter_id"][i],
            "datetime": extra.pop("datetime", None) or _render(micros),
            "units": extra.pop("units", DATA_UNITS),
            "data": data,
        }
        if columns["seq"][i] is not None:
            message["seq"] = columns["seq"][i]
        message.update(extra)
        out.append((columns["meter_id"][i], micros // 1000, orjson.dumps(message)))
    return out
