"""The Home Assistant bridge on the real broker and Redis: retained discovery configs, per-meter states
rendered the way Home Assistant renders them, energy that never decreases across counter resets."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from enerlink import mqtt
from enerlink.config import Env, MqttEndpoint
from enerlink.hass.discovery import SENSORS, node_id
from enerlink.hass.energy import MeterCounters, Reading
from enerlink.hass.metrics import HassMetrics
from enerlink.hass.service import run
from enerlink.hass.settings import Settings
from enerlink.schemas.wire import Keys
from tests.conftest import load_fixture
from tests.support.ingest_support import wait_until
from tests.support.secured_broker import SERVICE_PASSWORDS, SecuredBroker
from tests.support.services import ServiceProcess

ENERGY = [s.key for s in SENSORS if s.device_class == "energy"]
T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
# Home Assistant's discovery topic pattern (homeassistant/components/mqtt/discovery.py)
DISCOVERY_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def render(template: str, payload: bytes) -> str:
    """A template rendered as Home Assistant's MQTT entities do: Jinja2 (sandboxed), ``value`` the
    payload and ``value_json`` the payload parsed as JSON (left undefined when it is not JSON)."""
    variables: dict[str, Any] = {"value": payload.decode()}
    with contextlib.suppress(ValueError):
        variables["value_json"] = json.loads(payload)
    return ImmutableSandboxedEnvironment().from_string(template).render(**variables)


def hass_settings(environ: dict[str, str], uid: str, *, enabled: bool = True) -> Settings:
    extra = {"ENERLINK_HA_CLIENT_ID": f"hass-{uid}", "ENERLINK_HA_DISCOVERY_PREFIX": f"t{uid}/homeassistant"}
    if enabled:
        extra["ENERLINK_HA_DISCOVERY"] = "true"
    return Settings.from_env(Env({**environ, **extra}))


@dataclass
class Seen:
    """Everything published under the discovery prefix and on the meters' HA state topics."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def configs(self, *, retained: bool | None = None) -> dict[str, bytes]:
        return {
            t: p for t, p, r in self.messages if t.endswith("/config") and (retained is None or r == retained)
        }

    def states(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages if t == topic]


@contextlib.asynccontextmanager
async def watching(endpoint: MqttEndpoint, *filters: str) -> AsyncIterator[Seen]:
    seen = Seen()
    async with mqtt.client(endpoint, identifier=f"watch-{uuid.uuid4().hex}") as client:
        await client.subscribe([(f, 1) for f in filters])

        async def collect() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                seen.messages.append((m.topic.value, payload, bool(m.retain)))

        task = asyncio.create_task(collect(), name="watch")
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def bridge(settings: Settings, metrics: HassMetrics | None = None) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(run(settings, ready=ready, metrics=metrics), name="hass")
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def message(meter: str, at: datetime, counters: dict[str, tuple[float, ...]]) -> bytes:
    """The firmware's example message for ``meter`` at ``at`` with the given (total, daily[,
    settlement]) counters per channel."""
    body = copy.deepcopy(load_fixture("meter-data.json"))
    body["meterId"] = meter
    body["datetime"] = at.isoformat().replace("+00:00", "Z")
    for channel, values in counters.items():
        section = body["data"][channel]
        section["total_energy"], section["daily_energy"] = values[0], values[1]
        if len(values) > 2:
            section["settlement_energy"] = values[2]
    return json.dumps(body).encode()


async def publish(endpoint: MqttEndpoint, *messages: tuple[str, bytes, bool]) -> None:
    async with mqtt.client(endpoint, identifier=f"pub-{uuid.uuid4().hex}") as client:
        for topic, payload, retain in messages:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=10)


