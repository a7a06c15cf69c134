"""Physics of the simulator, without a broker: PV, battery, load, balance, counters, conservation."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from enerlink.edge.sim.engine import EXPORT, IMPORT, SOLAR_OUT, Simulator
from enerlink.edge.sim.fleet import Fleet, MeterSpec, generate, lab_spec
from enerlink.edge.sim.messages import data_messages
from enerlink.edge.sim.weather import OfflineWeather

JAKARTA = ZoneInfo("Asia/Jakarta")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=JAKARTA).timestamp()


class ClearSky(OfflineWeather):
    """The offline model with the clouds taken away (deterministic physics checks)."""

    def cloud(self, c: tuple[float, float], epoch_s: float) -> float:
        return 0.0


def home(meter_id: str = "H1", **kw: object) -> MeterSpec:
    values: dict[str, object] = {
        "pv_kw": 5.0,
        "battery_kwh": 10.0,
        "annual_kwh": 3500,
        "tilt": 10,
        "azimuth": 0,
        "seed": 3,
        **kw,
    }
    return MeterSpec(id=meter_id, **values)  # type: ignore[arg-type]


def run_day(sim: Simulator, start: float, *, step_s: float = 60.0, hours: float = 24.0) -> list[list[dict]]:
    out = []
    for k in range(int(hours * 3600 / step_s)):
        step = sim.step(start + k * step_s)
        out.append(list(data_messages(sim, step)))
    return out


def test_no_solar_at_night_and_peak_near_solar_noon() -> None:
    sim = Simulator.create(Fleet(meters=(home(),)), weather=ClearSky())
    day = run_day(sim, local(2025, 3, 21), step_s=300)
    solar = np.array([m[0]["data"]["solar_output"]["power"] for m in day])
    hours = np.arange(len(day)) * 300 / 3600
    assert solar[(hours < 5.5) | (hours > 18.8)].max() == 0.0
    assert all(
        not m[0]["data"]["solar_input"]["generating"] for m, h in zip(day, hours, strict=True) if h < 5
    )
    # Jakarta (106.85 E) on Asia/Jakarta (105 E) time: solar noon near 11:55 local
    peak_hour = hours[int(solar.argmax())]
    assert 11.0 <= peak_hour <= 13.0
    assert 3_000_000 < solar.max() < 5_000_000  # a 5 kWp array: a few kW, in mW


def test_cloudy_weather_lowers_pv() -> None:
    clear = Simulator.create(Fleet(meters=(home(),)), weather=ClearSky())
    cloudy = Simulator.create(Fleet(meters=(home(),)), weather=ClearSky())
    cloudy.scenarios.set("cloudy", np.array([0]))
    noon = local(2025, 3, 21, 12)
    a = clear.step(noon).power_w[0, SOLAR_OUT]
    b = cloudy.step(noon).power_w[0, SOLAR_OUT]
    assert 0 < b < 0.5 * a


def test_soc_stays_within_bounds_and_low_soc_alert_follows_threshold() -> None:
    spec = home(battery_kwh=5.0, alert_threshold=20)
    sim = Simulator.create(Fleet(meters=(spec,)), weather=ClearSky())
    sim.scenarios.set("grid_outage", np.array([0]))  # the battery alone carries the nights
    days = run_day(sim, local(2025, 3, 21), step_s=300, hours=72)
    socs = [m[0]["data"]["battery"]["soc"] for m in days]
    assert min(socs) == 0.0 and max(socs) == 100.0
    assert all(0.0 <= s <= 100.0 for s in socs)
    for messages in days:
        battery = messages[0]["data"]["battery"]
        assert battery["alert_active"] == (battery["soc"] < 20)


def test_energy_is_conserved_over_a_day_within_one_percent() -> None:
    fleet = Fleet(
        meters=(home("H1"), home("H2", battery_kwh=5.0, pv_kw=8.0), lab_spec("L1", seed=4), home("OUT")),
        seed=9,
    )
    sim = Simulator.create(fleet)
    sim.scenarios.set("grid_outage", np.array([3]))  # curtailment and load shedding balance too
    start = local(2025, 6, 1)
    sim.step(start - 60)
    stored_before = sim.battery.energy_wh.copy()
    ledger_before = {
        k: getattr(sim.ledger, k).copy() for k in ("solar_out", "load", "export", "import_", "battery_loss")
    }
    days = run_day(sim, start, step_s=60)
    d = {k: getattr(sim.ledger, k) - v for k, v in ledger_before.items()}
    stored_change = sim.battery.energy_wh - stored_before
    balance = d["load"] + d["export"] - d["import_"] + stored_change + d["battery_loss"]
    assert (d["solar_out"] > 0).all()
    np.testing.assert_allclose(d["solar_out"], balance, rtol=0.01)
    # and the published daily counters tell the same story as the true flows (last message of the day)
    last = days[-1]
    for i, message in enumerate(last):
        data = message["data"]
        assert data["solar_output"]["daily_energy"] == pytest.approx(d["solar_out"][i], rel=0.01)
        assert data["net_solar"]["load_daily"] == pytest.approx(d["load"][i], rel=0.01)
        assert data["export"]["daily_energy"] == pytest.approx(d["export"][i], rel=0.01, abs=1e-3)
        assert data["import"]["daily_energy"] == pytest.approx(d["import_"][i], rel=0.01, abs=1e-3)


def test_counters_only_grow_and_daily_ones_reset_at_local_midnight() -> None:
    sim = Simulator.create(Fleet(meters=(home(),)))
    start = local(2025, 6, 1, 22)
    totals, dailies = [], []
    for k in range(4 * 12):  # 22:00 -> 02:00 local, 5 min steps
        sim.step(start + k * 300)
        totals.append(sim.counters.total[0].copy())
        dailies.append((start + k * 300, sim.counters.daily[0].copy()))
    assert all((b >= a).all() for a, b in itertools.pairwise(totals))
    midnight = local(2025, 6, 2)
    before = [d for t, d in dailies if t < midnight][-1]
    after = next(d for t, d in dailies if t >= midnight)
    assert before.sum() > 0
    assert after.sum() < before.sum() and after.sum() <= sim.counters.total[0].sum()
    # just after midnight the daily counters hold one step's worth only
    assert after[2] + after[3] < 0.2 * (before[2] + before[3])


def test_settle_resets_settlement_counters_only() -> None:
    sim = Simulator.create(Fleet(meters=(home(),)))
    for k in range(3 * 24 * 4):
        sim.step(local(2025, 6, 1, 12) + k * 900)
    totals = sim.counters.total[0, [EXPORT, IMPORT]].copy()
    assert sim.counters.settlement[0].sum() > 0
    sim.settle(np.array([0]))
    assert sim.counters.settlement[0].sum() == 0
    np.testing.assert_array_equal(sim.counters.total[0, [EXPORT, IMPORT]], totals)


def test_grid_outage_no_import_or_export_and_load_shed_when_battery_is_empty() -> None:
    spec = home(battery_kwh=5.0, pv_kw=0.5)
    sim = Simulator.create(Fleet(meters=(spec,)), weather=ClearSky())
    sim.scenarios.set("grid_outage", np.array([0]))
    days = run_day(sim, local(2025, 6, 1, 18), step_s=300, hours=48)
    for messages in days:
        data = messages[0]["data"]
        assert data["import"]["power"] == 0 and data["export"]["power"] == 0
        assert data["net_grid"]["status"] == "idle"
    assert sim.ledger.shed[0] > 0  # the battery ran out; the load was shed


def test_thermal_runaway_and_hvac_failure_heat_the_battery() -> None:
    fleet = Fleet(meters=(home("A"), home("B"), home("C")))
    sim = Simulator.create(fleet)
    sim.scenarios.set("thermal_runaway", np.array([0]))
    sim.scenarios.set("hvac_failure", np.array([1]))
    days = run_day(sim, local(2025, 6, 1, 10), step_s=60, hours=3)
    last = days[-1]
    assert 65 <= last[0]["data"]["battery"]["temperature"] <= 75
    assert "thermal_runaway" in last[0]["data"]["battery"]["alerts"]
    assert last[1]["data"]["battery"]["temperature"] > last[2]["data"]["battery"]["temperature"] + 2


def test_degradation_scenario_ages_the_battery_faster() -> None:
    sim = Simulator.create(Fleet(meters=(home("A"), home("B"))))
    sim.scenarios.set("degradation", np.array([0]))
    run_day(sim, local(2025, 6, 1), step_s=300, hours=48)
    health = sim.battery.health
    assert health[0] < health[1] < 1.0
    assert sim.battery.cycles[0] > 0.3


def test_lab_scale_is_the_dc_rig() -> None:
    sim = Simulator.create(Fleet(meters=(lab_spec("LAB1", seed=2),)), weather=ClearSky())
    days = run_day(sim, local(2025, 6, 1), step_s=600)
    for messages in days:
        data = messages[0]["data"]
        assert 2.5 <= data["battery"]["voltage"] <= 4.3
        assert 8.8 <= data["load_smart_mtr"]["voltage"] <= 9.1
        assert data["load_smart_mtr"]["power"] < 3_000  # mW
        assert data["solar_input"]["power"] < 2_500
        assert 1000 < data["battery"]["estimated_capacity"] <= 1700.1


def test_load_follows_the_bdew_residential_shape() -> None:
    sim = Simulator.create(Fleet(meters=tuple(home(f"H{i}") for i in range(20))), weather=ClearSky())
    base = {h: sim.load.base_kw(local(2025, 3, 19, h)).mean() for h in (3, 12, 19)}  # a Wednesday
    assert base[19] > base[12] > base[3]  # evening peak, night trough


def test_generated_fleet_is_deterministic_and_varied() -> None:
    a, b = generate(50, seed=4), generate(50, seed=4)
    assert a == b
    assert generate(10, seed=4).meters == a.meters[:10]
    assert generate(50, seed=5) != a
    assert len({m.pv_kw for m in a.meters}) > 10 and len({m.timezone for m in a.meters}) > 1
    assert [m.id for m in a.meters[:2]] == ["METER001", "METER002"]


def test_same_inputs_give_the_same_messages() -> None:
    def messages() -> list[dict]:
        sim = Simulator.create(generate(5, seed=1))
        return run_day(sim, local(2025, 6, 1, 10), step_s=300, hours=1)[-1]

    assert messages() == messages()


def test_running_simulator_console_switches_scenarios() -> None:
    from enerlink.edge.sim.console import handle
    from enerlink.edge.sim.runner import FleetRunner

    sim = Simulator.create(generate(3, seed=2))
    runner = FleetRunner(
        settings=None, sim=sim, pub=None, store=None, seqs=np.zeros(3, dtype=np.int64), started_epoch=0.0
    )  # type: ignore[arg-type]
    now = local(2025, 6, 1, 12)
    assert handle(runner, "scenario grid_outage METER001,METER003 600", now=now)[0].startswith(
        "ok: scenario on 2 meters"
    )
    assert sim.scenarios.mask("grid_outage").tolist() == [True, False, True]
    assert sim.scenarios.until[sim.scenarios.active].tolist() == [now + 600, now + 600]
    assert "grid_outage': 2" in handle(runner, "status", now=now)[0]
    assert handle(runner, "scenario heatwave", now=now)[0].startswith("ok: scenario on 3 meters")
    assert handle(runner, "scenario meteor", now=now)[0].startswith("error: unknown scenario")
    assert handle(runner, "clear METER009", now=now)[0].startswith("error: unknown meter")
    assert handle(runner, "clear all", now=now)[0].startswith("ok: clear on 3 meters")
    assert not sim.scenarios.active.any()
    assert handle(runner, "settle METER002", now=now)[0].startswith("ok: settle on 1 meters")
    assert handle(runner, "exit", now=now) == ("stopping the fleet", False)
    sim.scenarios.set("cloudy", np.array([0]), until=now + 10)
    sim.step(now + 11)
    assert not sim.scenarios.active.any()  # durations expire on simulated time


def test_weak_wifi_status_shows_low_rssi_and_climbing_reconnect_attempts() -> None:
    from enerlink.edge.sim.messages import status_message

    sim = Simulator.create(generate(2, seed=1))
    sim.step(local(2025, 6, 1, 12))
    sim.scenarios.set("weak_wifi", np.array([0]))
    statuses = [
        status_message(sim, 0, epoch_s=local(2025, 6, 1, 12) + k, uptime_ms=k, rng_value=v)
        for k, v in enumerate((0.9, 0.2, 0.7, 0.6))
    ]
    normal = status_message(sim, 1, epoch_s=local(2025, 6, 1, 12), uptime_ms=0, rng_value=0.9)
    assert all(s["data"]["wifi"]["rssi"] < -80 for s in statuses)
    attempts = [s["data"]["mqtt"]["attempts"] for s in statuses]
    assert attempts == sorted(attempts) and attempts[-1] > attempts[0]
    assert statuses[-1]["data"]["system"]["status"] == "warning"
    assert normal["data"]["wifi"]["rssi"] > -80 and normal["data"]["system"]["status"] == "alive"


def test_backfill_progress_prints_each_tenth_without_a_terminal() -> None:
    import io

    from enerlink.edge.sim.clock import Progress

    out = io.StringIO()
    progress = Progress(total=100, out=out)
    for _ in range(100):
        progress.update(messages=3, label="2025-01-01")
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("backfill [" + "#" * 30 + "] 100.0%")
    assert "300 msgs" in lines[-1]
