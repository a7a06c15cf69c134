"""``GET /meters/{id}/energy`` and ``GET /energy`` against minute rows the real aggregator wrote from
data messages with counters: every figure equals the test's own sums (over the minute rows in SQL,
and over the flows it put into the counters), local hours and days of ENERLINK_TIMEZONE, a daily
counter reset at local midnight, the fleet summed, defaults, bounds and refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from enerlink.api import energy
from enerlink.schemas.wire import Tables
from tests.support.apiserver import serve_api
from tests.support.energyday import BLOCK_MS, MIN_MS, Household, aggregate_homes

TZ = "Asia/Kolkata"  # UTC+05:30: local hours start at :30 UTC, local midnight is 18:30 UTC
HOUR = 3_600_000
FLOW_KEYS = {  # response field -> the test's flow
    "grid_import_kwh": "import",
    "grid_export_kwh": "export",
    "solar_kwh": "solar_output",
    "battery_charge_kwh": "battery_charge",
    "battery_discharge_kwh": "battery_discharge",
}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sql_buckets(url: str, meter_id: str, *, unit: str) -> dict[datetime, dict[str, float]]:
    """The test's own SQL over the minute rows: Wh per local hour or day (Kolkata has no DST), the
    battery from the balance of each 5-minute block's minute rows."""
    local = f"(date_trunc('{unit}', bucket at time zone '{TZ}') at time zone '{TZ}')"
    query = f"""
      with five as (
        select min(bucket) as bucket, sum(import_energy_10uwh) / 1e5 as imp,
          sum(export_energy_10uwh) / 1e5 as exp, sum(solar_output_energy_10uwh) / 1e5 as sol,
          (sum(load_home_energy_10uwh) + sum(load_smart_mtr_energy_10uwh)) / 1e5 as load
        from {Tables.TELEMETRY_AGGREGATES} where meter_id = %s
        group by date_bin(interval '5 minutes', bucket, timestamptz '1970-01-01 00:00:00+00')
      )
      select {local}, sum(imp), sum(exp), sum(sol), sum(load),
        sum(greatest(sol + imp - load - exp, 0)), sum(greatest(load + exp - sol - imp, 0))
      from five group by 1 order by 1"""
    names = ("import", "export", "solar_output", "load", "battery_charge", "battery_discharge")
    with psycopg.connect(url) as conn:
        rows = conn.execute(query.encode(), (meter_id,)).fetchall()
    return {r[0]: dict(zip(names, map(float, r[1:]), strict=True)) for r in rows}


def _wh(mwh: dict[str, int]) -> dict[str, float]:
    return {k: v / 1000 for k, v in mwh.items()}


def _check(bucket: dict[str, Any], wh: dict[str, float]) -> None:
    """The endpoint's bucket equals Wh per flow (``load`` may be given summed or per channel)."""
    load = wh["load"] if "load" in wh else wh["load_home"] + wh["load_smart_mtr"]
    for field, flow in FLOW_KEYS.items():
        assert bucket[field] == pytest.approx(wh[flow] / 1000, rel=1e-9, abs=1e-12), (bucket["start"], field)
    assert bucket["load_kwh"] == pytest.approx(load / 1000, rel=1e-9, abs=1e-12), bucket["start"]
    solar, export, imp = wh["solar_output"], wh["export"], wh["import"]
    if solar == 0:
        assert bucket["self_consumption_pct"] is None
    else:
        expected = min(100.0, max(0.0, 100 * (solar - export) / solar))
        assert bucket["self_consumption_pct"] == pytest.approx(expected, rel=1e-9)
    expected_sufficiency = min(100.0, max(0.0, 100 * (load - imp) / load))
    assert bucket["self_sufficiency_pct"] == pytest.approx(expected_sufficiency, rel=1e-9, abs=1e-9)


