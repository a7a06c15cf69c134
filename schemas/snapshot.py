"""How a data reading is kept as a member of its meter's sorted sets in Redis (the stored snapshot).

Two functions are the whole contract; everything that writes or reads a stored snapshot goes through
them (the aggregator's bulk decoder, :mod:`enerlink.schemas.snapshot_bulk`, reads the same layout):

* :func:`encode_snapshot` turns a data message as received (JSON bytes) into the member that is
  stored. It is deterministic: the same message always gives the same member, so a redelivered or
  re-sent reading lands on the member already there and is not stored twice.
* :func:`decode_snapshot` gives back the message as JSON bytes: the same fields with the same numbers
  (extra fields the firmware sends are kept; key order is not).

The member is compact (about 200 bytes instead of 1.7 KB; layout in :mod:`enerlink.schemas.snapshot_layout`):
a version byte, the meterId, the fields of the contract in a fixed order as varints (each number as
the shortest decimal that parses back to the same float: an integer mantissa and its decimals; bools
as bits, enums as indexes, the datetime as epoch time and its written form) and, for whatever has no
slot (extra fields, a value of an unexpected type or that does not fit), a MessagePack map. A member
stored before (the JSON message, starting with ``{``) decodes as itself.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from enerlink.schemas import snapshot_layout as L
from enerlink.schemas import snapshot_numbers as N
from enerlink.schemas.snapshot_general import (
    SLOTTED,
    SnapshotError,
    alerts_slot,
    datetime_slots,
    decode_message,
    encode_general,
)
from enerlink.schemas.telemetry import DATA_UNITS

__all__ = [
    "SnapshotError",
    "decode_message",
    "decode_snapshot",
    "encode_snapshot",
    "encode_snapshots",
    "is_compact",
]

_VERSION_BYTE = bytes([L.VERSION])


def is_compact(member: bytes) -> bool:
    """True for a compact member, False for one stored as the JSON message."""
    return member[:1] == _VERSION_BYTE


def encode_snapshot(payload: bytes) -> bytes:
    """The stored member of a data message (JSON bytes as received)."""
    return encode_snapshots([payload])[0]


def encode_snapshots(payloads: Sequence[bytes]) -> list[bytes]:
    """The stored members of a batch of data messages: the numbers of all of them are coded in one
    numpy pass (what the ingest does with each batch it writes). A payload orjson cannot read is kept
    as received (it decodes as itself); one that is JSON but not an object raises ``ValueError``."""
    out: list[bytes | None] = [None] * len(payloads)
    complete: list[tuple[int, _Complete]] = []
    for i, payload in enumerate(payloads):
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:  # JSON orjson does not take (a lone surrogate): as received
            out[i] = payload
            continue
        if type(msg) is not dict:
            raise ValueError("a data message is a JSON object")
        found = _complete(msg)
        if found is None:
            out[i] = _general(msg, payload)
        else:
            complete.append((i, found))
    if complete:
        for (i, _), member in zip(complete, _encode_complete([c for _, c in complete]), strict=True):
            out[i] = member if member is not None else _general(orjson.loads(payloads[i]), payloads[i])
    return [member if member is not None else b"" for member in out]


def _general(msg: dict[str, Any], payload: bytes) -> bytes:
    member = encode_general(msg)
    if member is None or len(member) > len(payload):  # mostly fields without a slot: as received
        return payload
    return member


def decode_snapshot(member: bytes) -> bytes:
    """The data message (JSON bytes) of a stored member; raises :class:`SnapshotError` if corrupt."""
    if not is_compact(member):
        return member  # stored as received, before the compact form
    return orjson.dumps(decode_message(member))


def _section_getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = operator.itemgetter(*names)
    return (lambda d: (get(d),)) if len(names) == 1 else get


def _complete_layout() -> tuple[list[tuple[str, Any, int]], list[int], list[int], list[int]]:
    """Per subsystem (name, getter of its slotted fields, how many), and where the number, bool and
    enum slots land in the getters' values laid end to end."""
    subs: list[tuple[str, Any, int]] = []
    flat: list[tuple[str, str]] = []
    required = set(L.NUMBER_SLOTS[: L.N_REQUIRED_NUMBERS]) | set(L.BOOL_SLOTS) | set(L.ENUM_SLOTS)
    for sub in L.SUBSYSTEMS:
        names = [
            n for s, n in (*L.NUMBER_SLOTS, *L.BOOL_SLOTS, *L.ENUM_SLOTS) if s == sub and (s, n) in required
        ]
        subs.append((sub, _section_getter(names), len(names)))
        flat += [(sub, n) for n in names]
    return (
        subs,
        [flat.index(p) for p in L.NUMBER_SLOTS[: L.N_REQUIRED_NUMBERS]],
        [flat.index(p) for p in L.BOOL_SLOTS],
        [flat.index(p) for p in L.ENUM_SLOTS],
    )


