"""The compact snapshot's numbers and varints, a whole array at a time (numpy, no Python loop per value).

A number is kept as the decimal ``m * 10**-d`` with the fewest decimals ``d`` (at most
:data:`enerlink.schemas.snapshot_layout.MAX_DECIMALS`) whose value, ``m / 10**d`` rounded to the nearest float
(what a JSON parser does with the decimal, and what float64 division of the exact ``m`` and ``10**d``
gives), is the number itself; ``|m| < 2**53`` so that ``m`` is exact as a float64. A number with no
such form (``-0.0``, ``1e-300``, ``0.1 + 0.2``) has no slot and is kept in the rest.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from enerlink.schemas import snapshot_layout as L

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

#: 10**d as exact float64 values (exact up to 10**22).
POW10: F64 = np.array([float(10**d) for d in range(L.MAX_DECIMALS + 1)])
_POW10_LIST = [np.float64(p) for p in POW10]
_NUMBER_TYPES = frozenset((float, int))
_LIMIT = float(L.MAX_MANTISSA)
_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_SEVEN = np.uint64(7)
_FOUR = np.uint64(4)
_LOW7 = np.uint64(0x7F)


def number_codes(raw: list[Any]) -> U64:
    """``zigzag(m) << 4 | code`` of each value of ``raw`` (JSON numbers, or anything else: ABSENT).

    The decimals are tried in turn, each on the values not yet placed (most readings have a few
    decimals: a handful of passes over a shrinking array instead of all of them over every value)."""
    n = len(raw)
    kinds = list(map(type, raw))
    is_int = np.fromiter(map(operator.is_, kinds, itertools.repeat(int)), dtype=bool, count=n)
    if _NUMBER_TYPES.issuperset(kinds):
        usable = np.ones(n, dtype=bool)
        v = np.array(raw, dtype=np.float64)
    else:
        is_float = np.fromiter(map(operator.is_, kinds, itertools.repeat(float)), dtype=bool, count=n)
        usable = is_float | is_int
        v = np.array([x if u else 0.0 for x, u in zip(raw, usable.tolist(), strict=True)], dtype=np.float64)
    decimals = np.zeros(n, dtype=np.int64)
    scaled_at = np.zeros(n, dtype=np.float64)
    found = np.zeros(n, dtype=bool)
    pending = np.arange(n)
    rest = v
    with np.errstate(over="ignore", invalid="ignore"):  # huge values: inf, no slot form
        for d, p in enumerate(_POW10_LIST):
            scaled = np.rint(p * rest)
            ok = (scaled / p == rest) & (np.abs(scaled) < _LIMIT)
            if ok.any():
                placed = pending[ok]
                decimals[placed] = d
                scaled_at[placed] = scaled[ok]
                found[placed] = True
                missing = ~ok
                pending, rest = pending[missing], rest[missing]
                if not len(pending):
                    break
    good = found & usable & ~(np.signbit(v) & (v == 0.0)) & ~(is_int & (decimals != 0))
    m = np.where(good, scaled_at, 0.0).astype(np.int64)
    zigzag = ((m << 1) ^ (m >> 63)).astype(np.uint64)
    code = np.where(is_int, 0, decimals + 1).astype(np.uint64)
    return np.where(good, (zigzag << _FOUR) | code, np.uint64(L.ABSENT))


def leb128(values: U64) -> bytes:
    """Unsigned LEB128 varints of ``values``, end to end."""
    return leb128_sized(values)[0]


def leb128_sized(values: U64) -> tuple[bytes, npt.NDArray[np.int64]]:
    """Unsigned LEB128 varints of ``values``, end to end, and how many bytes each took."""
    sizes = np.searchsorted(_THRESHOLDS, values, side="right") + 1
    ends = np.cumsum(sizes)
    owner = np.repeat(np.arange(len(values)), sizes)
    position = np.arange(int(ends[-1])) - np.repeat(ends - sizes, sizes)
    out = (values[owner] >> (_SEVEN * position.astype(np.uint64))) & _LOW7
    out |= (position < sizes[owner] - 1).astype(np.uint64) << _SEVEN
    return out.astype(np.uint8).tobytes(), sizes


def read_leb128(data: bytes, *, per_member: npt.NDArray[np.int64], count: int) -> U64 | None:
    """``count`` varints from each member's slots laid end to end in ``data`` (member ``i`` has
    ``per_member[i]`` bytes), as an (n, count) array; None if a member does not hold exactly
    ``count`` varints of at most 64 bits."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if not len(buf):
        return None
    last = buf < 0x80
    member_starts = np.cumsum(per_member) - per_member
    if (per_member <= 0).any() or not last[-1]:
        return None
    if (np.add.reduceat(last, member_starts) != count).any():
        return None
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if (ends - starts >= 10).any():
        return None
    group: npt.NDArray[np.int64] = np.cumsum(last) - last
    position = (np.arange(len(buf)) - starts[group]).astype(np.uint64)
    parts = (buf & 0x7F).astype(np.uint64) << (_SEVEN * position)
    values: U64 = np.bitwise_or.reduceat(parts, starts)
    return values.reshape(len(per_member), count)


def number_values(codes: U64) -> tuple[F64, npt.NDArray[np.bool_]]:
    """The float64 values of number slots (copies already resolved) and where a slot is empty."""
    code = (codes & np.uint64(15)).astype(np.int64)
    zigzag = codes >> _FOUR
    m = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
    absent = code >= L.ABSENT
    scale = POW10[np.clip(code - 1, 0, L.MAX_DECIMALS)]
    return np.where(absent, 0.0, m / scale), absent


def resolve_copies(codes: U64) -> None:
    """Replace COPY codes (in place, an (n, slots) array) by their source slot's code."""
    for slot, source in L.COPIES.items():
        column = codes[:, slot]
        copied = column == L.COPY
        if copied.any():
            column[copied] = codes[copied, source]
