"""What Home Assistant reads: one retained discovery config per sensor and one state message per meter.

Format: Home Assistant's MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery),
one config per entity on ``<discovery_prefix>/sensor/<node_id>/<object_id>/config``, retained, with the
MQTT sensor's options (https://www.home-assistant.io/integrations/sensor.mqtt/): ``state_topic`` +
``value_template`` (rendered with Jinja2, ``value_json`` being the parsed payload), ``device_class``,
``state_class``, ``unit_of_measurement``, ``unique_id``, ``device`` (grouping a meter's sensors into
one device) and an ``availability`` list. Per-entity configs, not the newer device-based discovery
(``<prefix>/device/<node_id>/config``, Home Assistant 2024.12+), so releases before that read them
too (``origin`` and ``suggested_display_precision`` need a 2023 release or newer); keys are spelt
out, not abbreviated. One entity is one retained message: deleting it (an empty retained payload on
its topic) removes that sensor alone.

Every sensor of a meter reads the same compact state message on ``Topics.ha_state(meter)`` (the data
topic is shared by all meters, with the meter id inside the JSON, so it cannot be a state topic):

* energy, kWh with 8 decimals (the counters' 0.01 mWh), ``device_class: energy``,
  ``state_class: total_increasing``, lifetime sums that never decrease (:mod:`enerlink.hass.energy`): grid
  import and export, solar production, battery charge and discharge, home consumption (both loads),
  the sensors the Energy dashboard asks for;
* power in W (``device_class: power``), battery SOC in % (``battery``), battery and grid voltage in V
  (``voltage``), all ``state_class: measurement``; ``null`` (rendered ``None``, which Home Assistant
  shows as unknown) when the battery gauge is disconnected or invalid.

Availability (``availability_mode: all``): the meter's retained presence (``{"online": true}``, last
will ``{"online": false}``, published by the edge) and the bridge's own retained ``online`` / last will
``offline`` on ``Topics.ha_bridge``, so the values go unavailable when either the meter or the bridge
that computes them is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

import enerlink
from enerlink.hass.energy import BATTERY_CHARGE, BATTERY_DISCHARGE, MeterCounters
from enerlink.schemas.telemetry import MeterData
from enerlink.schemas.wire import HaDiscovery, Topics

ONLINE = "online"
OFFLINE = "offline"
PRESENCE_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}"
ENERGY_DECIMALS = 8  # kWh: 0.01 mWh, the resolution of the counters (Wh with 5 decimals)


@dataclass(frozen=True, slots=True)
class Sensor:
    key: str  # field of the state message and object id of the entity
    name: str
    device_class: str
    state_class: str
    unit: str
    precision: int


_ENERGY = ("energy", "total_increasing", "kWh", 3)
_POWER = ("power", "measurement", "W", 1)
SENSORS: tuple[Sensor, ...] = (
    Sensor("grid_import", "Grid import", *_ENERGY),
    Sensor("grid_export", "Grid export", *_ENERGY),
    Sensor("solar_production", "Solar production", *_ENERGY),
    Sensor("battery_charge", "Battery charge", *_ENERGY),
    Sensor("battery_discharge", "Battery discharge", *_ENERGY),
    Sensor("home_consumption", "Home consumption", *_ENERGY),
    Sensor("grid_import_power", "Grid import power", *_POWER),
    Sensor("grid_export_power", "Grid export power", *_POWER),
    Sensor("solar_power", "Solar power", *_POWER),
    Sensor("home_power", "Home power", *_POWER),
    Sensor("battery_power", "Battery power", *_POWER),
    Sensor("battery_soc", "Battery", "battery", "measurement", "%", 1),
    Sensor("battery_voltage", "Battery voltage", "voltage", "measurement", "V", 2),
    Sensor("grid_voltage", "Grid voltage", "voltage", "measurement", "V", 2),
)


def node_id(meter_id: str) -> str:
    """The discovery topic's node id: meter ids allow ``.``, node ids only ``[A-Za-z0-9_-]``.

    ``_`` is written ``__`` and ``.`` is written ``_d``, so distinct meters never share a node id.
    """
    return "enerlink_" + meter_id.replace("_", "__").replace(".", "_d")


def unique_id(meter_id: str, sensor: Sensor) -> str:
    return f"enerlink_{meter_id}_{sensor.key}"


def device_identifier(meter_id: str) -> str:
    return f"enerlink_{meter_id}"


def configs(meter_id: str, *, topics: Topics, discovery: HaDiscovery) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of every retained discovery config of one meter."""
    device = {
        "identifiers": [device_identifier(meter_id)],
        "name": f"EnerLink {meter_id}",
        "manufacturer": "EnerLink",
        "model": "EnerLink smart energy meter",
    }
    availability = [
        {
            "topic": topics.presence(meter_id),
            "value_template": PRESENCE_TEMPLATE,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
        },
        {"topic": topics.ha_bridge, "payload_available": ONLINE, "payload_not_available": OFFLINE},
    ]
    origin = {"name": "EnerLink", "sw_version": enerlink.__version__}
    out = []
    for sensor in SENSORS:
        config = {
            "name": sensor.name,
            "unique_id": unique_id(meter_id, sensor),
            "state_topic": topics.ha_state(meter_id),
            "value_template": f"{{{{ value_json.{sensor.key} }}}}",
            "device_class": sensor.device_class,
            "state_class": sensor.state_class,
            "unit_of_measurement": sensor.unit,
            "suggested_display_precision": sensor.precision,
            "availability": availability,
            "availability_mode": "all",
            "qos": 1,
            "device": device,
            "origin": origin,
        }
        topic = discovery.config("sensor", node_id(meter_id), sensor.key)
        out.append((topic, orjson.dumps(config)))
    return out


def state(data: MeterData, counters: MeterCounters, *, at: str) -> bytes:
    """The state message of one meter: lifetime kWh from ``counters``, the rest from ``data``."""
    life = counters.lifetime

    def kwh(wh: float) -> float:
        return round(wh / 1000.0, ENERGY_DECIMALS)

    def watts(mw: float) -> float:
        return round(mw / 1000.0, 4)  # 0.1 mW

    loads_mw = data.load_smart_mtr.power + data.load_home.power
    battery_mw = data.solar_output.power + data.import_.power - data.export.power - loads_mw
    gauge = data.battery.connected and data.battery.valid
    body = {
        "grid_import": kwh(life["import"]),
        "grid_export": kwh(life["export"]),
        "solar_production": kwh(life["solar_output"]),
        "battery_charge": kwh(life[BATTERY_CHARGE]),
        "battery_discharge": kwh(life[BATTERY_DISCHARGE]),
        "home_consumption": kwh(life["load_smart_mtr"] + life["load_home"]),
        "grid_import_power": watts(data.import_.power),
        "grid_export_power": watts(data.export.power),
        "solar_power": watts(data.solar_output.power),
        "home_power": watts(loads_mw),
        "battery_power": watts(battery_mw),
        "battery_soc": round(data.battery.soc, 2) if gauge else None,
        "battery_voltage": round(data.battery.voltage, 3) if gauge else None,
        "grid_voltage": round(data.import_.voltage, 3),
        "at": at,
    }
    return orjson.dumps(body)
