"""Minute rows encoded for PostgreSQL's binary COPY in the worker processes, straight from the matrix.

A part's 2,500 rows of ~100 statistics used to travel to the main process as Python tuples
(pickled, unpickled) and be encoded there value by value; the bytes are built here instead, the
numeric columns in one numpy pass (each value with its 4-byte length, big-endian), and the main
process writes them as they are (:func:`enerlink.aggregator.store.copy_encoded`).

The row format is PostgreSQL's (``COPY ... FROM STDIN (FORMAT binary)``): a 16-bit field count,
then each field as a 32-bit length and its bytes; ``timestamptz`` is microseconds since
2000-01-01 UTC (int64), ``bigint`` int64, ``integer`` int32, ``smallint`` int16, ``text`` and an
enum's label UTF-8. The key columns are ``MINUTE_KEY_COLUMNS``: the first and last snapshot's
times as milliseconds after the bucket (int32).
The signature and the trailer are added by the writer around all parts' rows. The statistics come
grouped by type as :data:`enerlink.aggregator.columns.STAT_COLUMNS` orders them: ``double precision``
(float64), ``bigint`` (int64, rounded), ``real`` (float32, the value rounded to nearest),
``smallint`` (int16, rounded), then the enums (their label). After them come the minute table's
``seq_first`` (int8) and ``seq_span`` (int4), NULL when the minute has no ``seq`` (the span also
when it does not fit: :func:`seq_columns`), and ``repaired_count`` (int2): ``MINUTE_COLUMNS``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from enerlink.aggregator.columns import (
    ENUM_TYPES,
    MINUTE_COLUMNS,
    MINUTE_KEY_COLUMNS,
    SEQ_COLUMNS,
    STAT_COLUMNS,
)

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
_NUMERIC = [c for c in STAT_COLUMNS if c.sql_type not in ENUM_TYPES]
_TEXTS = [c for c in STAT_COLUMNS if c.sql_type in ENUM_TYPES]
assert list(STAT_COLUMNS) == _NUMERIC + _TEXTS, "enum columns must come last"
#: SQL type -> numpy type of each numeric group, in STAT_COLUMNS order
_GROUPS: dict[str, str] = {"double precision": ">f8", "bigint": ">i8", "real": ">f4", "smallint": ">i2"}
_SIZES = [sum(c.sql_type == t for c in _NUMERIC) for t in _GROUPS]
assert [c.sql_type for c in _NUMERIC] == [t for t, n in zip(_GROUPS, _SIZES, strict=True) for _ in range(n)]
_BOUNDS = np.cumsum([0, *_SIZES]).tolist()
_INT16 = (-32_768, 32_767)
_INT64 = (-(2**63), 2**63 - 1)
assert [t for _, t in MINUTE_KEY_COLUMNS] == [
    "text not null",
    "timestamptz not null",
    "smallint not null",
    "integer not null",
    "integer not null",
]
_HEAD = struct.Struct(">hi")  # field count, length of meter_id
_KEYS = struct.Struct(">iqihiiii")  # bucket, sample_count, first_ms, last_ms with their lengths
_LEN = struct.Struct(">i")
assert [t for _, t in SEQ_COLUMNS] == ["bigint", "integer", "smallint"]
_SEQS = struct.Struct(">iqiiih")  # seq_first, seq_span, repaired_count with their lengths
_NO_SEQS = struct.Struct(">iiih")  # seq_first and seq_span NULL (length -1), repaired_count
_NO_SPAN = struct.Struct(">iqiih")  # seq_first, seq_span NULL, repaired_count
_INT32 = (-(2**31), 2**31 - 1)
_NULL = -1
_FIELD = np.dtype(
    [
        (f"g{k}", [("length", ">i4"), ("value", code)], (size,))
        for k, (code, size) in enumerate(zip(_GROUPS.values(), _SIZES, strict=True))
        if size
    ]
)
N_FLOATS = len(_NUMERIC)


def _integers(values: np.ndarray[Any, Any], bounds: tuple[int, int]) -> np.ndarray[Any, Any]:
    rounded: np.ndarray[Any, Any] = np.clip(np.rint(np.nan_to_num(values)), *bounds)
    return rounded


_INTEGER_BOUNDS: dict[str, tuple[int, int]] = {"bigint": _INT64, "smallint": _INT16}


def seq_columns(seq_first: int, seq_last: int) -> tuple[int | None, int | None]:
    """``seq_first`` and ``seq_span`` of a minute whose first and last ``seq`` are given (-1: none
    carries one; both None); the span None when it does not fit 32 bits (a restart of ``seq`` from
    beyond two billion inside the minute: the minute counts as one without ``seq``)."""
    if seq_last < 0:
        return None, None
    span = seq_last - seq_first
    return seq_first, (span if _INT32[0] <= span <= _INT32[1] else None)


def as_python(floats: np.ndarray[Any, Any]) -> list[list[float | int]]:
    """The numeric statistics of each row as Python values of their column's type (tuples path):
    ``real`` rounded to float32 as the binary COPY sends it, ``bigint`` and ``smallint`` as int."""
    rows = np.asarray(floats, dtype=np.float64).copy()
    parts: list[list[list[float]] | list[list[int]]] = []
    for k, sql_type in enumerate(_GROUPS):
        part = rows[:, _BOUNDS[k] : _BOUNDS[k + 1]]
        if sql_type in _INTEGER_BOUNDS:
            parts.append(_integers(part, _INTEGER_BOUNDS[sql_type]).astype(np.int64).tolist())
        elif sql_type == "real":
            parts.append(part.astype(np.float32).astype(np.float64).tolist())
        else:
            parts.append(part.tolist())
    return [[v for part in row for v in part] for row in zip(*parts, strict=True)]


def encode_rows(
    *,
    meter_ids: Sequence[str],
    minute_ms: Sequence[int],
    counts: Sequence[int],
    first_ms: Sequence[int],
    last_ms: Sequence[int],
    floats: np.ndarray[Any, Any],
    texts: Sequence[Sequence[str]],
    seq_first: Sequence[int],
    seq_last: Sequence[int],
    repaired: Sequence[int],
) -> bytes:
    """The rows (column order of ``MINUTE_COLUMNS``; ``floats`` has one row per meter and the numeric
    columns in ``STAT_COLUMNS`` order, as float64 (each encoded as its column's type), ``texts`` the
    text ones; ``seq_first`` / ``seq_last`` -1 when the minute has no ``seq``), without signature or
    trailer."""
    n = len(meter_ids)
    if not n:
        return b""
    assert floats.shape == (n, N_FLOATS)
    fields = np.empty(n, dtype=_FIELD)
    for k, (sql_type, code) in enumerate(_GROUPS.items()):
        lo, hi = _BOUNDS[k], _BOUNDS[k + 1]
        if hi == lo:
            continue
        group = fields[f"g{k}"]
        group["length"] = np.dtype(code).itemsize
        part = floats[:, lo:hi]
        bounds = _INTEGER_BOUNDS.get(sql_type)
        group["value"] = part if bounds is None else _integers(part, bounds)
    block = fields.tobytes()
    width = _FIELD.itemsize
    n_columns = len(MINUTE_COLUMNS)
    out: list[bytes] = []
    for i in range(n):
        meter = meter_ids[i].encode()
        out.append(_HEAD.pack(n_columns, len(meter)))
        out.append(meter)
        out.append(
            _KEYS.pack(
                8,
                (minute_ms[i] - _PG_EPOCH_MS) * 1000,
                2,
                min(counts[i], 32_767),
                4,
                first_ms[i] - minute_ms[i],
                4,
                last_ms[i] - minute_ms[i],
            )
        )
        out.append(block[i * width : (i + 1) * width])
        for text in texts[i]:
            raw = text.encode()
            out.append(_LEN.pack(len(raw)))
            out.append(raw)
        count = min(repaired[i], 32_767)
        first, span = seq_columns(seq_first[i], seq_last[i])
        if first is None:
            out.append(_NO_SEQS.pack(_NULL, _NULL, 2, count))
        elif span is None:
            out.append(_NO_SPAN.pack(8, first, _NULL, 2, count))
        else:
            out.append(_SEQS.pack(8, first, 4, span, 2, count))
    return b"".join(out)
