from __future__ import annotations

import re

import pytest

from enerlink.config import CommonSettings, ConfigError, Env, MqttEndpoint


def test_defaults_are_local() -> None:
    common = CommonSettings.from_env(Env({}))
    assert (common.mqtt.host, common.mqtt.port, common.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert common.topics.data == "enerlink/meters/data"
    assert common.keys.latest_data == "telemetry:latest:data"
    assert common.keys.timeseries("METER001") == "telemetry:timeseries:METER001"


def test_mqtt_url_with_credentials_and_tls() -> None:
    endpoint = MqttEndpoint.parse("mqtts://ingest:s%40cret@broker.example:8884")
    assert (endpoint.username, endpoint.password, endpoint.tls, endpoint.port) == (
        "ingest",
        "s@cret",
        True,
        8884,
    )
    assert "s@cret" not in repr(endpoint)
    assert MqttEndpoint.parse("mqtts://broker").port == 8883


def test_prefixes_isolate_tenants() -> None:
    common = CommonSettings.from_env(Env({"ENERLINK_TOPIC_PREFIX": "acme", "ENERLINK_KEY_PREFIX": "acme:t"}))
    assert common.topics.status == "acme/meters/status"
    assert common.keys.meters == "acme:t:meters"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENERLINK_MQTT_URL": "http://x"}, "mqtt://"),
    ],
)
def test_bad_configuration_names_the_problem(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommonSettings.from_env(Env(env))


def test_typed_getters_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"ENERLINK_X=.*integer"):
        Env({"ENERLINK_X": "ten"}).int("X", 1)
    with pytest.raises(ConfigError, match="ENERLINK_Y"):
        Env({"ENERLINK_Y": "maybe"}).bool("Y", False)
    assert Env({"ENERLINK_Y": "on"}).bool("Y", False) is True


def test_env_example_documents_every_variable_the_code_reads() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    read = set()
    for package in ("enerlink", "ingest", "aggregator", "archiver", "api", "edge", "hass"):
        for path in (root / package).rglob("*.py"):
            read |= set(re.findall(r'env\.\w+\("([A-Z0-9_]+)"', path.read_text(encoding="utf-8")))
    listed = set(re.findall(r"^#?\s*ENERLINK_([A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read, "no settings found: the pattern is stale"
    assert read - listed == set(), "add these to .env.example"


def test_settings_table_in_the_docs_matches_env_example() -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("settings_table", root / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    example = (root / ".env.example").read_text(encoding="utf-8")
    doc = (root / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert module.table(example) in doc, "run python scripts/settings_table.py --write"
    documented = {name for name, _, _ in module.rows(example)}
    listed = set(re.findall(r"^#?\s*(ENERLINK_[A-Z0-9_]+)=", example, re.M))
    assert listed == documented, f"give these a meaning in .env.example: {listed - documented}"