def by_key(configs: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {topic.rsplit("/", 2)[-2]: json.loads(raw) for topic, raw in configs.items()}


async def test_configs_states_restart_and_birth(environ: dict[str, str], uid: str, key_prefix: str) -> None:
    settings = hass_settings(environ, uid)
    topics, prefix = settings.common.topics, settings.discovery_prefix
    endpoint = settings.common.mqtt
    meter = f"M.{uid}_1"
    state_topic = topics.ha_state(meter)
    fixture = load_fixture("meter-data.json")["data"]
    async with watching(endpoint, f"{prefix}/#", state_topic, topics.ha_bridge) as seen:
        async with bridge(settings):
            await publish(
                endpoint,
                (topics.presence(meter), b'{"online": true}', True),
                (topics.data, message(meter, T0, {}), False),
            )
            await wait_until(
                lambda: _true(len(seen.configs()) == len(SENSORS) and len(seen.states(state_topic)) == 1),
                what="configs and the first state",
            )
            first_configs = seen.configs()
            configs = by_key(first_configs)
            assert set(configs) == {s.key for s in SENSORS}
            for topic in first_configs:
                assert topic.startswith(f"{prefix}/sensor/")
                assert DISCOVERY_TOPIC.fullmatch(topic[len(prefix) + 1 :]), topic
            async with watching(endpoint, f"{prefix}/#") as fresh:  # what Home Assistant gets on subscribing
                await wait_until(
                    lambda: _true(len(fresh.configs(retained=True)) == len(SENSORS)), what="retained configs"
                )
            assert fresh.configs(retained=True) == first_configs
            for key, config in configs.items():
                assert config["unique_id"] == f"enerlink_{meter}_{key}"
                assert config["device"]["identifiers"] == [f"enerlink_{meter}"]
                assert config["state_topic"] == state_topic
                assert config["availability_mode"] == "all"
                presence, own = config["availability"]
                assert presence["topic"] == topics.presence(meter)
                assert own["topic"] == topics.ha_bridge
                for entry in (presence, own):
                    assert (entry["payload_available"], entry["payload_not_available"]) == (
                        "online",
                        "offline",
                    )
                assert render(presence["value_template"], b'{"online": true}') == "online"
                assert render(presence["value_template"], b'{"online": false}') == "offline"
            for key in ENERGY:
                c = configs[key]
                assert (c["device_class"], c["state_class"], c["unit_of_measurement"]) == (
                    "energy",
                    "total_increasing",
                    "kWh",
                )
            assert (
                configs["solar_power"]["device_class"],
                configs["solar_power"]["unit_of_measurement"],
            ) == (
                "power",
                "W",
            )
            assert configs["battery_soc"]["device_class"] == "battery"
            assert configs["battery_soc"]["unit_of_measurement"] == "%"
            assert configs["battery_voltage"]["device_class"] == "voltage"
            assert {configs[k]["state_class"] for k in configs if k not in ENERGY} == {"measurement"}
            assert [p for t, p, _ in seen.messages if t == topics.ha_bridge][-1] == b"online"

            got = _rendered(configs, seen.states(state_topic)[-1])
            d = fixture
            assert got["grid_import"] == pytest.approx(d["import"]["total_energy"] / 1000, abs=1e-9)
            assert got["grid_export"] == pytest.approx(d["export"]["total_energy"] / 1000, abs=1e-9)
            assert got["solar_production"] == pytest.approx(
                d["solar_output"]["total_energy"] / 1000, abs=1e-9
            )
            home = d["load_smart_mtr"]["total_energy"] + d["load_home"]["total_energy"]
            assert got["home_consumption"] == pytest.approx(home / 1000, abs=1e-9)
            assert got["battery_charge"] == got["battery_discharge"] == 0.0
            assert got["grid_import_power"] == pytest.approx(d["import"]["power"] / 1000)
            assert got["home_power"] == pytest.approx(
                (d["load_smart_mtr"]["power"] + d["load_home"]["power"]) / 1000
            )
            assert got["battery_soc"] == pytest.approx(d["battery"]["soc"], abs=0.01)
            assert got["battery_voltage"] == pytest.approx(d["battery"]["voltage"], abs=1e-3)

            # Home Assistant (re)starts: every config again, not retained for a subscriber already there
            mark = len(seen.messages)
            await publish(endpoint, (f"{prefix}/status", b"online", False))
            await wait_until(
                lambda: _true(len(_configs(seen, mark)) == len(SENSORS)), what="configs after birth"
            )
            assert _configs(seen, mark) == first_configs

        assert [p for t, p, _ in seen.messages if t == topics.ha_bridge][-1] == b"offline"
        before = len(seen.messages)
        # a re-flash while the bridge is away: total_energy restarts, the daily counters go on
        grow = {
            "import": (0.5, d["import"]["daily_energy"] + 2.0, d["import"]["settlement_energy"] + 2.0),
            "export": (0.0, d["export"]["daily_energy"], d["export"]["settlement_energy"]),
        }
        async with bridge(settings):
            await wait_until(
                lambda: _true(len(_configs(seen, before)) == len(SENSORS)),
                what="configs after the restart",
            )
            again = _configs(seen, before)
            assert again == first_configs  # same topics, unique ids and payloads across restarts
            await publish(endpoint, (topics.data, message(meter, T0 + timedelta(seconds=10), grow), False))
            await wait_until(
                lambda: _true(len(seen.states(state_topic)) == 2), what="the state after restart"
            )
        got2 = _rendered(configs, seen.states(state_topic)[-1])
        assert got2["grid_import"] == pytest.approx(got["grid_import"] + 0.002, abs=1e-9)
        assert got2["grid_export"] == pytest.approx(got["grid_export"], abs=1e-9)
    client = aioredis.Redis.from_url(environ["ENERLINK_REDIS_URL"])
    async with client:
        stored = await client.hget(Keys(key_prefix).ha_counters, meter)
    assert stored is not None and MeterCounters.loads(stored).lifetime["import"] == pytest.approx(27.1)


def _configs(seen: Seen, start: int) -> dict[str, bytes]:
    return {t: p for t, p, _ in seen.messages[start:] if t.endswith("/config")}


async def _true(value: bool) -> bool:
    return value


def _rendered(configs: dict[str, dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps(state).encode()
    out: dict[str, Any] = {}
    for key, config in configs.items():
        text = render(config["value_template"], payload)
        out[key] = None if text == "None" else float(text)
    return out


# energy per message and channel (Wh): charging in the first half, discharging in the second
CHARGING = {"import": 2.0, "export": 1.0, "solar_output": 3.0, "load_smart_mtr": 1.5, "load_home": 0.5}
DISCHARGING = {"import": 1.0, "export": 0.0, "solar_output": 0.0, "load_smart_mtr": 1.25, "load_home": 0.75}
GRID = ("import", "export")


@dataclass
class Meter:
    """Counters as a meter keeps them, with the resets and faults a real one has."""

    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHARGING, 500.0))
    daily: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHARGING, 5.0))
    settlement: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GRID, 50.0))

    def step(self, energy: dict[str, float], event: str = "") -> dict[str, tuple[float, ...]]:
        for c, e in energy.items():
            if event == "midnight":
                self.daily[c] = 0.0
            if event == "reflash":  # total_energy restarts; the daily and settlement counters go on
                self.total[c] = 0.0
            if event == "dip":  # total_energy reads a little lower than before
                self.total[c] -= 0.01 + e
            if event == "jump":  # total_energy reads far too high
                self.total[c] += 1000.0
            if event == "everything":  # every counter lost
                self.total[c] = self.daily[c] = 0.0
                if c in GRID:
                    self.settlement[c] = 0.0
            self.total[c] += e
            self.daily[c] += e
            if c in GRID:
                self.settlement[c] += e
        return {
            c: (self.total[c], self.daily[c], *([self.settlement[c]] if c in GRID else [])) for c in CHARGING
        }


