"""The dashboard in a real headless Chromium against the real pipeline.

A simulated fleet (``enerlink edge --simulate``), the ingest and the API (``enerlink api``, uvicorn)
run as subprocesses on the test's own topic prefix, Redis key prefix and PostgreSQL schema. The
page must load without console errors, show the simulated meters, and change when a new message
is published on MQTT. A screenshot is left in artifacts/ (git-ignored).

Needs Debian's Chromium and its driver: ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
import pytest

from enerlink.api.dashboard import STATIC_DIR
from enerlink.config import MqttEndpoint
from enerlink.schemas.wire import Tables, Topics
from tests.conftest import load_fixture
from tests.support.energyday import BLOCK_MS, MIN_MS, Household, aggregate_homes
from tests.support.services import ROOT, ServiceProcess, free_port, wait_port

APT_LINE = "apt-get install -y chromium chromium-driver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SIM_METERS = ("METER001", "METER002")
ARTIFACTS = ROOT / "artifacts"
WAIT_S = 60

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason=f"headless Chromium is not installed: run `{APT_LINE}` (add it to .ci/run)",
)


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@contextlib.contextmanager
def _running(environ: dict[str, str], uid: str, *, token: str = "", fleet: bool = True) -> Iterator[str]:
    """Ingest, API and (with ``fleet``) a 2-meter simulated fleet on this test's slice of every
    service; yields the API's base URL."""
    port = free_port()
    env = {
        **environ,
        "ENERLINK_INGEST_CLIENT_ID": f"ingest-{uid}",
        "ENERLINK_SIM_CLIENT_ID": f"sim-{uid}",
        "ENERLINK_API_PORT": str(port),
        "ENERLINK_API_HOST": "127.0.0.1",
        "ENERLINK_API_TOKEN": token,
    }
    processes = [
        ServiceProcess(args=["ingest"], env=env).start(),
        ServiceProcess(args=["api"], env=env).start(),
    ]
    if fleet:
        args = ["edge", "--simulate", "--meters", str(len(SIM_METERS)), "--interval", "1"]
        processes.append(ServiceProcess(args=args, env=env).start())
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in processes:
            if process.process and process.process.poll() is None:
                process.terminate()
        for process in processes:
            if process.process and process.process.returncode not in (0, None):
                print(f"--- {process.args}:\n{process.output()[-3000:]}")