async def test_energy_per_local_hour_and_day_equals_the_minute_rows_and_the_counters(
    environ: dict[str, str], database_url: str
) -> None:
    start = datetime(2025, 10, 26, 16, 0, tzinfo=UTC)  # 21:30 local; local midnight at 18:30 UTC
    end = start + timedelta(hours=5)
    # the local hour 16:30-17:30 UTC has no sun, and charges the battery from the grid in part of it
    dark = range((30 * MIN_MS) // BLOCK_MS, (90 * MIN_MS) // BLOCK_MS)
    homes = [Household("P", TZ, 1, dark), Household("Q", TZ, 3, dark)]
    await aggregate_homes(environ, homes, start_ms=_ms(start), end_ms=_ms(end), timezone=TZ)

    async with serve_api(environ, ENERLINK_TIMEZONE=TZ) as api:
        hourly = {}
        for home in homes:
            response = await api.client.get(
                f"/meters/{home.meter_id}/energy", params={"bucket": "1h", "start": _z(start), "end": _z(end)}
            )
            assert response.status_code == 200, response.text
            body = hourly[home.meter_id] = response.json()
            assert (body["meter_id"], body["bucket"], body["timezone"]) == (home.meter_id, "1h", TZ)
            # the range widened to whole local hours: 21:00 local .. 03:00 local
            assert (body["start"], body["end"]) == ("2025-10-26T15:30:00Z", "2025-10-26T21:30:00Z")
            starts = [b["start"] for b in body["buckets"]]
            assert starts == [f"2025-10-26T{h}:30:00Z" for h in range(15, 21)]
            sql = _sql_buckets(database_url, home.meter_id, unit="hour")
            assert [_z(b) for b in sql] == starts
            for bucket, wh in zip(body["buckets"], sql.values(), strict=True):
                _check(bucket, wh)  # equal to the test's SQL over the minute rows
                b0 = _ms(datetime.fromisoformat(bucket["start"]))
                _check(bucket, _wh(home.flows_between(b0, b0 + HOUR)))  # and to the flows in the counters
                assert bucket["meters"] == 1
            dark_hour = body["buckets"][1]
            assert dark_hour["solar_kwh"] == 0 and dark_hour["self_consumption_pct"] is None
            assert dark_hour["grid_import_kwh"] > dark_hour["load_kwh"]  # charged from the grid
            assert dark_hour["self_sufficiency_pct"] == 0.0  # clamped
            assert 0 < body["buckets"][3]["self_consumption_pct"] < 100
            assert body["total"]["battery_charge_kwh"] > 0 and body["total"]["battery_discharge_kwh"] > 0

        # local days: the daily counters reset at local midnight; each day is its counters' growth
        response = await api.client.get(
            "/meters/P/energy",
            params={"bucket": "1d", "start": "2025-10-26", "end": "2025-10-27T12:00:00+05:30"},
        )
        assert response.status_code == 200, response.text
        daily = response.json()
        assert (daily["start"], daily["end"]) == ("2025-10-25T18:30:00Z", "2025-10-27T18:30:00Z")
        assert [b["start"] for b in daily["buckets"]] == ["2025-10-25T18:30:00Z", "2025-10-26T18:30:00Z"]
        p = homes[0]
        midnight_ms = _ms(datetime(2025, 10, 26, 18, 30, tzinfo=UTC))
        before = [c for c in p.counters if c[0] < midnight_ms]
        first, last_before, last = p.counters[0], before[-1], p.counters[-1]
        day1, day2 = daily["buckets"]
        for field, flow in (
            ("grid_import_kwh", "import"),
            ("grid_export_kwh", "export"),
            ("solar_kwh", "solar_output"),
        ):
            assert day1[field] == pytest.approx(
                (last_before[2][flow] - first[2][flow]) / 1e6, rel=1e-9, abs=1e-12
            )
            assert day2[field] == pytest.approx(last[2][flow] / 1e6, rel=1e-9, abs=1e-12)  # daily since reset
            assert day1[field] + day2[field] == pytest.approx(
                (last[1][flow] - first[1][flow]) / 1e6, rel=1e-12
            )
            assert daily["total"][field] == pytest.approx((last[1][flow] - first[1][flow]) / 1e6, rel=1e-12)
        load_growth = sum(last[1][c] - first[1][c] for c in ("load_home", "load_smart_mtr")) / 1e6
        assert daily["total"]["load_kwh"] == pytest.approx(load_growth, rel=1e-12)
        sql_days = _sql_buckets(database_url, "P", unit="day")
        for bucket, wh in zip(daily["buckets"], sql_days.values(), strict=True):
            _check(bucket, wh)
        for bucket, (b0, b1) in zip(
            daily["buckets"], ((0, midnight_ms), (midnight_ms, 2 * midnight_ms)), strict=True
        ):
            _check(bucket, _wh(p.flows_between(b0, b1)))

        # the fleet: every meter summed per bucket
        response = await api.client.get(
            "/energy", params={"bucket": "1h", "start": _z(start), "end": _z(end)}
        )
        assert response.status_code == 200, response.text
        fleet = response.json()
        assert fleet["meter_id"] is None
        for i, bucket in enumerate(fleet["buckets"]):
            assert bucket["meters"] == 2
            b0 = _ms(datetime.fromisoformat(bucket["start"]))
            both = [h.flows_between(b0, b0 + HOUR) for h in homes]
            _check(bucket, _wh({k: both[0][k] + both[1][k] for k in both[0]}))
            for field in (*FLOW_KEYS, "load_kwh"):
                assert bucket[field] == pytest.approx(
                    hourly["P"]["buckets"][i][field] + hourly["Q"]["buckets"][i][field], rel=1e-12
                )


async def test_energy_defaults_bounds_and_refusals(environ: dict[str, str]) -> None:
    zone = ZoneInfo(TZ)
    async with serve_api(environ, ENERLINK_TIMEZONE=TZ) as api:
        await api.client.get("/health")
        today = datetime.now(zone).date()
        midnight = datetime.combine(today, datetime.min.time(), tzinfo=zone)
        tonight = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        response = await api.client.get("/energy")
        assert response.status_code == 200, response.text
        body = response.json()
        if datetime.now(zone).date() == today:  # not across local midnight while the test ran
            assert (body["bucket"], body["start"], body["end"]) == ("1h", _z(midnight), _z(tonight))
        assert body["buckets"] == [] and body["total"]["grid_import_kwh"] == 0
        assert body["total"]["self_consumption_pct"] is None and body["total"]["self_sufficiency_pct"] is None
        body = (await api.client.get("/energy", params={"bucket": "1d"})).json()
        month_ago = datetime.combine(today - timedelta(days=29), datetime.min.time(), tzinfo=zone)
        if datetime.now(zone).date() == today:
            assert (body["start"], body["end"]) == (_z(month_ago), _z(tonight))

        too_long = await api.client.get(
            "/energy", params={"bucket": "1h", "start": "2025-01-01T00:00:00Z", "end": "2025-03-01T00:00:00Z"}
        )
        assert too_long.status_code == 422
        assert "more than 744 buckets of 1h" in too_long.json()["detail"]
        assert "bucket=1d" in too_long.json()["detail"]
        year = await api.client.get(
            "/energy", params={"bucket": "1d", "start": "2024-01-01", "end": "2025-06-01"}
        )
        assert year.status_code == 422 and "more than 366 buckets of 1d" in year.json()["detail"]
        backwards = await api.client.get("/energy", params={"start": "2025-03-02", "end": "2025-03-01"})
        assert backwards.status_code == 422 and "start must be before end" in backwards.json()["detail"]
        assert (await api.client.get("/energy", params={"bucket": "5m"})).status_code == 422
        assert (await api.client.get("/meters/bad id/energy")).status_code == 422
        unknown = await api.client.get("/meters/NOSUCH/energy")
        assert unknown.status_code == 404 and "unknown meter NOSUCH" in unknown.json()["detail"]


def test_local_hours_and_days_across_daylight_saving_changes(database_url: str) -> None:
    """Europe/Lisbon: 2025-03-30 has 23 local hours, 2025-10-26 has 25 (01:00-02:00 twice); the
    window counts them, and PostgreSQL puts every 5-minute bucket in the local hour and day that
    Python's zoneinfo gives."""
    zone = ZoneInfo("Europe/Lisbon")
    now = datetime(2025, 11, 1, tzinfo=UTC)
    for day, hours in ((datetime(2025, 3, 30), 23), (datetime(2025, 10, 26), 25)):
        local = day.replace(tzinfo=zone)
        span = energy.window(
            bucket="1h", start=local, end=local.astimezone(UTC) + timedelta(hours=12), now=now, zone=zone
        )
        assert span.buckets == 12
        span = energy.window(bucket="1h", start=local, end=None, now=local + timedelta(hours=3), zone=zone)
        assert (span.start, span.buckets) == (local.astimezone(UTC), hours)
        assert energy.window(bucket="1d", start=local, end=None, now=local, zone=zone).buckets == 1
    # the first 01:00-02:00 of 2025-10-26 (00:00-01:00 UTC): one hour, though both ends read 01:00
    first = datetime(2025, 10, 26, 0, 10, tzinfo=UTC)
    span = energy.window(bucket="1h", start=first, end=first + timedelta(minutes=50), now=now, zone=zone)
    assert (span.start, span.end, span.buckets) == (
        first - timedelta(minutes=10),
        first + timedelta(minutes=50),
        1,
    )
    starts = [datetime(2025, 10, 25, 22, 0, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(12 * 6)]
    with psycopg.connect(database_url) as conn:
        for bucket in ("1h", "1d"):
            expr = energy.local_bucket_sql(bucket).replace("f.bucket", "f.b")
            query = f"select f.b, {expr} from unnest(%(at)s::timestamptz[]) as f(b) order by 1"
            got: dict[datetime, datetime] = dict(
                conn.execute(query.encode(), {"tz": "Europe/Lisbon", "at": starts}).fetchall()
            )
            for at in starts:
                local = at.astimezone(zone)
                if bucket == "1h":
                    expected = local.replace(minute=0, second=0, microsecond=0)
                else:
                    expected = datetime.combine(local.date(), datetime.min.time(), tzinfo=zone)
                # UTC: a wall time in the repeated hour never equals an instant of another zone
                assert got[at] == expected.astimezone(UTC), (bucket, at)
            # 22:00-04:00 UTC: six local hours (01:00 twice), two local days
            assert len(set(got.values())) == (6 if bucket == "1h" else 2)
