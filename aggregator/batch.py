"""A batch's stored snapshots decoded straight into one float64 matrix (the aggregator's hot path).

:func:`enerlink.aggregator.fastparse.parse` builds a few Python objects per snapshot and the batch keeps
them all until its matrix is built; with 30,000 snapshots a part that cost about 8 us each, twice
the decoding itself, most of it in allocating memory that is never reused. Here the snapshots go
through msgspec a chunk at a time, through C-level ``map``/``itemgetter`` pipelines (no Python frame
per snapshot), and each chunk's values land in the matrix before the next chunk is decoded, so a
chunk's objects are freed and their memory reused: about 4.5 us a snapshot.

Compact snapshots (:mod:`enerlink.schemas.snapshot`, what the ingest stores) take a path of their own: a
chunk's slots are read in one vectorized pass (:mod:`enerlink.schemas.snapshot_bulk`) straight into the
matrix; the few members with fields outside the slots (a failed sensor's extra flags) are read one by
one. Members stored as JSON (before the compact form) take the msgspec path; a chunk that mixes both
(only while an upgrade's data ages out) is read one by one.

Same checks, same results as ``fastparse.parse`` (tested): a chunk that holds a bad snapshot
(not JSON, a wrong type, an unknown enum, another meter's id, a datetime without a timezone, a
field missing) is decoded again one snapshot at a time with ``fastparse.parse``, which says why; the
bad one is flagged and the rest of the chunk kept. Without msgspec every JSON chunk takes that path.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from enerlink.aggregator.fastparse import (
    ENUM_POSITIONS,
    LAYOUT,
    N_NUMERIC,
    PERM,
    TEMPERATURES,
    VALUE_FIELDS,
    BadSnapshot,
    Snap,
    max_temperature,
    parse,
)
from enerlink.schemas import snapshot_bulk
from enerlink.schemas import snapshot_layout as SL
from enerlink.schemas.snapshot import SnapshotError, decode_snapshot, is_compact
from enerlink.schemas.snapshot_general import datetime_of

#: Snapshots decoded at a time: small enough for a chunk's objects to be reused by the next.
CHUNK = 128
WIDTH = len(VALUE_FIELDS)
_N_TEMPS = len(TEMPERATURES)
_NO_TEMPERATURES = (None,) * _N_TEMPS
_TO_VALUE_ORDER = operator.itemgetter(*PERM)  # a Snap's vector (RAW_ORDER) -> VALUE_FIELDS order


class Moments(list[Any]):
    """Each snapshot's datetime (None: unusable); a compact one's is made when first looked at (only
    the snapshots that raise an event are)."""

    def __getitem__(self, i: Any) -> Any:
        value = super().__getitem__(i)
        if type(value) is tuple:
            value = datetime_of(*value)[0]
            self[i] = value
        return value


@dataclass(slots=True)
class Decoded:
    """Row ``i`` is snapshot ``i`` of the batch; where ``ok`` is False it was unusable (``errors``
    says why) and its values are zeros."""

    values: np.ndarray[Any, np.dtype[np.float64]]  # (n, WIDTH), VALUE_FIELDS order, bools as 0/1
    at_ms: np.ndarray[Any, np.dtype[np.int64]]
    ok: np.ndarray[Any, np.dtype[np.bool_]]
    temperature: np.ndarray[Any, np.dtype[np.float64]]  # highest subsystem temperature, NaN: none
    seq: np.ndarray[Any, np.dtype[np.int64]]  # the message's ``seq``; -1: none
    at: Moments = field(default_factory=Moments)  # the message's own offset
    enums: list[tuple[str, ...]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (row, why)


class _Retry(Exception):
    """The chunk holds a snapshot the fast path does not accept: decode it one by one."""


def decode(raws: Sequence[bytes], meter_ids: Sequence[str]) -> Decoded:
    """Decode ``raws[i]``, stored in the series of ``meter_ids[i]``, for every ``i``."""
    n = len(raws)
    out = Decoded(
        values=np.zeros((n, WIDTH)),
        at_ms=np.zeros(n, dtype=np.int64),
        ok=np.ones(n, dtype=bool),
        temperature=np.full(n, np.nan),
        seq=np.full(n, -1, dtype=np.int64),
    )
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        chunk, ids = raws[lo:hi], list(meter_ids[lo:hi])
        compact = sum(map(is_compact, chunk))
        if compact == len(chunk):
            try:
                _compact(out, lo, chunk, ids)
                continue
            except _Retry:
                pass
        elif compact == 0 and _FAST is not None:
            try:
                _FAST(out, lo, chunk, ids)
                continue
            except _Retry:
                pass
        _one_by_one(out, lo, chunk, ids)
    return out


def _one_by_one(out: Decoded, lo: int, raws: Sequence[bytes], meter_ids: Sequence[str]) -> None:
    for i, (raw, meter) in enumerate(zip(raws, meter_ids, strict=True), start=lo):
        snap = _parse_one(out, i, raw, meter)
        out.at.append(None if snap is None else snap.at)
        out.enums.append(() if snap is None else snap.enums)


def _parse_one(out: Decoded, i: int, raw: bytes, meter: str) -> Snap | None:
    """Row ``i`` from the full message (its ``at`` and enums are the caller's); None if unusable."""
    try:
        snap = parse(decode_snapshot(raw), meter)
        seq = None if snap.seq is None else np.int64(snap.seq)  # OverflowError past int64
    except (BadSnapshot, SnapshotError) as exc:
        out.ok[i] = False
        out.errors.append((i, str(exc)))
        return None
    except (ValueError, OverflowError, IndexError, TypeError, KeyError) as exc:  # damaged in Redis
        out.ok[i] = False
        out.errors.append((i, f"unreadable ({type(exc).__name__}: {exc})"))
        return None
    out.values[i] = _TO_VALUE_ORDER(snap.vector)
    out.at_ms[i] = snap.at_ms
    if snap.temperature is not None:
        out.temperature[i] = snap.temperature
    if seq is not None:
        out.seq[i] = seq
    return snap


_ENUM_VALUES = [np.array(values, dtype=object) for values in SL.ENUM_VALUES]
_TEMPERATURE_SLOT = SL.NUMBER_SLOTS.index(("battery", "temperature"))
_BOOL_COLUMNS = [SL.BOOL_SLOTS.index((f.subsystem, f.name)) for f in VALUE_FIELDS[N_NUMERIC:]]
assert [(f.subsystem, f.name) for f in VALUE_FIELDS[:N_NUMERIC]] == list(
    SL.NUMBER_SLOTS[: SL.N_REQUIRED_NUMBERS]
)


def _compact(out: Decoded, lo: int, raws: Sequence[bytes], meter_ids: list[str]) -> None:
    """A chunk of compact members, read in bulk; raises :class:`_Retry` if one is not complete."""
    cols = snapshot_bulk.read(raws)
    if cols is None or cols.meters != [m.encode() for m in meter_ids]:
        raise _Retry
    if (
        ((cols.flags & SL.REQUIRED_FLAGS) != SL.REQUIRED_FLAGS).any()
        or (cols.style == 0).any()
        or cols.absent[:, : SL.N_REQUIRED_NUMBERS].any()
        or cols.bools_missing.any()
        or (cols.enums == 0).any()
        or any((cols.enums[:, k] > len(values)).any() for k, values in enumerate(_ENUM_VALUES))
    ):
        raise _Retry
    n = len(raws)
    out.values[lo : lo + n, :N_NUMERIC] = cols.numbers[:, : SL.N_REQUIRED_NUMBERS]
    out.values[lo : lo + n, N_NUMERIC:] = cols.bools[:, _BOOL_COLUMNS]
    out.at_ms[lo : lo + n] = cols.at_ms
    out.seq[lo : lo + n] = cols.seq
    out.temperature[lo : lo + n] = np.where(
        cols.absent[:, _TEMPERATURE_SLOT], np.nan, cols.numbers[:, _TEMPERATURE_SLOT]
    )
    ats: list[Any] = list(zip(cols.style.tolist(), cols.t.tolist(), strict=True))
    enums = list(zip(*(values[cols.enums[:, k] - 1] for k, values in enumerate(_ENUM_VALUES)), strict=True))
    for i in np.flatnonzero(cols.has_rest).tolist():  # fields outside the slots: read it in full
        out.values[lo + i] = 0.0
        out.temperature[lo + i] = np.nan
        out.seq[lo + i] = -1
        snap = _parse_one(out, lo + i, raws[i], meter_ids[i])
        ats[i], enums[i] = (None, ()) if snap is None else (snap.at, snap.enums)
    out.at.extend(ats)
    out.enums.extend(enums)


def _fast_path() -> Any:
    """The chunk decoder through msgspec, or None without it."""
    if LAYOUT is None:
        return None

    decode_one = LAYOUT.decode
    astuple = msgspec.structs.astuple
    each_astuple = functools.partial(map, astuple)
    concat = itertools.chain.from_iterable
    get_id, get_datetime = operator.attrgetter("meterId"), operator.attrgetter("datetime")
    get_data, get_tz = operator.attrgetter("data"), operator.attrgetter("tzinfo")
    get_seq = operator.attrgetter("seq")
    pick_values = operator.itemgetter(*LAYOUT.positions([(f.subsystem, f.name) for f in VALUE_FIELDS]))
    pick_enums = operator.itemgetter(*LAYOUT.positions(ENUM_POSITIONS))
    pick_temps = operator.itemgetter(*LAYOUT.positions(TEMPERATURES))
    assert len(ENUM_POSITIONS) > 1 and _N_TEMPS > 1  # itemgetter of one index would not return a tuple

    def chunk(out: Decoded, lo: int, raws: Sequence[bytes], meter_ids: list[str]) -> None:
        try:
            msgs = list(map(decode_one, raws))
            ats = list(map(datetime.fromisoformat, map(get_datetime, msgs)))
        except (msgspec.MsgspecError, ValueError) as exc:
            raise _Retry from exc
        if list(map(get_id, msgs)) != meter_ids or None in map(get_tz, ats):
            raise _Retry
        n = len(msgs)
        seconds = np.fromiter(map(datetime.timestamp, ats), dtype=np.float64, count=n)
        out.at_ms[lo : lo + n] = (seconds * 1000).astype(np.int64)  # as int(at.timestamp() * 1000)
        rows = list(map(tuple, map(concat, map(each_astuple, map(astuple, map(get_data, msgs))))))
        flat = np.fromiter(concat(map(pick_values, rows)), dtype=np.float64, count=n * WIDTH)
        out.values[lo : lo + n] = flat.reshape(n, WIDTH)
        seqs = list(map(get_seq, msgs))
        if seqs.count(None) != n:
            out.seq[lo : lo + n] = [-1 if s is None else s for s in seqs]
        out.at.extend(ats)
        out.enums.extend(map(pick_enums, rows))
        temps = list(map(pick_temps, rows))
        if temps.count(_NO_TEMPERATURES) != n:
            for i, candidates in enumerate(temps, start=lo):
                best = max_temperature(candidates)
                if best is not None:
                    out.temperature[i] = best

    return chunk


_FAST = _fast_path()
