"""The message contract: what EnerLink firmware publishes, as pydantic models.

Field meanings follow the firmware's payload specification (seeds/003): voltage in V, current
in mA, power in mW, energy in Wh, SOC in %, charge rate in %/h, uptime in ms, heap in bytes,
RSSI in dBm. The firmware's own messages, ``schemas/examples/meter-data.json`` and
``meter-status.json``, validate unchanged.

Rules beyond the types:

* ``meterId`` is 1-64 characters of ``[A-Za-z0-9_.-]`` (it becomes part of Redis keys and file names);
* ``datetime`` is ISO 8601 with a timezone, in the form Python's ``datetime.fromisoformat`` reads (as
  every reader of a stored message does: ``Z`` in capitals), not before 1970-01-01T00:00:00Z;
* ``seq``, when present, is an integer from 0 to 10^14 - 1;
* numbers are finite (no NaN or Infinity) and within physical bounds (energy counters never
  negative, SOC within 0-100, RSSI within -127..0 dBm ...);
* types are strict: ``"4.2"`` is not a number and ``1`` is not a boolean;
* unknown fields are accepted and kept, at every level: newer firmware adds fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

#: The earliest datetime a message may carry: a meter's clock counts from the Unix epoch; an earlier
#: one is a clock never set (and some, like year 1 at +01:00, have no UTC value at all).
EARLIEST_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
#: The largest ``seq``: stays exact through Redis' Lua (doubles; JSON numbers written with 14 digits).
MAX_SEQ = 10**14 - 1


def _message_datetime(value: object) -> object:
    """A message's datetime as every reader of a stored message parses it (``datetime.fromisoformat``,
    which pydantic's parser is more lenient than), from the Unix epoch on."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 datetime (e.g. 2025-10-26T04:27:10Z)") from None
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            early = value < EARLIEST_DATETIME
        except OverflowError:
            early = True
        if early:
            raise ValueError("before 1970-01-01T00:00:00Z: the meter's clock is not set")
    return value


MessageDatetime = Annotated[AwareDatetime, BeforeValidator(_message_datetime)]

METER_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

MeterId = Annotated[str, Field(pattern=METER_ID_PATTERN, min_length=1, max_length=64)]
Volts = Annotated[float, Field(ge=0, le=1_000)]
MilliAmps = Annotated[float, Field(ge=-1e6, le=1e6)]
MilliWatts = Annotated[float, Field(ge=-1e9, le=1e9)]
Counter = Annotated[float, Field(ge=0, le=1e12, description="energy counter, Wh, never negative")]
SignedEnergy = Annotated[float, Field(ge=-1e12, le=1e12, description="net energy, Wh")]
Percent = Annotated[float, Field(ge=0, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)


class Battery(_Strict):
    voltage: Volts
    soc: Percent
    charge_rate: Annotated[float, Field(ge=-1_000, le=1_000, description="%/h, + charging")]
    is_charging: bool
    estimated_capacity: Annotated[float, Field(ge=0, le=1e9, description="mAh")]
    alert_threshold: Annotated[int, Field(ge=0, le=100)]
    alert_active: bool
    connected: bool
    valid: bool


class _Channel(_Strict):
    """One INA219 channel: instantaneous V, mA, mW and energy counters in Wh."""

    voltage: Volts
    current: MilliAmps
    power: MilliWatts
    daily_energy: Counter
    total_energy: Counter


class GridChannel(_Channel):
    settlement_energy: Counter
    active: bool


class LoadChannel(_Channel):
    pass


class SolarChannel(_Channel):
    generating: bool


class NetSolar(_Strict):
    solar_power: MilliWatts
    load_power: MilliWatts
    net_power: MilliWatts
    solar_daily: Counter
    load_daily: Counter
    net_daily: SignedEnergy
    solar_total: Counter
    load_total: Counter
    net_total: SignedEnergy
    status: Literal["surplus", "deficit", "balanced"]


class NetGrid(_Strict):
    export_power: MilliWatts
    import_power: MilliWatts
    net_power: MilliWatts
    export_daily: Counter
    import_daily: Counter
    net_daily: SignedEnergy
    export_total: Counter
    import_total: Counter
    net_total: SignedEnergy
    status: Literal["exporting", "importing", "idle"]


class MeterData(_Strict):
    battery: Battery
    export: GridChannel
    import_: GridChannel = Field(alias="import")
    load_smart_mtr: LoadChannel
    load_home: LoadChannel
    solar_input: SolarChannel
    solar_output: SolarChannel
    net_solar: NetSolar
    net_grid: NetGrid

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False, frozen=True, populate_by_name=True
    )


class DataMessage(_Strict):
    """``{prefix}/meters/data``: measurements of every subsystem, every 5-10 s."""

    meterId: MeterId
    datetime: MessageDatetime
    units: dict[str, str]
    data: MeterData
    seq: (
        Annotated[int, Field(ge=0, le=MAX_SEQ, description="per-meter sequence number (edge >= 0.1)")] | None
    ) = None


class Wifi(_Strict):
    connected: bool
    rssi: Annotated[int, Field(ge=-127, le=0)]
    ip: Annotated[str, Field(max_length=64)]


class GridMode(_Strict):
    mode: Literal["off", "import", "export"]
    importing: bool
    exporting: bool


class MqttState(_Strict):
    connected: bool
    attempts: Annotated[int, Field(ge=0)]
    qos: Annotated[int, Field(ge=0, le=2)]


class SystemState(_Strict):
    free_heap: Annotated[int, Field(ge=0)]
    uptime: Annotated[int, Field(ge=0, description="ms since boot")]
    status: Literal["alive", "warning", "error"]


class SensorEntry(_Strict):
    address: Annotated[str, Field(pattern=r"^0x[0-9A-Fa-f]{2}$")]
    name: Annotated[str, Field(max_length=64)]
    connected: bool


class Sensors(_Strict):
    total_count: Annotated[int, Field(ge=0)]
    device_role: Literal["Prosumer", "Consumer"]
    has_solar: bool
    ina219: list[SensorEntry]
    max17048: list[SensorEntry]
    ina219_count: Annotated[int, Field(ge=0)]
    max17048_count: Annotated[int, Field(ge=0)]


class StatusData(_Strict):
    wifi: Wifi
    grid: GridMode
    mqtt: MqttState
    system: SystemState
    sensors: Sensors


class StatusMessage(_Strict):
    """``{prefix}/meters/status``: connectivity, system health and sensor inventory, every 30-60 s."""

    meterId: MeterId
    datetime: MessageDatetime
    units: dict[str, str]
    data: StatusData


def epoch_ms(moment: datetime) -> int:
    """A message's datetime as the integer epoch milliseconds used for sorted-set scores."""
    return int(moment.timestamp() * 1000)


DATA_UNITS: dict[str, str] = {
    "datetime": "ISO8601",
    "voltage": "V",
    "current": "mA",
    "power": "mW",
    "energy": "Wh",
    "battery_soc": "%",
    "battery_charge_rate": "%/hr",
}
STATUS_UNITS: dict[str, str] = {"datetime": "ISO8601", "uptime": "ms", "free_heap": "bytes", "rssi": "dBm"}
