"""The delivery contract: range arithmetic, and what confirmations and resend requests accept."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from enerlink.schemas.delivery import (
    MAX_RESEND_RANGES,
    Confirmation,
    ResendCommand,
    ResendResult,
    SeqRanges,
)


def test_ranges_merge_adjacent_and_overlapping() -> None:
    r = SeqRanges([(1, 5), (8, 9)])
    assert r.holes() == [(6, 7)] and r.through() == 5
    r.add(7)
    r.add(6)
    assert r.to_list() == [(1, 9)] and r.through() == 9 and r.holes() == []
    r.add_range(12, 20)
    r.add_range(15, 30)
    assert r.to_list() == [(1, 9), (12, 30)]
    assert r.missing_from(1, 35) == [(10, 11), (31, 35)]
    assert r.intersection(8, 13) == [(8, 9), (12, 13)]
    assert SeqRanges([(2, 3)]).through() == 0


@given(st.sets(st.integers(min_value=1, max_value=200), max_size=80))
def test_ranges_hold_exactly_the_numbers_added(numbers: set[int]) -> None:
    r = SeqRanges()
    for n in sorted(numbers, key=lambda x: (x * 7919) % 211):  # any order
        r.add(n)
    assert {n for a, b in r for n in range(a, b + 1)} == numbers
    assert r.count() == len(numbers)
    pairs = r.to_list()
    assert all(b + 1 < a2 for (_, b), (a2, _) in itertools.pairwise(pairs))
    if numbers:
        low, high = min(numbers), max(numbers)
        holes = {n for a, b in r.holes() for n in range(a, b + 1)}
        assert holes == set(range(low, high + 1)) - numbers


def test_confirmation_round_trip_and_rejections() -> None:
    body = b'{"meterId":"M1","through":5,"ranges":[[8,9],[12,12]],"at":"2026-01-01T00:00:00Z","x":1}'
    c = Confirmation.model_validate_json(body)
    assert c.through == 5 and c.ranges == [(8, 9), (12, 12)]
    for bad, why in (
        (b'{"meterId":"M1","through":-1,"at":"2026-01-01T00:00:00Z"}', "greater than or equal"),
        (b'{"meterId":"M1","through":1,"ranges":[[9,8]],"at":"2026-01-01T00:00:00Z"}', "ends before"),
        (b'{"meterId":"M1","through":1,"ranges":[[3,5],[5,6]],"at":"2026-01-01T00:00:00Z"}', "ascending"),
        (b'{"meterId":"bad id","through":1,"at":"2026-01-01T00:00:00Z"}', "pattern"),
    ):
        with pytest.raises(ValidationError, match=why):
            Confirmation.model_validate_json(bad)


def test_resend_command_is_bounded() -> None:
    assert ResendCommand.model_validate({"cmd": "resend", "ranges": [[3, 4]]}).ranges == [(3, 4)]
    with pytest.raises(ValidationError):
        ResendCommand.model_validate({"cmd": "resend", "ranges": []})
    too_many = [[i * 10, i * 10 + 1] for i in range(1, MAX_RESEND_RANGES + 2)]
    with pytest.raises(ValidationError):
        ResendCommand.model_validate({"cmd": "resend", "ranges": too_many})
    with pytest.raises(ValidationError):
        ResendCommand.model_validate({"cmd": "resend", "ranges": [[0, 4]]})
    assert ResendResult.model_validate({"resent": 2, "not_held": [[5, 9]]}).not_held == [(5, 9)]