@pytest.fixture
def stack(environ: dict[str, str], uid: str) -> Iterator[str]:
    with _running(environ, uid) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="enerlink-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1200",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _message(meter_id: str, *, solar_mw: float) -> bytes:
    message = load_fixture("meter-data.json")
    message["meterId"] = meter_id
    message["datetime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message["data"]["net_solar"]["solar_power"] = solar_mw
    return json.dumps(message).encode()


def _publish(environ: dict[str, str], topics: Topics, payload: bytes) -> None:
    endpoint = MqttEndpoint.parse(environ["ENERLINK_MQTT_URL"])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    try:
        client.publish(topics.data, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def _aggregated_minutes(database_url: str, meter_id: str, *, count: int) -> None:
    """Rows as the aggregator writes them for the last ``count`` complete minutes (the API has
    migrated the test's schema before it listens)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for minutes_ago in range(1, count + 1):
            bucket = now - timedelta(minutes=minutes_ago)
            conn.execute(
                # the net values the dashboard shows are computed from the channels (docs/data-model.md):
                # solar 1500 W, load 700 + 0 W, grid export 300 - import 0 W
                f"insert into {Tables.TELEMETRY_AGGREGATES} (meter_id, bucket, sample_count, first_ms,"
                " last_ms, solar_output_power_avg, load_smart_mtr_power_avg, load_home_power_avg,"
                " export_power_avg, import_power_avg, battery_soc_avg)"
                " values (%s, %s, 12, 0, 55000, 1500.0, 700.0, 0.0, 300.0, 0.0, 80.0)",
                (meter_id, bucket),
            )


def _health_minutes(database_url: str, meter_id: str, *, count: int) -> None:
    """Device-health minutes as the aggregator writes them (one reboot) and a weak-signal event."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for minutes_ago in range(1, count + 1):
            conn.execute(
                f"insert into {Tables.DEVICE_HEALTH} (meter_id, minute, sample_count, rssi_avg, rssi_min,"
                " wifi_disconnected_ratio, mqtt_disconnected_ratio, mqtt_attempts_max, free_heap_min,"
                " reboots, sensors_connected_min, sensors_total, uptime_last_ms)"
                " values (%s, %s, 2, %s, %s, 0, 0.5, 1, %s, %s, 6, 7, 60000)",
                (
                    meter_id,
                    now - timedelta(minutes=minutes_ago),
                    -70.0 - minutes_ago,
                    -72.0 - minutes_ago,
                    48 * 1024 + minutes_ago,
                    1 if minutes_ago == 2 else 0,
                ),
            )
        conn.execute(
            f"insert into {Tables.EVENTS} (meter_id, at, kind, severity, details)"
            " values (%s, %s, 'weak_signal', 'warning', '{\"rssi_avg\": -78}')",
            (meter_id, now - timedelta(minutes=2)),
        )


def _cell(driver: Any, meter_id: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f'#fleet tr[data-meter-id="{meter_id}"] td.{name}')
    return str(cells[0].text) if cells else ""


def _severe(driver: Any) -> list[str]:
    return [str(entry["message"]) for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_static_assets_are_served_and_confined(stack: str) -> None:
    status, body, headers = _get(stack + "/")
    assert status == 200
    assert b'id="fleet"' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    status, body, headers = _get(stack + "/static/vendor/uplot/uPlot.iife.min.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert body == (STATIC_DIR / "vendor" / "uplot" / "uPlot.iife.min.js").read_bytes()
    assert _get(stack + "/static/vendor/uplot/LICENSE")[0] == 200
    for escape in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/nope.js"):
        assert _get(stack + escape)[0] == 404, escape


def test_dashboard_shows_the_fleet_and_follows_mqtt(
    stack: str, browser: Any, environ: dict[str, str], topic_prefix: str, database_url: str
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
    topics = Topics(topic_prefix)
    _aggregated_minutes(database_url, SIM_METERS[0], count=3)
    _health_minutes(database_url, SIM_METERS[0], count=3)
    browser.get(stack + "/")
    try:
        _follow(browser, wait, environ, topics)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert _severe(browser) == []


def _follow(browser: Any, wait: Any, environ: dict[str, str], topics: Topics) -> None:
    from selenium.webdriver.common.by import By

    # the simulated meters appear, with their power flows and online state
    for meter_id in SIM_METERS:
        wait.until(lambda d, m=meter_id: _cell(d, m, "solar").endswith("W"))
        wait.until(lambda d, m=meter_id: _cell(d, m, "state") == "online")
    wait.until(lambda d: d.find_element(By.ID, "connection").text == "live")

    # a new meter's message published on MQTT shows up, and its next message changes the row
    _publish(environ, topics, _message("DASHTEST1", solar_mw=1000.0))
    wait.until(lambda d: _cell(d, "DASHTEST1", "solar") == "1.00 W")
    assert _cell(browser, "DASHTEST1", "grid") == "import 0.48 W"
    assert _cell(browser, "DASHTEST1", "soc") == "86.6 %"
    _publish(environ, topics, _message("DASHTEST1", solar_mw=2500.0))
    wait.until(lambda d: _cell(d, "DASHTEST1", "solar") == "2.50 W")

    # choosing a meter opens its live chart, history and events
    browser.find_element(By.CSS_SELECTOR, f'#fleet tr[data-meter-id="{SIM_METERS[0]}"]').click()
    wait.until(lambda d: d.find_element(By.ID, "meter-section").is_displayed())
    assert browser.find_element(By.ID, "meter-title").text == SIM_METERS[0]
    assert browser.find_elements(By.CSS_SELECTOR, "#live-chart canvas")
    wait.until(lambda d: d.find_element(By.ID, "history-info").text == "3 points")
    # device health next to the energy charts: three minutes, one reboot, the weak-signal event
    wait.until(lambda d: d.find_element(By.ID, "health-info").text == "3 points · 1m · 1 reboot · 1 event")
    assert browser.find_elements(By.CSS_SELECTOR, "#health-chart canvas")
    summary = browser.find_element(By.ID, "health-summary").text
    assert "RSSI -71 dBm" in summary and "free heap 48 kB" in summary and "sensors 6/7" in summary
    assert "MQTT down 50 %" in summary and "last event: weak_signal" in summary
    # completeness: the rows inserted above carry no seq (today's firmware): unknown, 24 hour cells
    wait.until(lambda d: d.find_element(By.ID, "completeness-info").text == "last 24 h: unknown (no seq)")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#completeness-hours span")) == 24
    assert browser.find_element(By.CSS_SELECTOR, "#completeness-days tbody td").text.startswith("20")
    ARTIFACTS.mkdir(exist_ok=True)
    chart = browser.find_element(By.ID, "health-chart")
    browser.execute_script("arguments[0].scrollIntoView();", chart)
    chart.screenshot(str(ARTIFACTS / "dashboard-health.png"))
    # the live chart's legend follows the selected meter's messages
    wait.until(
        lambda d: any(
            cell.text.endswith("W")
            for cell in d.find_elements(By.CSS_SELECTOR, "#live-chart .u-legend .u-value")
        )
    )
    for resolution, bucket in (("5m", "1m"), ("1h", "15m"), ("1d", "6h")):
        browser.find_element(By.CSS_SELECTOR, f'#resolution option[value="{resolution}"]').click()
        wait.until(lambda d: "unavailable" not in d.find_element(By.ID, "history-info").text)
        wait.until(lambda d, b=bucket: f" · {b} · 1 reboot" in d.find_element(By.ID, "health-info").text)


def test_dashboard_with_an_api_token(
    browser: Any, environ: dict[str, str], uid: str, topic_prefix: str
) -> None:
    """With ENERLINK_API_TOKEN set the page still loads, asks for the token, and once given one
    (``/?token=``, kept in localStorage and taken out of the address) sends it on every call."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
    with _running(environ, uid, token="s3cret-token", fleet=False) as url:
        assert _get(url + "/meters")[0] == 401
        assert _get(url + "/")[0] == 200
        browser.get(url + "/")
        wait.until(lambda d: "needs an API token" in d.find_element(By.ID, "alert").text)
        browser.get_log("browser")  # the 401s of the tokenless page are expected: start afresh

        browser.get(url + "/?token=s3cret-token")
        assert "token" not in browser.current_url
        wait.until(lambda d: d.find_element(By.ID, "connection").text == "live")  # WS accepted the token
        _publish(environ, Topics(topic_prefix), _message("DASHTOKEN", solar_mw=3000.0))
        wait.until(lambda d: _cell(d, "DASHTOKEN", "solar") == "3.00 W")
        browser.refresh()  # from localStorage now, through the HTTP API (GET /meters, /telemetry/latest/data)
        wait.until(lambda d: _cell(d, "DASHTOKEN", "solar") == "3.00 W")
        assert not browser.find_element(By.ID, "alert").is_displayed()
        assert _severe(browser) == []


def _energy_cell(driver: Any, panel: str, period: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f'#{panel} tr[data-range="{period}"] td.{name}')
    return str(cells[0].text) if cells else ""


def _shows(panel: str, period: str, text: str) -> Callable[[Any], bool]:
    return lambda driver: _energy_cell(driver, panel, period, "grid_import") == text


def _energy_row(mwh: dict[str, int]) -> dict[str, str]:
    """A summary row of the energy panel as the page formats it, from the test's own mWh."""

    def kwh(value: int) -> str:
        return f"{value / 1e6:.{1 if abs(value) >= 100e6 else 3}f} kWh"

    def pct(part: int, whole: int) -> str:
        return "\u2013" if whole <= 0 else f"{min(100.0, max(0.0, 100 * part / whole)):.1f} %"

    load = mwh["load_home"] + mwh["load_smart_mtr"]
    return {
        "grid_import": kwh(mwh["import"]),
        "grid_export": kwh(mwh["export"]),
        "solar": kwh(mwh["solar_output"]),
        "load": kwh(load),
        "battery_charge": kwh(mwh["battery_charge"]),
        "battery_discharge": kwh(mwh["battery_discharge"]),
        "self_consumption": pct(mwh["solar_output"] - mwh["export"], mwh["solar_output"]),
        "self_sufficiency": pct(load - mwh["import"], load),
    }


def test_energy_panels_show_the_fleet_and_the_chosen_meter(
    browser: Any, environ: dict[str, str], uid: str
) -> None:
    """Minute rows written by the real aggregator from messages with counters (the last half hour);
    the fleet's and a meter's energy panels show today's and the last 30 days' kWh and percentages
    equal to the test's own sums of what it put into the counters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tz = "Asia/Kolkata"
    env = {**environ, "ENERLINK_TIMEZONE": tz}
    now_ms = int(time.time() * 1000)
    start_ms = now_ms // BLOCK_MS * BLOCK_MS - 30 * MIN_MS
    dark = range(0, 3)  # the first quarter of an hour without sun: grid import
    homes = [Household("ENERGY1", tz, 1000, dark), Household("ENERGY2", tz, 2000, dark)]
    end_ms = now_ms // MIN_MS * MIN_MS - 2 * MIN_MS  # closed minutes
    asyncio.run(aggregate_homes(env, homes, start_ms=start_ms, end_ms=end_ms, timezone=tz))
    local_now = datetime.now(ZoneInfo(tz))
    midnight_ms = int(local_now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    forever = now_ms + 86_400_000

    def expected(selected: list[Household], start: int) -> dict[str, str]:
        parts = [home.flows_between(start, forever) for home in selected]
        return _energy_row({k: sum(p[k] for p in parts) for k in parts[0]})

    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
    with _running(env, uid, fleet=False) as url:
        browser.get(url + "/")
        try:
            for panel, selected in (("fleet-energy", homes), ("meter-energy", homes[:1])):
                if panel == "meter-energy":
                    wait.until(lambda d: _cell(d, "ENERGY1", "meter") == "ENERGY1")
                    browser.find_element(By.CSS_SELECTOR, '#fleet tr[data-meter-id="ENERGY1"]').click()
                for period, start in (("today", midnight_ms), ("month", 0)):
                    row = expected(selected, start)
                    wait.until(_shows(panel, period, row["grid_import"]))
                    assert {name: _energy_cell(browser, panel, period, name) for name in row} == row, (
                        panel,
                        period,
                    )
                assert "Asia/Kolkata" in browser.find_element(By.CSS_SELECTOR, f"#{panel} .energy-info").text
                for chart in ("hourly", "daily"):
                    assert browser.find_elements(By.CSS_SELECTOR, f"#{panel} .energy-{chart} canvas")
            for name in ("solar", "grid_import", "battery_discharge"):
                assert float(_energy_cell(browser, "fleet-energy", "month", name).split()[0]) > 0, name
            panel_element = browser.find_element(By.ID, "meter-energy")
            browser.execute_script("arguments[0].scrollIntoView();", panel_element)
            ARTIFACTS.mkdir(exist_ok=True)
            panel_element.screenshot(str(ARTIFACTS / "dashboard-meter-energy.png"))
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard-energy.png"))
        assert _severe(browser) == []  # while the API still runs (the WebSocket reconnects after)


def test_dashboard_stops_and_starts_the_simulated_fleet(stack: str, browser: Any) -> None:
    """The Stop and Start buttons drive the simulated fleet process over the API: stopped, its meters
    go offline in the fleet table; started again (with the speed typed in), they come back online."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)
    browser.get(stack + "/")
    pill = (By.ID, "simulation-state")
    try:
        wait.until(lambda d: d.find_element(*pill).text == "running")
        wait.until(lambda d: all(_cell(d, m, "state") == "online" for m in SIM_METERS))
        wait.until(lambda d: all(_cell(d, m, "solar").endswith("W") for m in SIM_METERS))
        assert browser.find_element(By.ID, "simulation-meters").get_attribute("value") == "2"
        browser.find_element(By.ID, "simulation-stop").click()
        wait.until(lambda d: d.find_element(*pill).text == "stopped")
        assert browser.find_element(By.ID, "simulation-stop").get_attribute("disabled") is not None
        wait.until(lambda d: all(_cell(d, m, "state") == "offline" for m in SIM_METERS))
        speed = browser.find_element(By.ID, "simulation-speed")
        speed.clear()
        speed.send_keys("2")
        browser.find_element(By.ID, "simulation-start").click()
        wait.until(lambda d: d.find_element(*pill).text == "running")
        wait.until(lambda d: all(_cell(d, m, "state") == "online" for m in SIM_METERS))
        info = browser.find_element(By.ID, "simulation-info").text
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.find_element(By.ID, "simulation-section").screenshot(
            str(ARTIFACTS / "dashboard-simulation.png")
        )
    state = json.loads(_get(stack + "/simulation")[1])
    assert state["running"] is True and state["speed"] == 2 and state["meters"] == 2
    assert "data messages sent" in info
    assert _severe(browser) == []
