"""``GET /meters/{id}/completeness`` and ``GET /completeness`` served by uvicorn over real PostgreSQL:
per hour and per local day, against the test's own computation of the rule."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from enerlink.db import migrate
from enerlink.schemas.wire import Tables
from tests.support.aggdata import aggregate_row, insert_rows
from tests.support.apiserver import serve_api

BASE = datetime(2026, 3, 1, tzinfo=UTC)
ZONE = "Europe/Berlin"  # UTC+1 in March: local days start at 23:00 UTC


def minute_rows(meter: str, rng: random.Random) -> list[dict[str, Any]]:
    """Three minutes an hour for 30 hours, six readings each, with lost and repaired readings and a
    re-flash (seq back to 1) at hour 20."""
    out, seq = [], 0
    for hour in range(30):
        if hour == 20:
            seq = 0
        for minute in (5, 6, 40):
            lost_before, lost_inside = rng.choice((0, 0, 0, 1, 3)), rng.choice((0, 0, 1))
            first = seq + lost_before + 1
            last = first + 5 + lost_inside
            seq = last
            bucket = BASE + timedelta(hours=hour, minutes=minute)
            out.append(
                aggregate_row(
                    meter,
                    bucket,
                    sample_count=6,
                    seq_first=first,
                    seq_last=last,
                    repaired_count=rng.choice((0, 0, 2)),
                )
            )
    return out


def expected_by(rows: list[dict[str, Any]], key: Any) -> dict[datetime, dict[str, int]]:
    """The rule, computed here: a minute expects ``seq_last`` minus the previous minute's, its own
    range for the first minute or after a restart."""
    out: dict[datetime, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("e", "r", "p"), 0))
    before = None
    for row in rows:
        first, last = row["seq_first"], row["seq_last"]
        fresh = before is None or first <= before
        expected = last - first + 1 if fresh else last - before
        before = last
        bucket = out[key(row["bucket"])]
        bucket["e"] += expected
        bucket["r"] += row["sample_count"]
        bucket["p"] += row["repaired_count"]
    return out


def hour_of(at: datetime) -> datetime:
    return at.replace(minute=0)


def day_of(at: datetime) -> datetime:
    local = at.astimezone(ZoneInfo(ZONE))
    return local.replace(hour=0, minute=0).astimezone(UTC)


def check(points: list[dict[str, Any]], want: dict[datetime, dict[str, int]]) -> None:
    assert [datetime.fromisoformat(p["bucket"]) for p in points] == sorted(want)
    for point in points:
        w = want[datetime.fromisoformat(point["bucket"])]
        assert (point["expected"], point["received"], point["repaired"]) == (w["e"], w["r"], w["p"])
        assert point["missing"] == w["e"] - w["r"]
        assert point["completeness"] == round(w["r"] / w["e"], 6)


async def test_meter_and_fleet_completeness_match_the_rule(
    environ: dict[str, str], database_url: str
) -> None:
    await migrate(database_url)
    rows = minute_rows("C1", random.Random(7))
    insert_rows(database_url, Tables.TELEMETRY_AGGREGATES, rows)
    insert_rows(
        database_url,
        Tables.TELEMETRY_AGGREGATES,
        [aggregate_row("U1", BASE + timedelta(hours=h, minutes=5)) for h in range(3)],  # no seq
    )
    end = BASE + timedelta(hours=30)
    async with serve_api(environ, ENERLINK_TIMEZONE=ZONE) as api:
        range_ = {"start": BASE.isoformat(), "end": end.isoformat()}
        hourly = await api.client.get("/meters/C1/completeness", params={**range_, "bucket": "1h"})
        assert hourly.status_code == 200, hourly.text
        body = hourly.json()
        assert body["bucket"] == "1h" and body["timezone"] == ZONE and body["threshold"] == 0.99
        want = expected_by(rows, hour_of)
        assert len(want) == 30
        check(body["points"], want)
        assert body["total"]["expected"] == sum(w["e"] for w in want.values())
        assert body["total"]["missing"] == sum(w["e"] - w["r"] for w in want.values()) > 0

        daily = await api.client.get("/meters/C1/completeness", params={**range_, "bucket": "1d"})
        assert daily.status_code == 200, daily.text
        assert daily.json()["start"] == "2026-02-28T23:00:00Z"  # moved back to the local day's start
        check(daily.json()["points"], expected_by(rows, day_of))
        assert len(daily.json()["points"]) == 2

        unknown = (await api.client.get("/meters/U1/completeness", params=range_)).json()
        assert [p["received"] for p in unknown["points"]] == [12, 12, 12]
        assert {
            (p["expected"], p["missing"], p["repaired"], p["completeness"]) for p in unknown["points"]
        } == {(None, None, None, None)}
        assert unknown["total"]["expected"] is None and unknown["total"]["received"] == 36

        missing = await api.client.get("/meters/NOPE/completeness", params=range_)
        assert missing.status_code == 404
        too_long = await api.client.get(
            "/meters/C1/completeness", params={"start": "2025-01-01T00:00:00Z", "end": end.isoformat()}
        )
        assert too_long.status_code == 422
        backwards = await api.client.get(
            "/meters/C1/completeness", params={"start": end.isoformat(), "end": BASE.isoformat()}
        )
        assert backwards.status_code == 422

        fleet = await api.client.get(
            "/completeness",
            params={"start": BASE.isoformat(), "end": (BASE + timedelta(hours=3)).isoformat()},
        )
        assert fleet.status_code == 200, fleet.text
        points = fleet.json()["points"]
        assert [(p["meters"], p["meters_with_seq"]) for p in points] == [(2, 1)] * 3
        for point in points:
            w = want[datetime.fromisoformat(point["bucket"])]
            assert point["expected"] == w["e"] and point["received"] == w["r"] + 12
            assert point["meters_below_threshold"] == (1 if w["r"] / w["e"] < 0.99 else 0)
