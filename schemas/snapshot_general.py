"""The compact snapshot in plain Python: any message, every field (:mod:`enerlink.schemas.snapshot` is the
entry).

:func:`encode_general` writes a member for any JSON object (what has no slot goes to the rest);
:func:`decode_message` reads one back. The layout is in :mod:`enerlink.schemas.snapshot_layout`.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np

from enerlink.schemas import snapshot_layout as L
from enerlink.schemas import snapshot_numbers as N
from enerlink.schemas.telemetry import DATA_UNITS

_REST_ENCODE = msgspec.msgpack.Encoder(order="sorted").encode
_REST_DECODE = msgspec.msgpack.Decoder().decode
_VERSION_BYTE = bytes([L.VERSION])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMBERS_BY_SUB: dict[str, list[tuple[int, str]]] = {}
for _i, (_sub, _name) in enumerate(L.NUMBER_SLOTS):
    _NUMBERS_BY_SUB.setdefault(_sub, []).append((_i, _name))
_BOOLS_BY_SUB: dict[str, list[tuple[int, str]]] = {}
for _i, (_sub, _name) in enumerate(L.BOOL_SLOTS):
    _BOOLS_BY_SUB.setdefault(_sub, []).append((_i, _name))
_ENUMS_BY_SUB: dict[str, list[tuple[int, str, tuple[str, ...]]]] = {}
for _i, (_sub, _name) in enumerate(L.ENUM_SLOTS):
    _ENUMS_BY_SUB.setdefault(_sub, []).append((_i, _name, L.ENUM_VALUES[_i]))
SLOTTED: dict[str, frozenset[str]] = {
    sub: frozenset(
        [n for _, n in _NUMBERS_BY_SUB.get(sub, [])]
        + [n for _, n in _BOOLS_BY_SUB.get(sub, [])]
        + [n for _, n, _ in _ENUMS_BY_SUB.get(sub, [])]
        + (["alerts"] if sub == "battery" else [])
    )
    for sub in L.SUBSYSTEMS
}
_TOP = frozenset(("meterId", "datetime", "seq", "units", "data"))


class SnapshotError(ValueError):
    """A stored member that is not a snapshot this code can read."""


def split(member: bytes) -> tuple[bytes, bytes, bytes]:
    """(meterId, rest, slots) bytes of a compact member."""
    if len(member) < L.HEAD or member[0] != L.VERSION:
        raise SnapshotError("not a compact snapshot of a known version")
    n_meter, n_rest = member[1], int.from_bytes(member[2:4], "big")
    a = L.HEAD + n_meter
    b = a + n_rest
    if b > len(member):
        raise SnapshotError("compact snapshot cut short")
    return member[L.HEAD : a], member[a:b], member[b:]


def varints(data: bytes) -> list[int]:
    out: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            out.append(value)
            value = shift = 0
        else:
            shift += 7
    if shift:
        raise SnapshotError("varint cut short")
    return out


def decode_message(member: bytes) -> dict[str, Any]:
    """The data message of a compact member, as a dict."""
    try:
        meter, rest, slots = split(member)
        values = varints(slots)
        if len(values) != L.SLOT_COUNT:
            raise SnapshotError(f"{len(values)} slots, expected {L.SLOT_COUNT}")
        return _build(meter, rest, values)
    except SnapshotError:
        raise
    except (ValueError, IndexError, msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"corrupt compact snapshot: {exc}") from exc


@functools.lru_cache(maxsize=4096)  # a fleet's messages of one moment share their datetime
def _datetime_slots(text: str) -> tuple[int, int]:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return 0, 0
    offset = moment.utcoffset()
    if offset is None or offset % timedelta(minutes=1):
        return 0, 0
    zulu = text.endswith("Z")
    digits = len(text) - 20 - (1 if zulu else 6) if len(text) > 19 and text[19] == "." else 0
    precision = {0: 0, 3: 1, 6: 2}.get(digits)
    if precision is None:
        return 0, 0
    spec, unit = L.PRECISIONS[precision]
    written = moment.isoformat(timespec=spec)
    if zulu:
        written = written.removesuffix("+00:00") + "Z"
    if written != text:
        return 0, 0
    minutes = int(offset.total_seconds()) // 60
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    t = micros // (1_000_000 // unit)
    style = 1 + ((zigzag(minutes) << 3) | (int(zulu) << 2) | precision)
    return style, zigzag(t)


@functools.lru_cache(maxsize=4096)  # the whole seconds of a fleet's messages of one moment
def _utc_seconds(text: str) -> int | None:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` written back identically (as a naive datetime); None
    otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None or moment.isoformat() != text:
        return None
    return (moment.replace(tzinfo=UTC) - _EPOCH) // timedelta(seconds=1)


#: length of a UTC datetime written with ``Z`` -> (digits of the fraction, units per second, style):
#: ``YYYY-MM-DDTHH:MM:SSZ``, then with ``.mmm``, then with ``.uuuuuu``; style 1 + (Z << 2 | precision)
_ZULU_LENGTHS = {20: (0, 1, 5), 24: (3, 1_000, 6), 27: (6, 1_000_000, 7)}


def datetime_slots(text: Any) -> tuple[int, int]:
    """(style, t) of a datetime string that is written back identically; (0, 0) otherwise."""
    if type(text) is not str:
        return 0, 0
    # the usual form, UTC with Z (the seconds cached, the fraction read here: a fleet's messages rarely
    # share their milliseconds); the same slots as _datetime_slots gives it, anything else goes there
    form = _ZULU_LENGTHS.get(len(text))
    if form is not None and text[-1] == "Z":
        digits, unit, style = form
        fraction = text[20:-1]
        if (not digits or (text[19] == "." and fraction.isascii() and fraction.isdigit())) and (
            seconds := _utc_seconds(text[:19])
        ) is not None:
            t = seconds * unit + (int(fraction) if digits else 0)
            return style, (t << 1) if t >= 0 else ((-t << 1) - 1)  # zigzag(t)
    return _datetime_slots(text)


def zigzag(n: int) -> int:
    return (n << 1) if n >= 0 else ((-n << 1) - 1)


def unzigzag(z: int) -> int:
    return (z >> 1) if not z & 1 else -((z + 1) >> 1)


def encode_general(msg: dict[str, Any]) -> bytes | None:
    rest: dict[str, Any] = {}
    slots = [0] * L.SLOT_COUNT
    flags = 0
    for key, value in msg.items():
        if key not in _TOP:
            rest[key] = value
    meter = msg.get("meterId")
    meter_bytes = b""
    if type(meter) is str and len(meter_bytes := meter.encode()) <= 255:
        flags |= L.FLAG_METER
    elif "meterId" in msg:
        rest["meterId"], meter_bytes = meter, b""
    if "datetime" in msg:
        style, t = datetime_slots(msg["datetime"])
        if style:
            slots[L.STYLE], slots[L.T] = style, t
        else:
            rest["datetime"] = msg["datetime"]
    if "seq" in msg:
        seq = msg["seq"]
        if type(seq) is int and 0 <= seq < L.MAX_MANTISSA:
            slots[L.SEQ] = seq + 1
        else:
            rest["seq"] = seq
    if "units" in msg:
        if msg["units"] == DATA_UNITS:
            flags |= L.FLAG_UNITS
        else:
            rest["units"] = msg["units"]
    numbers: list[Any] = [None] * len(L.NUMBER_SLOTS)
    bool_missing = (1 << len(L.BOOL_SLOTS)) - 1
    bool_values = 0
    placed: list[tuple[int, str, str]] = []
    data = msg.get("data")
    if type(data) is dict:
        flags |= L.FLAG_DATA
        data_rest: dict[str, Any] = {}
        for sub, section in data.items():
            k = _SUB_INDEX.get(sub)
            if k is None or type(section) is not dict:
                data_rest[sub] = section
                continue
            flags |= L.FLAG_SUB0 << k
            sub_rest = {name: v for name, v in section.items() if name not in SLOTTED[sub]}
            for i, name in _NUMBERS_BY_SUB.get(sub, ()):
                if name in section:
                    numbers[i] = section[name]
                    placed.append((i, sub, name))
            for i, name in _BOOLS_BY_SUB.get(sub, ()):
                if name in section:
                    v = section[name]
                    if type(v) is bool:
                        bool_missing &= ~(1 << i)
                        bool_values |= int(v) << i
                    else:
                        sub_rest[name] = v
            for i, name, allowed in _ENUMS_BY_SUB.get(sub, ()):
                if name in section:
                    v = section[name]
                    if type(v) is str and v in allowed:
                        slots[L.ENUMS + i] = allowed.index(v) + 1
                    else:
                        sub_rest[name] = v
            if sub == "battery" and "alerts" in section:
                alerts = alerts_slot(section["alerts"])
                if alerts:
                    slots[L.ALERT_SLOT] = alerts
                else:
                    sub_rest["alerts"] = section["alerts"]
            if sub_rest:
                data_rest[sub] = sub_rest
        if data_rest:
            rest["data"] = data_rest
    elif "data" in msg:
        rest["data"] = data
    codes = N.number_codes(numbers)
    for i, sub, name in placed:
        if codes[i] == L.ABSENT:  # no exact slot form: kept as it is in the rest
            rest.setdefault("data", {}).setdefault(sub, {})[name] = numbers[i]
    for slot, source in L.COPIES.items():
        if codes[slot] != L.ABSENT and codes[slot] == codes[source]:
            codes[slot] = L.COPY
    slots[L.FLAGS] = flags
    slots[L.BOOL_VALUES], slots[L.BOOL_MISSING] = bool_values, bool_missing
    everything = np.array(slots, dtype=np.uint64)
    everything[L.NUMBERS : L.BOOL_VALUES] = codes
    rest_bytes = _REST_ENCODE(rest) if rest else b""
    if len(rest_bytes) > L.MAX_REST:
        return None  # stored as received
    head = bytes((L.VERSION, len(meter_bytes))) + len(rest_bytes).to_bytes(2, "big")
    return head + meter_bytes + rest_bytes + N.leb128(everything)


_SUB_INDEX = {sub: k for k, sub in enumerate(L.SUBSYSTEMS)}


def alerts_slot(value: Any) -> int:
    """1 + bitmask of a list of known alerts in canonical order; 0 if it has no slot form."""
    if type(value) is not list:
        return 0
    mask = 0
    last = -1
    for alert in value:
        if type(alert) is not str or alert not in L.ALERTS:
            return 0
        k = L.ALERTS.index(alert)
        if k <= last:
            return 0
        mask |= 1 << k
        last = k
    return mask + 1


_TZ_CACHE: dict[int, timezone] = {}


def datetime_text(style: int, t: int) -> str:
    """The datetime string of a (style, t) slot pair."""
    moment, zulu, precision = datetime_of(style, t)
    written = moment.isoformat(timespec=L.PRECISIONS[precision][0])
    return written.removesuffix("+00:00") + "Z" if zulu else written


def datetime_of(style: int, t: int) -> tuple[datetime, bool, int]:
    """(aware datetime, written with Z, precision index) of a (style, t) slot pair."""
    code = style - 1
    precision, zulu, minutes = code & 3, bool(code & 4), unzigzag(code >> 3)
    if precision > 2:
        raise SnapshotError(f"unknown datetime style {style}")
    tz = _TZ_CACHE.get(minutes)
    if tz is None:
        tz = _TZ_CACHE[minutes] = UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
    micros = unzigzag(t) * (1_000_000 // L.PRECISIONS[precision][1])
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(tz), zulu, precision


def number_value(code_value: int) -> int | float:
    """The JSON number of a number slot's code (see :mod:`enerlink.schemas.snapshot_numbers`)."""
    code = code_value & 15
    m = unzigzag(code_value >> 4)
    if code == 0:
        return m
    return m / int(10 ** (code - 1))  # int / int: correctly rounded, as the float64 division of the bulk path


