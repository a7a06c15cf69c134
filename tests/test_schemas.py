"""The message contract: firmware fixtures validate unchanged, JSON Schema files match the models,
and bad messages are rejected with a reason."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from enerlink.schemas.commands import SCENARIOS, CommandError, SettleResult, command_id_of, parse_command
from enerlink.schemas.fields import BOOL_FIELDS, DATA_FIELDS, ENUM_FIELDS, NUMERIC_FIELDS
from enerlink.schemas.jsonschema import JSON_DIR, SCHEMA_FILES, render
from enerlink.schemas.telemetry import DataMessage, StatusMessage
from enerlink.schemas.wire import Topics
from tests.conftest import load_fixture


def test_fixtures_validate_unchanged(data_fixture_bytes: bytes, status_fixture_bytes: bytes) -> None:
    data = DataMessage.model_validate_json(data_fixture_bytes)
    status = StatusMessage.model_validate_json(status_fixture_bytes)
    assert data.meterId == "METER001"
    assert data.data.battery.soc == pytest.approx(86.63281)
    assert data.data.import_.daily_energy == pytest.approx(16.69483)
    assert data.data.net_grid.net_total == pytest.approx(-12.6692)
    assert data.seq is None
    assert status.data.system.free_heap == 214292
    assert [s.address for s in status.data.sensors.ina219] == ["0x40", "0x41", "0x42", "0x43", "0x44", "0x45"]
    # round trip keeps the firmware's spelling ("import", not "import_")
    assert json.loads(data.model_dump_json(by_alias=True))["data"]["import"]["power"] == 480.2


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_committed_json_schema_matches_models(name: str) -> None:
    committed = (JSON_DIR / name).read_text(encoding="utf-8")
    assert committed == render(SCHEMA_FILES[name]), f"run `make schemas`: {name} drifted from the models"


@pytest.mark.parametrize(
    ("schema", "fixture"),
    [("meter-data.schema.json", "meter-data.json"), ("meter-status.schema.json", "meter-status.json")],
)
def test_fixtures_validate_against_json_schema(schema: str, fixture: str) -> None:
    jsonschema.validate(load_fixture(fixture), json.loads((JSON_DIR / schema).read_text()))


def _mutate(path: list[str], value: Any) -> bytes:
    message = load_fixture("meter-data.json")
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(message).encode()


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["meterId"], "", "meterId"),
        (["meterId"], "METER:1", "meterId"),
        (["meterId"], "METER*", "meterId"),
        (["meterId"], "METER 1", "meterId"),
        (["meterId"], "M" * 1024, "meterId"),
        (["meterId"], 42, "meterId"),
        (["datetime"], "yesterday", "datetime"),
        (["datetime"], "2025-10-26T04:27:10", "datetime"),  # no timezone
        (["data", "battery", "soc"], 100.5, "soc"),
        (["data", "battery", "soc"], -1, "soc"),
        (["data", "battery", "soc"], "86.6", "soc"),
        (["data", "import", "daily_energy"], -0.1, "daily_energy"),
        (["data", "export", "total_energy"], _DELETE, "total_energy"),
        (["data", "export", "active"], 1, "active"),
        (["data", "net_grid", "status"], "selling", "status"),
        (["data", "solar_input"], _DELETE, "solar_input"),
    ],
)
def test_bad_data_messages_are_rejected_with_the_field_named(
    path: list[str], value: Any, expected: str
) -> None:
    with pytest.raises(ValidationError) as info:
        DataMessage.model_validate_json(_mutate(path, value))
    assert expected in str(info.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(data_fixture_bytes: bytes, token: str) -> None:
    payload = data_fixture_bytes.replace(b'"power": 480.2', f'"power": {token}'.encode())
    assert payload != data_fixture_bytes
    with pytest.raises(ValidationError):
        DataMessage.model_validate_json(payload)


def test_unknown_fields_are_accepted_and_kept() -> None:
    message = load_fixture("meter-data.json")
    message["firmware"] = "2.1.0"
    message["data"]["battery"]["temperature"] = 31.5
    message["seq"] = 7
    parsed = DataMessage.model_validate_json(json.dumps(message))
    dumped = json.loads(parsed.model_dump_json(by_alias=True))
    assert dumped["firmware"] == "2.1.0"
    assert dumped["data"]["battery"]["temperature"] == 31.5
    assert parsed.seq == 7


def test_field_catalogue_covers_every_data_field() -> None:
    fixture = load_fixture("meter-data.json")["data"]
    flattened = {f"{sub}_{name}" for sub, fields in fixture.items() for name in fields}
    assert {f.column for f in DATA_FIELDS} == flattened
    assert {"battery_soc", "import_power", "net_grid_net_power"} <= {f.column for f in NUMERIC_FIELDS}
    assert "import_active" in {f.column for f in BOOL_FIELDS}
    assert {f.column for f in ENUM_FIELDS} == {"net_solar_status", "net_grid_status"}
    counters = {f.column for f in NUMERIC_FIELDS if f.kind == "counter"}
    assert {"import_daily_energy", "export_settlement_energy", "solar_output_total_energy"} <= counters
    assert "net_grid_net_total" not in counters  # signed, not a counter


def test_meter_topics_read_back_only_their_own_kind_and_prefix() -> None:
    topics = Topics("t1/enerlink")
    assert topics.meter_of(topics.command("M1"), "cmd") == "M1"
    assert topics.meter_of(topics.command_ack("M1"), "cmd/ack") == "M1"
    assert topics.meter_of(topics.command_ack("M1"), "cmd") is None
    assert topics.meter_of(topics.presence("M-2"), "presence") == "M-2"
    assert topics.meter_of(topics.confirm("M3"), "confirm") == "M3"
    assert topics.meter_of(Topics("other").confirm("M3"), "confirm") is None
    assert topics.meter_of("t1/enerlink/meters/a/b/presence", "presence") is None  # an id spans levels
    assert topics.meter_of("t1/enerlink/meters//presence", "presence") is None


def test_commands_parse_to_the_contract_or_say_what_is_wrong() -> None:
    command = parse_command(b'{"cmd": "scenario", "name": "cloudy", "duration_s": 60, "extra": 1}')
    assert command.body() == {"cmd": "scenario", "name": "cloudy", "duration_s": 60}
    with pytest.raises(CommandError, match="cmd: Input should be"):
        parse_command(b'{"cmd": "format_disk"}')
    with pytest.raises(CommandError, match="id: String should have at most 128"):
        parse_command(orjson.dumps({"cmd": "settle", "id": "x" * 129}))
    assert command_id_of(b'{"cmd": "nope", "id": "c9"}') == "c9"
    assert command_id_of(b"[1]") is None and command_id_of(b"{") is None
    assert next(iter(SCENARIOS)) == "normal" and all(SCENARIOS.values())
    assert SettleResult.of({"settled_import_wh": 1, "settled_export_wh": True}) == SettleResult(
        settled_import_wh=1.0
    )
