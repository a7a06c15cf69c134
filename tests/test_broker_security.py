"""The production broker configuration, on a real Mosquitto: authentication, ACLs, TLS, tooling.

One broker for the module runs mosquitto/mosquitto.conf rewritten only for paths and ports, with
the service accounts written by mosquitto/init-auth.sh and meters added by mosquitto/add-meter.sh.
Absence of a message is asserted with a sentinel the same subscriber must receive afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from enerlink.config import MqttEndpoint
from enerlink.devservices import PROJECT_CONF, mosquitto_config
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.wire import Topics
from tests.support.secured_broker import SERVICE_PASSWORDS, SecuredBroker

TOPICS = Topics()  # production prefix: this broker is the test's own
METER_PASSWORDS = {"METER001": "pw-meter-001", "METER002": "pw-meter-002"}
ACCOUNTS = {
    "enerlink-ingest": SERVICE_PASSWORDS["MQTT_INGEST_PASSWORD"],
    "enerlink-api": SERVICE_PASSWORDS["MQTT_API_PASSWORD"],
    "enerlink-sim": SERVICE_PASSWORDS["MQTT_SIM_PASSWORD"],
    "enerlink-operator": SERVICE_PASSWORDS["MQTT_OPERATOR_PASSWORD"],
    "enerlink-health": SERVICE_PASSWORDS["MQTT_HEALTH_PASSWORD"],
    **METER_PASSWORDS,
}
WAIT_S = 10.0


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredBroker]:
    # not under pytest's tmp folder: its parents are private to root, and the broker drops to mosquitto
    broker = SecuredBroker(root=Path(tempfile.mkdtemp(prefix="enerlink-secured-")))
    for meter, password in METER_PASSWORDS.items():
        broker.script("add-meter.sh", meter, password)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.root, ignore_errors=True)


def _endpoint(broker: SecuredBroker, user: str | None, *, tls: bool = False, ca: Path | None = None) -> str:
    port = broker.tls_port if tls else broker.port
    scheme = "mqtts" if tls else "mqtt"
    auth = f"{user}:{ACCOUNTS[user]}@" if user else ""
    return f"{scheme}://{auth}127.0.0.1:{port}"


def _client(
    broker: SecuredBroker, user: str | None, *, tls: bool = False, will: aiomqtt.Will | None = None
) -> aiomqtt.Client:
    endpoint = MqttEndpoint.parse(
        _endpoint(broker, user, tls=tls), ca_file=str(broker.ca_file) if broker.ca_file else None
    )
    return mqtt_client(endpoint, identifier=f"{user}-{uuid.uuid4().hex[:8]}", will=will)


async def _next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT_S):
        async for message in client.messages:
            return message
    raise AssertionError("subscription ended")


async def test_anonymous_and_wrong_password_are_refused(secured: SecuredBroker) -> None:
    for url in (
        f"mqtt://127.0.0.1:{secured.port}",
        f"mqtt://METER001:wrong@127.0.0.1:{secured.port}",
        f"mqtt://nobody:{METER_PASSWORDS['METER001']}@127.0.0.1:{secured.port}",
    ):
        with pytest.raises(aiomqtt.MqttCodeError) as excinfo:
            async with mqtt_client(MqttEndpoint.parse(url), identifier=f"anon-{uuid.uuid4().hex[:6]}"):
                pass
        assert excinfo.value.rc in (ReasonCode(2, identifier=134), ReasonCode(2, identifier=135)), url


async def test_ingest_receives_a_meters_telemetry(secured: SecuredBroker, data_fixture_bytes: bytes) -> None:
    async with _client(secured, "enerlink-ingest") as ingest:
        await ingest.subscribe(
            [(Topics.shared("ingest", TOPICS.data), 1), (Topics.shared("ingest", TOPICS.status), 1)]
        )
        async with _client(secured, "METER001") as meter:
            await meter.publish(TOPICS.data, data_fixture_bytes, qos=2)
        message = await _next_message(ingest)
    assert message.topic.value == TOPICS.data
    assert message.payload == data_fixture_bytes


async def test_a_meter_cannot_read_other_meters(secured: SecuredBroker, data_fixture_bytes: bytes) -> None:
    """Mosquitto 2.0 grants any subscription and applies the ACL to each message it would deliver:
    METER002 subscribed to everything receives only its own command topic."""
    async with _client(secured, "METER002") as meter2:
        await meter2.subscribe(
            [
                (TOPICS.data, 1),
                (TOPICS.status, 1),
                (TOPICS.all_meters, 1),
                (TOPICS.command("METER001"), 1),
                ("#", 1),
                ("$SYS/#", 1),
            ]
        )
        async with _client(secured, "METER001") as meter1:
            await meter1.publish(TOPICS.data, data_fixture_bytes, qos=2)
            await meter1.publish(TOPICS.status, b"{}", qos=2)
        async with _client(secured, "enerlink-operator") as operator:
            await operator.publish(TOPICS.command("METER001"), b'{"command": "status_now"}', qos=2)
            await operator.publish(TOPICS.command("METER002"), b'{"command": "status_now"}', qos=2)
        first = await _next_message(meter2)
    # the first message METER002 sees is its own command: not METER001's data, status or command
    assert first.topic.value == TOPICS.command("METER002")


async def test_a_meter_publishes_only_its_own_topics(secured: SecuredBroker) -> None:
    forbidden = [
        TOPICS.presence("METER002"),
        TOPICS.command("METER002"),
        TOPICS.command("METER001"),  # it reads its commands, it does not send them
        TOPICS.command_ack("METER002"),
        "enerlink/other",
        "elsewhere/meters/data",
        "$SYS/broker/uptime",
    ]
    async with _client(secured, "enerlink-operator") as operator:
        await operator.subscribe([("#", 1), ("$SYS/broker/uptime", 1)])
        async with _client(secured, "METER001") as meter:
            for topic in forbidden:
                await meter.publish(topic, b"spoofed", qos=1)
            await meter.publish(TOPICS.command_ack("METER001"), b"sentinel", qos=1)
        seen = []
        while True:
            message = await _next_message(operator)
            if message.payload == b"sentinel":
                break
            if message.payload == b"spoofed":
                seen.append(message.topic.value)
    assert seen == []
    assert message.topic.value == TOPICS.command_ack("METER001")


async def test_nobody_else_writes_telemetry(secured: SecuredBroker) -> None:
    async with _client(secured, "enerlink-ingest") as ingest:
        await ingest.subscribe(TOPICS.data, qos=1)
        for user in ("enerlink-ingest", "enerlink-api", "enerlink-operator", "enerlink-health"):
            async with _client(secured, user) as other:
                await other.publish(TOPICS.data, f"forged by {user}".encode(), qos=1)
        async with _client(secured, "enerlink-sim") as sim:
            await sim.publish(TOPICS.data, b"simulated fleet", qos=1)
        message = await _next_message(ingest)
    assert message.payload == b"simulated fleet"


def _paho_will_disconnect(secured: SecuredBroker, will_topic: str) -> None:
    """Connect as METER001 with a last will on ``will_topic``, then leave with MQTT 5 reason code
    0x04 (disconnect with will message) so that the broker publishes the will."""
    paho = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"will-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
    )
    paho.username_pw_set("METER001", METER_PASSWORDS["METER001"])
    paho.will_set(will_topic, b"will", qos=1)
    paho.connect("127.0.0.1", secured.port)
    paho.loop_start()
    try:
        paho.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
    finally:
        paho.loop_stop()


async def test_last_will_only_on_own_presence(secured: SecuredBroker) -> None:
    async with _client(secured, "enerlink-operator") as operator:
        await operator.subscribe(TOPICS.all_presence, qos=1)
        await asyncio.to_thread(_paho_will_disconnect, secured, TOPICS.presence("METER002"))
        await asyncio.to_thread(_paho_will_disconnect, secured, TOPICS.presence("METER001"))
        message = await _next_message(operator)
    assert (message.topic.value, message.payload) == (TOPICS.presence("METER001"), b"will")


async def test_health_account_reads_uptime_only(secured: SecuredBroker) -> None:
    async with _client(secured, "enerlink-health") as health:
        await health.subscribe(TOPICS.all_meters, qos=1)
        async with _client(secured, "enerlink-sim") as sim:
            await sim.publish(TOPICS.data, b"not for health", qos=1)
        await health.subscribe("$SYS/broker/uptime", qos=0)
        message = await _next_message(health)
    assert message.topic.value == "$SYS/broker/uptime"


async def test_tls_listener_with_a_test_ca(secured: SecuredBroker, data_fixture_bytes: bytes) -> None:
    async with _client(secured, "enerlink-ingest") as ingest:
        await ingest.subscribe(TOPICS.data, qos=1)
        async with _client(secured, "METER001", tls=True) as meter:
            await meter.publish(TOPICS.data, data_fixture_bytes, qos=2)
        message = await _next_message(ingest)
    assert message.payload == data_fixture_bytes

    # without the CA the server certificate is not trusted
    untrusted = MqttEndpoint.parse(_endpoint(secured, "METER001", tls=True))
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError)):
        async with mqtt_client(untrusted, identifier="untrusted"):
            pass
    # TLS does not bypass authentication
    anonymous = MqttEndpoint.parse(f"mqtts://127.0.0.1:{secured.tls_port}", ca_file=str(secured.ca_file))
    with pytest.raises(aiomqtt.MqttCodeError):
        async with mqtt_client(anonymous, identifier="anon-tls"):
            pass


async def test_add_meter_then_remove_with_reload(secured: SecuredBroker) -> None:
    result = secured.script("add-meter.sh", "METER003")
    password = result.stdout.split("password: ", 1)[1].strip()
    secured.reload()
    url = f"mqtt://METER003:{password}@127.0.0.1:{secured.port}"
    endpoint = MqttEndpoint.parse(url)
    async with asyncio.timeout(WAIT_S):
        while True:  # SIGHUP is asynchronous: wait until the broker knows the new account
            try:
                async with mqtt_client(endpoint, identifier="m3") as meter:
                    await meter.publish(TOPICS.command_ack("METER003"), b"ok", qos=1)
                break
            except aiomqtt.MqttCodeError:
                await asyncio.sleep(0.1)

    secured.script("add-meter.sh", "-r", "METER003")
    assert "METER003" not in (secured.auth_dir / "acl").read_text()
    secured.reload()
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                async with mqtt_client(endpoint, identifier="m3"):
                    pass
                await asyncio.sleep(0.1)
            except aiomqtt.MqttCodeError:
                break


def test_add_meter_rejects_a_bad_meter_id(secured: SecuredBroker) -> None:
    import subprocess

    for bad in ("bad/id", "a+b", "x" * 65, "enerlink-ingest"):
        with pytest.raises(subprocess.CalledProcessError) as excinfo:
            secured.script("add-meter.sh", bad, "pw")
        assert "not a valid meterId" in excinfo.value.stderr


def test_test_broker_keeps_every_production_limit(tmp_path: Path) -> None:
    """The anonymous local broker keeps each limit of the production file and drops only what is
    instance-local or about authentication."""
    production = [
        line.split()
        for line in PROJECT_CONF.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    local = [line.split() for line in mosquitto_config(port=1234, data_dir=tmp_path).splitlines() if line]
    dropped = {
        "listener",
        "persistence_location",
        "log_dest",
        "allow_anonymous",
        "password_file",
        "acl_file",
        "include_dir",
    }
    for words in production:
        if words[0] not in dropped:
            assert words in local, words
    for key in ("max_inflight_messages", "max_queued_messages", "max_queued_bytes", "persistence"):
        assert any(words[0] == key for words in production), key
    keys = [words[0] for words in local]
    assert keys.count("listener") == 1
    assert ["listener", "1234", "127.0.0.1"] in local
    assert ["allow_anonymous", "true"] in local
    assert not {"password_file", "acl_file", "include_dir", "certfile"} & set(keys)


async def test_fleet_control_topics(secured: SecuredBroker) -> None:
    """The api (and the operator) command the simulated fleet and read its state; a meter can do
    neither."""
    async with _client(secured, "enerlink-sim") as sim:
        await sim.subscribe(TOPICS.fleet_command, qos=1)
        await sim.publish(TOPICS.fleet_state, b"fleet state", qos=1, retain=True)
        async with _client(secured, "METER001") as meter:
            await meter.publish(TOPICS.fleet_command, b"spoofed", qos=1)
            await meter.publish(TOPICS.fleet_state, b"spoofed", qos=1, retain=True)
        for user in ("enerlink-api", "enerlink-operator"):
            async with _client(secured, user) as controller:
                await controller.publish(TOPICS.fleet_command, user.encode(), qos=1)
        commands = [(await _next_message(sim)).payload for _ in range(2)]
    async with _client(secured, "enerlink-api") as api:
        await api.subscribe(TOPICS.fleet_state, qos=1)
        state = await _next_message(api)
    assert commands == [b"enerlink-api", b"enerlink-operator"]
    assert state.payload == b"fleet state"