def _build(meter: bytes, rest_bytes: bytes, s: list[int]) -> dict[str, Any]:
    flags = s[L.FLAGS]
    msg: dict[str, Any] = {}
    if flags & L.FLAG_METER:
        msg["meterId"] = meter.decode()
    if s[L.STYLE]:
        msg["datetime"] = datetime_text(s[L.STYLE], s[L.T])
    if flags & L.FLAG_UNITS:
        msg["units"] = dict(DATA_UNITS)
    if s[L.SEQ]:
        msg["seq"] = s[L.SEQ] - 1
    if flags & L.FLAG_DATA:
        numbers = s[L.NUMBERS : L.BOOL_VALUES]
        for slot, source in L.COPIES.items():
            if numbers[slot] == L.COPY:
                numbers[slot] = numbers[source]
        data: dict[str, Any] = {}
        for k, sub in enumerate(L.SUBSYSTEMS):
            if not flags & (L.FLAG_SUB0 << k):
                continue
            section: dict[str, Any] = {}
            for i, name in _NUMBERS_BY_SUB.get(sub, ()):
                if numbers[i] != L.ABSENT:
                    section[name] = number_value(numbers[i])
            for i, name in _BOOLS_BY_SUB.get(sub, ()):
                if not s[L.BOOL_MISSING] >> i & 1:
                    section[name] = bool(s[L.BOOL_VALUES] >> i & 1)
            for i, name, allowed in _ENUMS_BY_SUB.get(sub, ()):
                if s[L.ENUMS + i]:
                    section[name] = allowed[s[L.ENUMS + i] - 1]
            if sub == "battery" and s[L.ALERT_SLOT]:
                mask = s[L.ALERT_SLOT] - 1
                section["alerts"] = [a for k2, a in enumerate(L.ALERTS) if mask >> k2 & 1]
            data[sub] = section
        msg["data"] = data
    if rest_bytes:
        _merge(msg, _REST_DECODE(rest_bytes))
    return msg


def _merge(msg: dict[str, Any], rest: Any) -> None:
    if type(rest) is not dict:
        raise SnapshotError("the rest of a compact snapshot is not a map")
    for key, value in rest.items():
        here = msg.get(key)
        if key == "data" and type(here) is dict and type(value) is dict:
            for sub, section in value.items():
                known = here.get(sub)
                if type(known) is dict and type(section) is dict:
                    known.update(section)
                else:
                    here[sub] = section
        else:
            msg[key] = value
