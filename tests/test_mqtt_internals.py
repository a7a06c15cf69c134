"""The private aiomqtt/paho names the delivery machinery relies on still exist in the installed
versions, and no module outside enerlink/mqtt_internals.py reaches into them."""

from __future__ import annotations

import re

import aiomqtt
import paho.mqtt.client as paho

from enerlink import mqtt_internals
from tests.support.services import ROOT

PACKAGES = ("enerlink", "edge", "ingest", "api", "aggregator", "archiver", "hass")
# attribute names private to aiomqtt/paho that no other module of the project may use
FORBIDDEN = re.compile(
    r"(?<!self)\.(_out_messages|_in_packet|_handle_[a-z]+|_packet_queue|_sock_recv|_sock\b|_protocol\b|"
    r"_last_bytes_received|_call_socket_[a-z_]+|_clean_start|_properties|_disconnected|"
    r"_client\._client|_mqttv5_first_connect|_out_message_mutex)"
)
MARK = re.compile(r"# private: (aiomqtt|paho) ([A-Za-z_., ]+)")


async def test_every_private_name_exists_in_the_installed_versions() -> None:
    missing = await mqtt_internals.missing_names()
    assert not missing, (
        f"the installed aiomqtt/paho-mqtt no longer have {', '.join(missing)}: "
        "enerlink/mqtt_internals.py must be adapted before this version is used"
    )


async def test_the_checked_objects_are_the_real_classes() -> None:
    client = aiomqtt.Client("127.0.0.1", identifier="introspection")
    inner = mqtt_internals.paho_client(client)
    assert type(inner) is paho.Client
    # names of the public API used instead of private ones
    for name in ("manual_ack_set", "ack", "on_socket_open", "on_connect", "protocol", "socket"):
        assert hasattr(inner, name), f"paho Client.{name} is gone"
    assert client.identifier == "introspection"


def test_every_marked_access_is_listed() -> None:
    source = (ROOT / "enerlink" / "mqtt_internals.py").read_text(encoding="utf-8")
    listed = {(library, name) for library, _owner, name in mqtt_internals.PRIVATE_NAMES}
    marked = set()
    for library, names in MARK.findall(source):
        for name in re.split(r"[., ]+", names):
            if name.startswith("_") or name.startswith("mqtt_ms_") or name == "state":
                marked.add((library, name))
    assert marked, "no '# private:' marks found"
    assert marked <= listed, f"marked but not in PRIVATE_NAMES: {sorted(marked - listed)}"
    assert listed <= marked, f"listed but never marked: {sorted(listed - marked)}"


def test_no_private_access_outside_the_internals_module() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "mqtt_internals.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if FORBIDDEN.search(code):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private aiomqtt/paho access outside enerlink/mqtt_internals.py:\n" + "\n".join(
        offenders
    )