async def test_resets_never_decrease_nor_spike(environ: dict[str, str], uid: str) -> None:
    settings = hass_settings(environ, uid)
    topics, endpoint = settings.common.topics, settings.common.mqtt
    meter = f"R{uid}"
    state_topic = topics.ha_state(meter)
    events = {3: "midnight", 6: "reflash", 9: "dip", 12: "jump", 15: "midnight", 17: "everything"}
    meter_model = Meter()
    sent: list[tuple[bytes, str | None]] = []  # payload, the state it must give (None: no state)
    expected: dict[str, dict[str, float]] = {}
    life = {c: 500.0 for c in CHARGING} | {"charge": 0.0, "discharge": 0.0}
    for k in range(21):
        energy = CHARGING if k < 10 else DISCHARGING
        counters = meter_model.step(energy, events.get(k, ""))
        at = T0 + timedelta(seconds=10 * k)
        if k == 0:  # the bridge starts from the meter's own total_energy
            life = {c: counters[c][0] for c in CHARGING} | {"charge": 0.0, "discharge": 0.0}
        else:
            for c, e in energy.items():
                life[c] += e
            balance = energy["solar_output"] + energy["import"] - energy["export"]
            balance -= energy["load_smart_mtr"] + energy["load_home"]
            life["charge" if balance > 0 else "discharge"] += abs(balance)
        expected[at.isoformat()] = dict(life)
        sent.append((message(meter, at, counters), at.isoformat()))
        if k == 7:  # a redelivered older message, and bad input beside good data
            sent += [(sent[-3][0], None), (b"not json", None)]
            sent.append((message(meter, at, {"import": (-1.0, 0.0, 0.0)}), None))
            sent.append((message(meter, at + timedelta(days=3650), counters), None))
    last = (T0 + timedelta(seconds=200)).isoformat()
    metrics = HassMetrics()
    async with watching(endpoint, state_topic) as seen, bridge(settings, metrics):
        for payload, gives in sent:  # one at a time: each good message is a state of its own
            await publish(endpoint, (topics.data, payload, False))
            if gives is not None:
                await wait_until(
                    lambda at=gives: _true(any(s["at"] == at for s in seen.states(state_topic))),
                    what=f"the state of {gives}",
                )
        # a presence topic that names no valid meter id is counted and skipped
        await publish(endpoint, (topics.presence("bad meter"), b'{"online": true}', False))
        reason = {"reason": "invalid_meter_id"}
        await wait_until(
            lambda: _true(metrics.registry.get_sample_value("enerlink_hass_rejected_total", reason) == 1),
            what="the bad presence rejected",
        )
    configs = by_key({t: p for t, p in discovery_configs(settings, meter)})
    states = seen.states(state_topic)
    assert [s["at"] for s in states] == [gives for _, gives in sent if gives is not None]
    assert states[-1]["at"] == last
    previous: dict[str, float] = {}
    for state in states:
        got = _rendered(configs, state)
        want = expected[state["at"]]
        assert got["grid_import"] == pytest.approx(want["import"] / 1000, abs=1e-8), state["at"]
        assert got["grid_export"] == pytest.approx(want["export"] / 1000, abs=1e-8)
        assert got["solar_production"] == pytest.approx(want["solar_output"] / 1000, abs=1e-8)
        home = want["load_smart_mtr"] + want["load_home"]
        assert got["home_consumption"] == pytest.approx(home / 1000, abs=1e-8)
        assert got["battery_charge"] == pytest.approx(want["charge"] / 1000, abs=1e-8)
        assert got["battery_discharge"] == pytest.approx(want["discharge"] / 1000, abs=1e-8)
        for key in ENERGY:
            assert got[key] >= previous.get(key, 0.0), (key, state["at"])
            previous[key] = got[key]
    # the first message (counters 500 + 2 Wh) then 9 charging and 11 discharging steps, nothing more
    assert previous["grid_import"] == pytest.approx((502.0 + 9 * 2.0 + 11 * 1.0) / 1000, abs=1e-8)
    assert previous["battery_charge"] == pytest.approx(9 * 2.0 / 1000, abs=1e-8)
    assert previous["battery_discharge"] == pytest.approx(11 * 1.0 / 1000, abs=1e-8)
    sample = metrics.registry.get_sample_value
    assert sample("enerlink_hass_rejected_total", {"reason": "invalid_data"}) == 2  # bad input counted
    assert sample("enerlink_hass_stale_total") == 1  # the redelivered older message changed nothing
    assert sample("enerlink_hass_rejected_total", {"reason": "future"}) == 1  # it would hold back the rest
    assert sample("enerlink_hass_received_total", {"kind": "data"}) == 23


