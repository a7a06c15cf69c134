"""Weather providers: Open-Meteo against a stub HTTP server on loopback (never the internet), and
the offline seeded model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from enerlink.edge.sim.engine import SOLAR_OUT, Simulator
from enerlink.edge.sim.fleet import Fleet, MeterSpec
from enerlink.edge.sim.weather import OfflineWeather, OpenMeteoWeather, cell

T0 = 1_748_736_000  # 2025-06-01T00:00:00Z


@dataclass
class Stub:
    url: str
    fail: bool = False
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    temperature: float = 31.0
    cloud: float = 20.0
    ghi: float = 650.0


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(parse_qs(urlsplit(self.path).query))
            if state.fail:
                self.send_response(503)
                self.end_headers()
                self.wfile.write(b"upstream down")
                return
            hours = list(range(T0 - 86400, T0 + 2 * 86400, 3600))
            body = {
                "hourly": {
                    "time": hours,
                    "temperature_2m": [state.temperature] * len(hours),
                    "cloud_cover": [state.cloud] * len(hours),
                    "shortwave_radiation": [state.ghi] * len(hours),
                }
            }
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1/forecast"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


JAKARTA = cell(-6.21, 106.85)


async def test_open_meteo_values_are_used_and_cached_for_an_hour(stub: Stub) -> None:
    provider = OpenMeteoWeather(base_url=stub.url)
    await provider.refresh([JAKARTA])
    await provider.refresh([JAKARTA])  # within the hour: no second request
    assert len(stub.requests) == 1
    query = stub.requests[0]
    assert query["latitude"] == ["-6.25"] and "cloud_cover" in query["hourly"][0]
    values = provider.arrays([JAKARTA], T0 + 5 * 3600 + 600)
    assert values.temp_c[0] == pytest.approx(31.0)
    assert values.cloud[0] == pytest.approx(0.2)
    assert values.ghi[0] == pytest.approx(650.0)
    assert provider.state(JAKARTA) == "live"


async def test_open_meteo_failure_keeps_cached_values_and_says_so(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    provider = OpenMeteoWeather(base_url=stub.url, ttl_s=0.0, retry_s=0.0)
    await provider.refresh([JAKARTA])
    stub.fail = True
    stub.temperature = 99.0
    await provider.refresh([JAKARTA])
    assert len(stub.requests) == 2
    assert provider.state(JAKARTA) == "cached"
    assert "keeping cached weather" in caplog.text
    assert provider.arrays([JAKARTA], T0 + 3600).temp_c[0] == pytest.approx(31.0)
    stub.fail = False
    await provider.refresh([JAKARTA])
    assert provider.state(JAKARTA) == "live"
    assert provider.arrays([JAKARTA], T0 + 3600).temp_c[0] == pytest.approx(99.0)


async def test_open_meteo_never_reached_falls_back_to_the_offline_model(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    stub.fail = True
    provider = OpenMeteoWeather(base_url=stub.url, seed=3)
    await provider.refresh([JAKARTA])
    assert provider.state(JAKARTA) == "offline"
    assert "using the offline model" in caplog.text
    fallback = OfflineWeather(seed=0).arrays([JAKARTA], T0 + 3600)
    got = provider.arrays([JAKARTA], T0 + 3600)
    assert got.temp_c[0] == pytest.approx(fallback.temp_c[0])
    assert np.isnan(got.ghi[0])


async def test_measured_irradiance_drives_pv(stub: Stub) -> None:
    spec = MeterSpec(id="M1", pv_kw=5.0, tilt=0.0)
    noon = T0 + 5 * 3600  # ~12:00 in Jakarta
    powers = []
    for ghi in (800.0, 200.0):
        stub.ghi = ghi
        provider = OpenMeteoWeather(base_url=stub.url)
        await provider.refresh([cell(spec.latitude, spec.longitude)])
        sim = Simulator.create(Fleet(meters=(spec,)), weather=provider)
        powers.append(sim.step(noon).power_w[0, SOLAR_OUT])
    assert powers[0] > 3 * powers[1] > 0


def test_offline_model_is_seeded_and_varies_between_days() -> None:
    a, b = OfflineWeather(seed=1), OfflineWeather(seed=1)
    days = [a.cloud(JAKARTA, T0 + d * 86400 + 5 * 3600) for d in range(20)]
    assert days == [b.cloud(JAKARTA, T0 + d * 86400 + 5 * 3600) for d in range(20)]
    assert max(days) - min(days) > 0.3
    assert all(0.0 <= c <= 1.0 for c in days)
    temps = [a.arrays([JAKARTA], T0 + h * 3600).temp_c[0] for h in range(24)]
    assert 20 < min(temps) < max(temps) < 36
