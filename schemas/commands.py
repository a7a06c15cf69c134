"""Commands to a meter (``Topics.command``) and its acknowledgements (``Topics.command_ack``).

A command is JSON; unknown keys are ignored by meters, ``id`` is echoed in the ack::

    {"cmd": "scenario", "name": "grid_outage", "duration_s": 600}
    {"cmd": "scenario", "name": "sensor_failure", "sensor": "Solar Input"}
    {"cmd": "clear"}            {"cmd": "clear", "name": "heatwave"}
    {"cmd": "settle"}           {"cmd": "status_now"}

Every command gets an ack: ``{"meterId", "datetime", "cmd", "ok": true, "result": {...}}`` or
``{"ok": false, "error": "..."}``. ``scenario`` and ``clear`` are understood by simulated meters only; a
hardware meter answers them with an error ack. The resend request on the same topic is
:class:`enerlink.schemas.delivery.ResendCommand`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

CommandName = Literal["scenario", "clear", "settle", "status_now"]
COMMAND_NAMES: tuple[CommandName, ...] = ("scenario", "clear", "settle", "status_now")
MAX_DURATION_S = 365 * 86_400
MAX_COMMAND_ID = 128

#: Scenarios a simulated meter can switch on, with what each does (``normal`` ends them all).
SCENARIOS: dict[str, str] = {
    "normal": "no scenario",
    "heatwave": "45 degC ambient (more cooling load, hotter battery and PV cells)",
    "cloudy": "overcast (cloud cover >= 95 %): PV down to ~30 % of clear sky",
    "grid_outage": "no import or export; the battery carries the load until empty, then the load is shed; "
    "surplus PV that cannot be stored is curtailed",
    "hvac_failure": "no air conditioning; the battery's surroundings heat up, its temperature climbs",
    "degradation": "battery ageing x500 (health falls within hours)",
    "thermal_runaway": "battery at 65-75 degC, battery alert, status error",
    "sensor_failure": 'one INA219 (sensor, default "Solar Input") reads nothing: connected: false, '
    "valid: false in its section and inventory",
    "weak_wifi": "RSSI below -80 dBm, MQTT reconnect attempts climb, status warning",
}
SCENARIO_NAMES: tuple[str, ...] = tuple(SCENARIOS)


def _plain_text(value: str) -> str:
    """Text a meter, a log line and a JSON column all take: no control characters, no lone surrogate."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


#: Free text in a command (a scenario's sensor, ...): checked before anything is sent.
PlainText = Annotated[str, AfterValidator(_plain_text)]


class CommandError(ValueError):
    """A command a meter cannot carry out; its message goes into the error ack."""


class Command(BaseModel):
    """One command as it travels on the command topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cmd: CommandName
    name: PlainText | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_DURATION_S)
    sensor: PlainText | None = None
    id: str | None = Field(default=None, max_length=MAX_COMMAND_ID)

    def body(self) -> dict[str, Any]:
        """The JSON object sent (fields left out when unset)."""
        return self.model_dump(exclude_none=True)

    def payload(self) -> bytes:
        return orjson.dumps(self.body())


def parse_command(payload: bytes) -> Command:
    """The command in ``payload``; :class:`CommandError` saying what is wrong otherwise."""
    try:
        return Command.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise CommandError(f"{where}: {first['msg']}") from exc


def command_id_of(payload: bytes) -> str | None:
    """The ``id`` of a payload that may not parse as a command (echoed in its error ack)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_COMMAND_ID else None


class SettleResult(BaseModel):
    """The ``result`` of a ``settle`` ack: what the settlement counters held when they were reset."""

    model_config = ConfigDict(extra="allow", frozen=True)

    settled_import_wh: float | None = None
    settled_export_wh: float | None = None

    @classmethod
    def of(cls, result: object) -> SettleResult:
        """The settled values in an ack's ``result`` (None where missing or not a number)."""
        body = result if isinstance(result, dict) else {}
        values = {
            name: float(body[name])
            for name in ("settled_import_wh", "settled_export_wh")
            if isinstance(body.get(name), int | float) and not isinstance(body.get(name), bool)
        }
        return cls(**values)


class CommandAck(BaseModel):
    """A meter's answer to a command."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    meter_id: str = Field(alias="meterId")
    datetime: str
    cmd: str | None
    ok: bool
    id: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def payload(self) -> bytes:
        body = self.model_dump(by_alias=True, exclude_none=True)
        body.setdefault("cmd", None)  # present even when the command could not be read
        return orjson.dumps(body)


def make_ack(
    meter_id: str,
    *,
    at: str,
    cmd: str | None,
    command_id: str | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> CommandAck:
    """The ack of one command: ``result`` (``{}`` when None) on success, ``error`` otherwise."""
    return CommandAck(
        meterId=meter_id,
        datetime=at,
        cmd=cmd,
        ok=error is None,
        id=command_id,
        result=(result or {}) if error is None else None,
        error=error,
    )