def discovery_configs(settings: Settings, meter: str) -> list[tuple[str, bytes]]:
    from enerlink.hass import discovery

    return discovery.configs(meter, topics=settings.common.topics, discovery=settings.discovery)


async def test_nothing_published_when_switched_off(environ: dict[str, str], uid: str) -> None:
    assert Settings.from_env(Env(environ)).enabled is False  # off unless ENERLINK_HA_DISCOVERY=true
    settings = hass_settings(environ, uid, enabled=False)
    topics, endpoint = settings.common.topics, settings.common.mqtt
    meter = f"OFF{uid}"
    async with watching(endpoint, f"{settings.discovery_prefix}/#", topics.ha_state(meter)) as seen:
        task = asyncio.create_task(run(settings), name="hass-off")
        await publish(
            endpoint,
            (topics.presence(meter), b'{"online": true}', True),
            (topics.data, message(meter, T0, {}), False),
            (f"{settings.discovery_prefix}/status", b"online", False),
        )
        await asyncio.wait_for(task, 5)  # returns at once
        # the same messages with a bridge switched on give configs and a state: wait as long as that takes
        on = replace_prefix(hass_settings(environ, uid), f"t{uid}x/homeassistant")
        async with watching(endpoint, f"{on.discovery_prefix}/#") as control:
            before_control = [t for t, _, _ in seen.messages]
            async with bridge(on):
                await publish(endpoint, (topics.data, message(meter, T0 + timedelta(seconds=5), {}), False))
                await wait_until(
                    lambda: _true(len(control.configs()) == len(SENSORS)), what="control configs"
                )
        assert before_control == [f"{settings.discovery_prefix}/status"]  # only the birth message we sent
        assert not [t for t, _, _ in seen.messages if t.startswith(f"{settings.discovery_prefix}/sensor")]


