"""Compact snapshots read in bulk: a batch of members into arrays, with no Python loop per value.

For the aggregator's hot path (:mod:`enerlink.aggregator.batch`): the slots of every member are laid end to
end and read with one vectorized varint pass (:func:`enerlink.schemas.snapshot_numbers.read_leb128`); the
numbers become float64 columns, exactly the floats :func:`enerlink.schemas.snapshot.decode_snapshot` gives.
A member whose layout is not the one expected (another version, cut short) makes :func:`read` return
None: the caller then reads the batch one member at a time, which says which one and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from enerlink.schemas import snapshot_layout as L
from enerlink.schemas import snapshot_numbers as N

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Columns:
    """Row ``i`` is member ``i``."""

    meters: list[bytes]  # the meterId in the head (b"": none)
    has_rest: npt.NDArray[np.bool_]  # fields without a slot (read those members one by one)
    flags: I64
    numbers: npt.NDArray[np.float64]  # (n, NUMBER_SLOTS), copies resolved; 0.0 where absent
    absent: npt.NDArray[np.bool_]  # (n, NUMBER_SLOTS)
    bools: npt.NDArray[np.float64]  # (n, BOOL_SLOTS) as 0/1
    bools_missing: I64
    enums: I64  # (n, ENUM_SLOTS): 0 = none, else 1 + index in ENUM_VALUES
    seq: I64  # -1: none
    style: I64  # 0: the datetime has no slot
    at_ms: I64  # as ``int(datetime.timestamp() * 1000)`` of the message's datetime
    t: npt.NDArray[
        np.uint64
    ]  # the datetime slot as stored (for :func:`enerlink.schemas.snapshot_general.datetime_of`)


_UNITS = np.array([unit for _, unit in L.PRECISIONS], dtype=np.int64)


def read(members: Sequence[bytes]) -> Columns | None:
    """The columns of compact members (every one starting with the version byte), or None."""
    n = len(members)
    if not n:
        return None
    meters: list[bytes] = []
    slot_parts: list[bytes] = []
    rest_sizes: list[int] = []
    try:
        for member in members:
            if member[0] != L.VERSION:
                return None
            a = L.HEAD + member[1]
            rest = (member[2] << 8) | member[3]
            meters.append(member[L.HEAD : a])
            slot_parts.append(member[a + rest :])
            rest_sizes.append(rest)
    except IndexError:
        return None
    per_member = np.fromiter(map(len, slot_parts), dtype=np.int64, count=n)
    slots = N.read_leb128(b"".join(slot_parts), per_member=per_member, count=L.SLOT_COUNT)
    if slots is None:
        return None
    codes = slots[:, L.NUMBERS : L.BOOL_VALUES].copy()
    N.resolve_copies(codes)
    numbers, absent = N.number_values(codes)
    bool_values = slots[:, L.BOOL_VALUES].astype(np.int64)
    bools = ((bool_values[:, None] >> np.arange(len(L.BOOL_SLOTS))) & 1).astype(np.float64)
    style = slots[:, L.STYLE].astype(np.int64)
    precision = np.where(style > 0, (style - 1) & 3, 0)
    if (precision > 2).any():
        return None
    z = slots[:, L.T]
    t = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
    micros = t * (1_000_000 // _UNITS[precision])
    at_ms = ((micros / 1e6) * 1000).astype(np.int64)  # as datetime.timestamp() * 1000, truncated
    seq_slot = slots[:, L.SEQ].astype(np.int64)
    return Columns(
        meters=meters,
        has_rest=np.array(rest_sizes) > 0,
        flags=slots[:, L.FLAGS].astype(np.int64),
        numbers=numbers,
        absent=absent,
        bools=bools,
        bools_missing=slots[:, L.BOOL_MISSING].astype(np.int64),
        enums=slots[:, L.ENUMS : L.ENUMS + len(L.ENUM_SLOTS)].astype(np.int64),
        seq=np.where(seq_slot > 0, seq_slot - 1, -1),
        style=style,
        at_ms=at_ms,
        t=z,
    )
