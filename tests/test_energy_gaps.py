"""Energy of a pair of readings far apart (a gap in the readings), computed from the counters: the total
counter's growth is believed when another counter bears it out, also when the daily counter reset in the
gap and grew back past its old value. No service: the computation itself, on the stored form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from enerlink.aggregator.columns import MINUTE_COLUMNS
from enerlink.aggregator.compute import Item, compute
from tests.test_aggregator import MIN, snapshot, stored

HOUR = 3_600_000
DAY1_0800 = int(datetime(2025, 10, 26, 8, 0, tzinfo=UTC).timestamp() * 1000)


def _energies(before: tuple[int, dict[str, float]], after: tuple[int, dict[str, float]]) -> dict[str, float]:
    """The energies (Wh) of the minute of ``after``, with ``before`` as its baseline."""
    (t0, c0), (t1, c1) = before, after
    first, second = snapshot("G", t0, **c0), snapshot("G", t1, **c1)
    result = compute([Item("G", t1 // MIN * MIN, [stored(second)], stored(first))])
    row = dict(zip(MINUTE_COLUMNS, result.rows[0], strict=True))
    return {sub: row[f"{sub}_energy_10uwh"] / 100_000 for sub in ("import", "load_home")}


def _counters(sub: str, daily: float, total: float, settlement: float | None = None) -> dict[str, float]:
    out = {f"{sub}__daily_energy": daily, f"{sub}__total_energy": total}
    if settlement is not None:
        out[f"{sub}__settlement_energy"] = settlement
    return out


def test_a_gap_over_midnight_counts_the_totals_growth_when_settlement_agrees() -> None:
    # offline 08:00 on day 1 to 07:00 on day 2 (23 h), 1 Wh an hour; the daily counter reset at midnight
    # and stands higher at 07:00 (9 Wh) than at 08:00 the day before (8 Wh)
    before = (DAY1_0800, _counters("import", 8.0, 1008.0, 508.0))
    after = (DAY1_0800 + 23 * HOUR, _counters("import", 9.0, 1031.0, 531.0))
    assert _energies(before, after)["import"] == pytest.approx(23.0)


def test_a_gap_of_a_day_or_more_counts_the_totals_growth() -> None:
    # a channel without a settlement counter, offline for 25 h
    before = (DAY1_0800, _counters("load_home", 8.0, 1008.0))
    after = (DAY1_0800 + 25 * HOUR, _counters("load_home", 9.0, 1033.0))
    assert _energies(before, after)["load_home"] == pytest.approx(25.0)


def test_a_total_jumping_up_alone_is_still_not_believed() -> None:
    # five minutes apart: the daily and settlement counters grew 1 Wh, the total 4,000 Wh
    before = (DAY1_0800, _counters("import", 8.0, 1008.0, 508.0) | _counters("load_home", 8.0, 1008.0))
    after = (
        DAY1_0800 + 5 * MIN,
        _counters("import", 9.0, 5008.0, 509.0) | _counters("load_home", 9.0, 5008.0),
    )
    assert _energies(before, after) == {"import": pytest.approx(1.0), "load_home": pytest.approx(1.0)}