def replace_prefix(settings: Settings, prefix: str) -> Settings:
    from dataclasses import replace

    return replace(settings, discovery_prefix=prefix)


channel_counters = st.tuples(
    st.floats(0, 1e6, allow_nan=False), st.floats(0, 1e4, allow_nan=False), st.floats(0, 1e4, allow_nan=False)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(channel_counters, min_size=2, max_size=30))
def test_lifetime_never_decreases_whatever_the_counters_do(
    snapshots: list[tuple[float, float, float]],
) -> None:
    def current(t: float, d: float, s: float) -> dict[str, Reading]:
        return {c: Reading(t, d, s if c in GRID else None) for c in CHARGING}

    counters = MeterCounters.start(0, current(*snapshots[0]))
    before = dict(counters.lifetime)
    for i, snapshot in enumerate(snapshots[1:], start=1):
        assert counters.advance(i * 1000, current(*snapshot))
        for key, value in counters.lifetime.items():
            assert value >= before[key]
        # one step never adds more than the largest of the counters' own growths (no spike)
        prev = snapshots[i - 1]
        bound = max(snapshot[0] - prev[0], snapshot[1] - prev[1], snapshot[2] - prev[2], min(snapshot), 0.0)
        assert counters.lifetime["import"] - before["import"] <= bound + 1e-9
        before = dict(counters.lifetime)
    assert not counters.advance(1, current(*snapshots[-1]))  # older than the last seen: nothing changes


async def test_enerlink_up_makes_the_simulated_meters_home_assistant_devices(
    environ: dict[str, str], uid: str
) -> None:
    settings = hass_settings(environ, uid)
    topics, prefix = settings.common.topics, settings.discovery_prefix
    env = {
        **environ,
        "ENERLINK_HA_DISCOVERY": "true",
        "ENERLINK_HA_DISCOVERY_PREFIX": prefix,
        "ENERLINK_HA_CLIENT_ID": f"hass-{uid}",
    }
    meters = ["METER001", "METER002"]
    up = ServiceProcess(args=["up", "--meters", "2", "--interval", "1", "--no-api", "--no-console"], env=env)
    async with watching(settings.common.mqtt, f"{prefix}/#", f"{topics.prefix}/meters/+/ha/state") as seen:
        up.start()
        try:
            await wait_until(
                lambda: _true(
                    len(seen.configs()) == 2 * len(SENSORS)
                    and all(len(seen.states(topics.ha_state(m))) >= 3 for m in meters)
                ),
                limit_s=90,
                what="configs and states of both simulated meters",
            )
        finally:
            code = up.terminate(timeout=60)
    assert code == 0, up.output()[-3000:]
    for meter in meters:
        configs = by_key({t: p for t, p in seen.configs().items() if f"/{node_id(meter)}/" in t})
        assert len(configs) == len(SENSORS)
        readings = [_rendered(configs, s) for s in seen.states(topics.ha_state(meter))]
        for key in ENERGY:
            series = [r[key] for r in readings]
            assert series == sorted(series), (meter, key)
        assert readings[-1]["home_consumption"] > 0  # a simulated home uses energy
        assert 0 <= readings[-1]["battery_soc"] <= 100


