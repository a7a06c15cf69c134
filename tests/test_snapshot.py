"""The compact stored snapshot (schemas/snapshot.py): lossless, deterministic, readable in bulk."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enerlink.aggregator import batch
from enerlink.edge.sim.engine import Simulator
from enerlink.edge.sim.fleet import generate
from enerlink.edge.sim.messages import data_messages
from enerlink.schemas import snapshot_layout as L
from enerlink.schemas.snapshot import (
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    encode_snapshots,
    is_compact,
)
from enerlink.schemas.snapshot_general import _datetime_slots, datetime_slots, encode_general
from enerlink.schemas.snapshot_numbers import number_codes
from tests.conftest import load_fixture

FIXTURE = load_fixture("meter-data.json")


def simulated(meters: int = 3, steps: int = 120, *, failed: bool = False) -> list[bytes]:
    """The simulated fleet's data messages, 5 s apart (``failed``: a sensor fails halfway)."""
    sim = Simulator.create(generate(meters, seed=7))
    t0 = dt.datetime(2025, 6, 1, 5, tzinfo=dt.UTC).timestamp()
    sim.step(t0)
    out = []
    for k in range(1, steps + 1):
        if failed and k == steps // 2:
            sim.scenarios.set("sensor_failure", np.array([0]))
        step = sim.step(t0 + k * 5.0)
        out += [orjson.dumps(m) for m in data_messages(sim, step, seqs=[k] * meters)]
    return out


def round_trip(payload: bytes) -> bytes:
    member = encode_snapshot(payload)
    assert orjson.loads(decode_snapshot(member)) == orjson.loads(payload)
    assert encode_snapshot(payload) == member  # deterministic
    return member


def test_the_fixture_round_trips_in_under_200_bytes(data_fixture_bytes: bytes) -> None:
    member = round_trip(data_fixture_bytes)
    assert is_compact(member) and len(member) < 200 < len(data_fixture_bytes)
    assert encode_general(orjson.loads(data_fixture_bytes)) == member  # the fast path, the same bytes


def test_simulated_messages_round_trip_and_batch_equals_one_by_one() -> None:
    payloads = simulated(failed=True)
    members = encode_snapshots(payloads)
    assert members == [round_trip(p) for p in payloads]
    assert max(map(len, members)) < 300  # about 210; a failed sensor adds its two flags in the rest
    failed = [p for p in payloads if b'"connected":false' in p]
    assert failed  # the failed sensor's extra fields are kept
    for p in failed:
        assert orjson.loads(decode_snapshot(encode_snapshot(p))) == orjson.loads(p)


def test_extra_fields_at_every_level_and_odd_values_are_kept() -> None:
    msg: dict[str, Any] = copy.deepcopy(FIXTURE)
    msg["firmware"] = {"version": "2.1.0", "build": 77}
    msg["data"]["battery"]["temperature"] = 31.5
    msg["data"]["battery"]["alerts"] = ["thermal_runaway", "low_soc"]  # not canonical order: rest
    msg["data"]["export"]["connected"] = False
    msg["data"]["import"]["power"] = 0.1 + 0.2  # 17 significant digits
    msg["data"]["load_home"]["current"] = -0.0
    msg["data"]["solar_input"]["power"] = 1e-7
    msg["data"]["net_grid"]["status"] = "charging"  # an enum value newer firmware may send
    msg["data"]["wind"] = {"power": 12.5}
    msg["seq"] = 2**60
    msg["units"]["temperature"] = "C"
    payload = orjson.dumps(msg)
    member = round_trip(payload)
    back = orjson.loads(decode_snapshot(member))
    assert back["data"]["load_home"]["current"] == 0.0 and str(back["data"]["load_home"]["current"]) == "-0.0"
    assert back["data"]["battery"]["alerts"] == ["thermal_runaway", "low_soc"]
    msg["datetime"] = "2025-10-26 04:27:10+07:00"  # not ISO's T: kept verbatim
    del msg["data"]["battery"]
    round_trip(orjson.dumps(msg))


def test_datetimes_keep_their_written_form() -> None:
    for text in (
        "2025-10-26T04:27:10Z",
        "2025-10-26T04:27:10.000Z",
        "2025-10-26T04:27:10.120Z",
        "2025-10-26T04:27:10.123456+00:00",
        "2025-10-26T11:27:10+07:00",
        "2025-10-26T04:27:10-03:30",
        "1969-12-31T23:59:59.999Z",
        "2025-10-26T04:27:10.1Z",
        "2025-10-26T04:27:10+00:00:30",
    ):
        msg = {**FIXTURE, "datetime": text}
        assert orjson.loads(decode_snapshot(round_trip(orjson.dumps(msg))))["datetime"] == text


ODD_DATETIMES = (
    "2025-10-26 04:27:10.123Z",
    "2025-10-26T04:27:10,123Z",
    "2025-10-26T04:27:10.12Z",
    "2025-10-26T04:27:10.1234Z",
    "2025-13-26T04:27:10.123Z",
    "2025-10-26T24:00:00.000Z",
    "2025-10-26T04:27:10.\u0661\u0662\u0663Z",
    "2025-10-26T04:27:10.+12Z",
    "2025-10-26T04:27:10. 12Z",
    "2025-W43-7T04:27:10.123Z",
    "20251026T042710.123000Z",
    "2024-02-29T00:00:00.500Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
)