_SUBS, _NUM_AT, _BOOL_AT, _ENUM_AT = _complete_layout()
_PICK_NUMBERS, _PICK_BOOLS, _PICK_ENUMS = (operator.itemgetter(*x) for x in (_NUM_AT, _BOOL_AT, _ENUM_AT))
_OPTIONAL_NAMES = [name for _, name in L.OPTIONAL_NUMBERS]
_BATTERY_EXTRAS = frozenset((*_OPTIONAL_NAMES, "alerts"))
_BOOL_TYPE = {bool}
_STR_TYPE = {str}
_BOOL_BITS = [1 << i for i in range(len(L.BOOL_SLOTS))]
_COPY_SLOTS, _COPY_SOURCES = list(L.COPIES), list(L.COPIES.values())
_OPTIONAL_ZEROS = [0] * len(_OPTIONAL_NAMES)
_ENUM_INDEX: tuple[dict[str, int], ...] = tuple({v: k + 1 for k, v in enumerate(a)} for a in L.ENUM_VALUES)


class _Complete(NamedTuple):
    head: bytes  # version, len(meterId), no rest, meterId
    first: tuple[int, int, int, int]  # flags, style, t, seq
    numbers: list[Any]  # every number slot's value (None: not in the message)
    optional: tuple[bool, ...]  # which optional numbers the message has
    last: list[int]  # bool values, bools missing, enums, alerts


def _complete(msg: dict[str, Any]) -> _Complete | None:
    """The slots of a message with every field in its slot and nothing else (the common case), one
    ``itemgetter`` per section instead of a look-up per field; None for any other message
    (:func:`encode_general` then gives the member)."""
    try:
        if len(msg) != 5 - ("seq" not in msg) or msg["units"] != DATA_UNITS:
            return None
        meter, data = msg["meterId"], msg["data"]
        if type(meter) is not str or type(data) is not dict or len(data) != len(_SUBS):
            return None
        flat: list[Any] = []
        for sub, get, count in _SUBS:
            section = data[sub]
            flat += get(section)
            if len(section) != count and (
                sub != "battery" or not _BATTERY_EXTRAS.issuperset(section.keys() - SLOTTED[sub])
            ):
                return None
    except (KeyError, TypeError, AttributeError):
        return None
    meter_bytes = meter.encode()
    style, t = datetime_slots(msg["datetime"])
    seq = msg.get("seq", 0)
    if len(meter_bytes) > 255 or not style or type(seq) is not int or not 0 <= seq < L.MAX_MANTISSA:
        return None
    bools = _PICK_BOOLS(flat)
    if set(map(type, bools)) != _BOOL_TYPE:
        return None
    picked = _PICK_ENUMS(flat)
    if set(map(type, picked)) != _STR_TYPE:
        return None  # a list or an object where an enum is expected: the general path keeps it
    enums = list(map(dict.get, _ENUM_INDEX, picked))
    if None in enums:
        return None
    battery = data["battery"]
    alerts = 0
    if "alerts" in battery:
        alerts = alerts_slot(battery["alerts"])
        if not alerts:
            return None
    # a value that is not a JSON number is coded ABSENT by number_codes, which sends the message to the
    # general path (_encode_complete): checked there for the whole batch at once, not here
    numbers = [*_PICK_NUMBERS(flat), *map(battery.get, _OPTIONAL_NAMES, _OPTIONAL_ZEROS)]
    return _Complete(
        bytes((L.VERSION, len(meter_bytes), 0, 0)) + meter_bytes,
        (L.FULL_FLAGS, style, t, seq + 1 if "seq" in msg else 0),
        numbers,
        tuple(map(battery.__contains__, _OPTIONAL_NAMES)),
        [sum(map(operator.mul, bools, _BOOL_BITS)), 0, *enums, alerts],  # type: ignore[list-item]
    )


def _encode_complete(found: list[_Complete]) -> list[bytes | None]:
    """The members of complete messages; None for one with a number that has no slot form."""
    n = len(found)
    codes = N.number_codes([x for c in found for x in c.numbers]).reshape(n, len(L.NUMBER_SLOTS))
    optional = np.array([c.optional for c in found], dtype=bool).reshape(n, len(_OPTIONAL_NAMES))
    unfit = (codes == L.ABSENT).any(axis=1)
    codes[:, L.N_REQUIRED_NUMBERS :][~optional] = L.ABSENT  # not in the message (coded as 0 above)
    copies = codes[:, _COPY_SLOTS]
    codes[:, _COPY_SLOTS] = np.where(copies == codes[:, _COPY_SOURCES], np.uint64(L.COPY), copies)
    slots = np.empty((n, L.SLOT_COUNT), dtype=np.uint64)
    slots[:, : L.NUMBERS] = [c.first for c in found]
    slots[:, L.NUMBERS : L.BOOL_VALUES] = codes
    slots[:, L.BOOL_VALUES :] = [c.last for c in found]
    data, sizes = N.leb128_sized(slots.reshape(-1))
    ends = np.cumsum(sizes.reshape(n, L.SLOT_COUNT).sum(axis=1)).tolist()
    starts = [0, *ends[:-1]]
    unfit_rows = unfit.tolist()
    return [
        None if bad else c.head + data[a:b]
        for c, a, b, bad in zip(found, starts, ends, unfit_rows, strict=True)
    ]