async def test_kill_9_and_restart_continue_the_same_sums(environ: dict[str, str], uid: str) -> None:
    settings = hass_settings(environ, uid)
    topics, endpoint = settings.common.topics, settings.common.mqtt
    env = {
        **environ,
        "ENERLINK_HA_DISCOVERY": "true",
        "ENERLINK_HA_DISCOVERY_PREFIX": settings.discovery_prefix,
        "ENERLINK_HA_CLIENT_ID": f"hass-{uid}",
    }
    meter = f"K{uid}"
    state_topic = topics.ha_state(meter)
    model = Meter()
    configs = by_key(dict(discovery_configs(settings, meter)))

    async def send(k: int, event: str = "") -> None:
        at = T0 + timedelta(seconds=10 * k)
        await publish(endpoint, (topics.data, message(meter, at, model.step(CHARGING, event)), False))
        await wait_until(
            lambda: _true(any(s["at"] == at.isoformat() for s in seen.states(state_topic))),
            what=f"state {k}",
        )

    def bridge_status() -> list[bytes]:
        return [p for t, p, _ in seen.messages if t == topics.ha_bridge]

    async with watching(endpoint, state_topic, topics.ha_bridge) as seen:
        first = ServiceProcess(args=["hass"], env=env).start()
        try:
            await wait_until(lambda: _true(bridge_status()[-1:] == [b"online"]), what="bridge online")
            for k in range(3):
                await send(k)
        finally:
            first.kill()  # kill -9: the broker publishes the bridge's last will
        await wait_until(lambda: _true(bridge_status()[-1:] == [b"offline"]), what="last will")
        model.step(CHARGING, "reflash")  # energy the bridge never sees: the meter is re-flashed meanwhile
        second = ServiceProcess(args=["hass"], env=env).start()
        try:
            await wait_until(lambda: _true(bridge_status()[-1:] == [b"online"]), what="bridge online again")
            await send(4)
        finally:
            assert second.terminate() == 0, second.output()[-3000:]
    series = [_rendered(configs, s)["grid_import"] for s in seen.states(state_topic)]
    assert series == sorted(series)
    # the first message starts at its counter; each step adds 2 Wh; across the re-flash and the missed
    # message, the re-flashed counter's daily counter still shows both steps
    assert series[-1] == pytest.approx((502.0 + 4 * 2.0) / 1000, abs=1e-8)


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredBroker]:
    """The production broker configuration (mosquitto/acl, init-auth.sh, add-meter.sh)."""
    broker = SecuredBroker(root=Path(tempfile.mkdtemp(prefix="enerlink-secured-")), tls=False)
    broker.script("add-meter.sh", "METER001", "pw-meter-001")
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)


async def test_production_broker_accounts_carry_discovery_to_home_assistant(
    secured: SecuredBroker, environ: dict[str, str], uid: str
) -> None:
    def url(user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{secured.port}"

    env = {
        **environ,
        "ENERLINK_MQTT_URL": url("enerlink-hass", SERVICE_PASSWORDS["MQTT_HASS_PASSWORD"]),
        "ENERLINK_TOPIC_PREFIX": "enerlink",  # the prefix the production ACL names
        "ENERLINK_HA_DISCOVERY": "true",
        "ENERLINK_HA_CLIENT_ID": f"hass-{uid}",
    }
    settings = Settings.from_env(Env(env))
    topics, prefix = settings.common.topics, settings.discovery_prefix
    assert prefix == "homeassistant"
    home_assistant = MqttEndpoint.parse(
        url("homeassistant", SERVICE_PASSWORDS["MQTT_HOMEASSISTANT_PASSWORD"])
    )
    meter = MqttEndpoint.parse(url("METER001", "pw-meter-001"))
    state_topic = topics.ha_state("METER001")
    filters = (f"{prefix}/#", state_topic, topics.ha_bridge, topics.data, topics.presence("METER001"))
    async with watching(home_assistant, *filters) as seen, bridge(settings):
        await publish(
            meter,
            (topics.presence("METER001"), b'{"online": true}', True),
            (topics.data, message("METER001", T0, {}), False),
        )
        await wait_until(
            lambda: _true(len(seen.configs()) == len(SENSORS) and len(seen.states(state_topic)) == 1),
            what="configs and state as Home Assistant's account reads them",
        )
        mark = len(seen.messages)
        await publish(home_assistant, (f"{prefix}/status", b"online", False))  # Home Assistant's birth
        await wait_until(lambda: _true(len(_configs(seen, mark)) == len(SENSORS)), what="configs after birth")
    got = {t for t, _, _ in seen.messages}
    assert topics.presence("METER001") in got and topics.ha_bridge in got
    assert topics.data not in got  # Home Assistant's account reads no telemetry
    state = _rendered(by_key(seen.configs()), seen.states(state_topic)[-1])
    assert state["grid_import"] == pytest.approx(
        load_fixture("meter-data.json")["data"]["import"]["total_energy"] / 1000
    )