@given(st.datetimes(timezones=st.just(dt.UTC)), st.sampled_from(("seconds", "milliseconds", "microseconds")))
def test_utc_datetimes_take_the_same_slots_as_any_other(moment: dt.datetime, spec: str) -> None:
    # the usual form (UTC, Z) is read without a datetime parse of its own: the same slots
    text = moment.isoformat(timespec=spec).replace("+00:00", "Z")
    for candidate in (text, *ODD_DATETIMES):
        assert datetime_slots(candidate) == _datetime_slots.__wrapped__(candidate), candidate


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(min_value=-(2**60), max_value=2**60),
            st.decimals(min_value=-(10**9), max_value=10**9, places=6).map(float),
            st.sampled_from((0.0, -0.0, 0.1 + 0.2, 1e22, 2**53, None, "1", True)),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_number_codes_are_the_fewest_decimals_that_read_back(raw: list[Any]) -> None:
    codes = number_codes(raw).tolist()
    for value, code in zip(raw, codes, strict=True):
        expected = L.ABSENT
        if type(value) in (int, float) and not (value == 0 and np.signbit(value)):
            v = np.float64(value)
            for d in range(L.MAX_DECIMALS + 1 if type(value) is float else 1):
                p = np.float64(10**d)
                with np.errstate(over="ignore"):
                    m = np.rint(p * v)
                if m / p == v and abs(m) < L.MAX_MANTISSA:
                    z = (int(m) << 1) ^ (int(m) >> 63)
                    expected = (z << 4) | (d + 1 if type(value) is float else 0)
                    break
        assert code == expected, value


def test_members_stored_before_as_json_still_decode(data_fixture_bytes: bytes) -> None:
    assert not is_compact(data_fixture_bytes)
    assert decode_snapshot(data_fixture_bytes) == data_fixture_bytes
    ids = ["METER001", "METER001"]
    mixed = batch.decode([data_fixture_bytes, encode_snapshot(data_fixture_bytes)], ids)
    assert not mixed.errors and np.array_equal(mixed.values[0], mixed.values[1])


def test_corrupt_compact_members_are_refused_with_a_reason(data_fixture_bytes: bytes) -> None:
    member = encode_snapshot(data_fixture_bytes)
    for bad in (member[:20], member[:-1] + b"\xff", b"\x01", b"\x09" + member[1:]):
        with pytest.raises(SnapshotError):
            orjson.loads(decode_snapshot(bad)) if bad[0] != 9 else _raise_if_json(bad)
    ids = ["METER001"] * 4
    d = batch.decode([member, member[:20], member, member[:-3]], ids)
    assert d.ok.tolist() == [True, False, True, False] and len(d.errors) == 2


def _raise_if_json(member: bytes) -> None:
    """A member of an unknown version is not JSON either: decoding it raises."""
    try:
        orjson.loads(decode_snapshot(member))
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(str(exc)) from exc


def test_the_aggregators_bulk_path_reads_what_the_json_path_reads() -> None:
    payloads = simulated(meters=4, steps=80, failed=True)
    ids = [orjson.loads(p)["meterId"] for p in payloads]
    a, b = batch.decode(payloads, ids), batch.decode(encode_snapshots(payloads), ids)
    assert not a.errors and not b.errors
    assert np.array_equal(a.values, b.values) and np.array_equal(a.at_ms, b.at_ms)
    assert np.array_equal(a.seq, b.seq)
    assert np.array_equal(a.temperature, b.temperature, equal_nan=True)
    assert a.enums == b.enums
    assert [a.at[i] for i in range(len(ids))] == [b.at[i] for i in range(len(ids))]


_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.decimals(min_value=-1e7, max_value=1e7, places=5, allow_nan=False).map(float),
    st.integers(min_value=-(10**9), max_value=10**9).map(lambda n: n / 1000),
)
_SCALARS = st.one_of(_NUMBERS, st.booleans(), st.none(), st.text(max_size=8))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    msg: dict[str, Any] = copy.deepcopy(FIXTURE)
    for sub, section in msg["data"].items():
        for name in list(section):
            choice = draw(st.integers(0, 9))
            if choice < 5:
                value = section[name]
                if isinstance(value, float):
                    section[name] = draw(_NUMBERS)
            elif choice == 5:
                del section[name]
            elif choice == 6:
                section[name] = draw(_JSON)
        if draw(st.booleans()):
            section[draw(st.text(max_size=6))] = draw(_JSON)
        msg["data"][sub] = section
    if draw(st.booleans()):
        msg["seq"] = draw(st.integers(min_value=-5, max_value=2**64 - 1))
    if draw(st.booleans()):
        msg[draw(st.text(max_size=6))] = draw(_JSON)
    return msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_random_messages_round_trip_deterministically(msg: dict[str, Any]) -> None:
    payload = orjson.dumps(msg)
    member = encode_snapshot(payload)
    assert orjson.loads(decode_snapshot(member)) == orjson.loads(payload)
    assert encode_snapshots([payload, payload]) == [member, member]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=4))
def test_random_messages_read_by_the_aggregator_as_from_json(msgs: list[dict[str, Any]]) -> None:
    payloads = [orjson.dumps(m) for m in msgs]
    members = encode_snapshots(payloads)
    for payload, member in zip(payloads, members, strict=True):
        if is_compact(member):  # the batch's fast path and the general one write the same bytes
            assert member == encode_general(orjson.loads(payload))
    ids = ["METER001"] * len(msgs)
    a, b = batch.decode(payloads, ids), batch.decode(members, ids)
    assert a.ok.tolist() == b.ok.tolist()
    ok = a.ok
    assert np.array_equal(a.values[ok], b.values[ok]) and np.array_equal(a.at_ms[ok], b.at_ms[ok])
    assert np.array_equal(a.seq[ok], b.seq[ok])
    assert np.array_equal(a.temperature[ok], b.temperature[ok], equal_nan=True)
    assert [a.enums[i] for i in np.flatnonzero(ok)] == [b.enums[i] for i in np.flatnonzero(ok)]
