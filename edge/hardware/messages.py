"""Data and status messages of a hardware meter, in the firmware's shape (enerlink.schemas.telemetry).

Per INA219 section: the interval's mean voltage (V), current (mA) and power (mW), the counters
(Wh), and an extra ``stats`` object (sample count, min/max of each, overflow) so data quality can
be judged. A sensor that is down says ``connected: false, valid: false`` with zeros. ``net_solar``
and ``net_grid`` are computed as the firmware does: solar = solar_output, load = load_smart_mtr +
load_home, net = solar - load; grid net = export - import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from enerlink.edge.counters import Counters
from enerlink.edge.hardware.sampler import Interval
from enerlink.edge.hardware.sensors import SensorArray, SensorEvent
from enerlink.schemas.telemetry import DATA_UNITS, STATUS_UNITS

SOLAR_DEADBAND_MW = 20.0
GRID_DEADBAND_MW = 5.0
GENERATING_MW = 1.0
INA_ROLES = ("export", "import", "load_smart_mtr", "load_home", "solar_input", "solar_output")


def iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch_s), dt.UTC).isoformat().replace("+00:00", "Z")


def _r(value: float, digits: int = 5) -> float:
    return round(value, digits) + 0.0


def data_message(
    *,
    meter_id: str,
    when: float,
    interval: Interval,
    sensors: SensorArray,
    counters: Counters,
    seq: int,
    alert_threshold: int = 10,
    battery_capacity_mah: float = 2000.0,
) -> dict[str, Any]:
    state = counters.state
    sections: dict[str, dict[str, Any]] = {}
    power: dict[str, float] = dict.fromkeys(INA_ROLES, 0.0)
    for name, summary in interval.channels.items():
        role = sensors.sensors[name].spec.role
        section: dict[str, Any] = {
            "voltage": _r(summary.voltage, 4),
            "current": _r(summary.current, 4),
            "power": _r(summary.power, 4),
            "daily_energy": _r(state.daily.get(role, 0.0)),
            "total_energy": _r(state.total.get(role, 0.0)),
            "stats": summary.stats(),
        }
        if not summary.valid or not sensors.sensors[name].connected:
            section.update(connected=False, valid=False)
        sections[role] = section
        power[role] = summary.power
    for role in INA_ROLES:
        sections.setdefault(
            role,
            {
                "voltage": 0.0,
                "current": 0.0,
                "power": 0.0,
                "daily_energy": _r(state.daily.get(role, 0.0)),
                "total_energy": _r(state.total.get(role, 0.0)),
                "connected": False,
                "valid": False,
            },
        )
    for role in ("export", "import"):
        sections[role]["settlement_energy"] = _r(state.settlement.get(role, 0.0))
        sections[role]["active"] = power[role] > GRID_DEADBAND_MW
    for role in ("solar_input", "solar_output"):
        sections[role]["generating"] = power[role] > GENERATING_MW

    daily, total = state.daily, state.total
    load_p = _r(power["load_smart_mtr"] + power["load_home"], 4)
    net_p = _r(power["solar_output"] - load_p, 4)
    load_daily = _r(daily["load_smart_mtr"] + daily["load_home"])
    load_total = _r(total["load_smart_mtr"] + total["load_home"])
    solar_status = "balanced" if abs(net_p) <= SOLAR_DEADBAND_MW else ("surplus" if net_p > 0 else "deficit")
    grid_net = _r(power["export"] - power["import"], 4)
    if power["export"] > GRID_DEADBAND_MW and grid_net > 0:
        grid_status = "exporting"
    elif power["import"] > GRID_DEADBAND_MW and grid_net < 0:
        grid_status = "importing"
    else:
        grid_status = "idle"

    data: dict[str, Any] = {"battery": _battery(interval, alert_threshold, battery_capacity_mah)}
    data.update({role: sections[role] for role in INA_ROLES})
    data["net_solar"] = {
        "solar_power": _r(power["solar_output"], 4),
        "load_power": load_p,
        "net_power": net_p,
        "solar_daily": _r(daily["solar_output"]),
        "load_daily": load_daily,
        "net_daily": _r(daily["solar_output"] - load_daily),
        "solar_total": _r(total["solar_output"]),
        "load_total": load_total,
        "net_total": _r(total["solar_output"] - load_total),
        "status": solar_status,
    }
    data["net_grid"] = {
        "export_power": _r(power["export"], 4),
        "import_power": _r(power["import"], 4),
        "net_power": grid_net,
        "export_daily": _r(daily["export"]),
        "import_daily": _r(daily["import"]),
        "net_daily": _r(daily["export"] - daily["import"]),
        "export_total": _r(total["export"]),
        "import_total": _r(total["import"]),
        "net_total": _r(total["export"] - total["import"]),
        "status": grid_status,
    }
    return {"meterId": meter_id, "datetime": iso(when), "units": DATA_UNITS, "seq": seq, "data": data}


def _battery(interval: Interval, alert_threshold: int, capacity_mah: float) -> dict[str, Any]:
    gauge = next(iter(interval.gauges.values()), None) if interval.gauges else None
    if gauge is None:
        return {
            "voltage": 0.0,
            "soc": 0.0,
            "charge_rate": 0.0,
            "is_charging": False,
            "estimated_capacity": 0.0,
            "alert_threshold": alert_threshold,
            "alert_active": False,
            "connected": False,
            "valid": False,
        }
    return {
        "voltage": _r(gauge.voltage_v),
        "soc": _r(gauge.soc_pct),
        "charge_rate": _r(gauge.charge_rate, 3),
        "is_charging": gauge.charge_rate > 0,
        "estimated_capacity": _r(capacity_mah * gauge.soc_pct / 100, 3),
        "alert_threshold": alert_threshold,
        "alert_active": gauge.soc_pct < alert_threshold,
        "connected": True,
        "valid": True,
    }


def status_message(
    *,
    meter_id: str,
    when: float,
    sensors: SensorArray,
    os_status: Any,
    mqtt: dict[str, Any],
    grid_power: tuple[float, float],
    health: str,
    events: list[SensorEvent],
) -> dict[str, Any]:
    export_mw, import_mw = grid_power
    exporting, importing = export_mw > GRID_DEADBAND_MW, import_mw > GRID_DEADBAND_MW
    inventory = sensors.inventory()
    solar = [s for s in sensors.sensors.values() if s.spec.role in ("solar_input", "solar_output")]
    message: dict[str, Any] = {
        "meterId": meter_id,
        "datetime": iso(when),
        "units": STATUS_UNITS,
        "data": {
            "wifi": os_status.wifi(),
            "grid": {
                "mode": "export" if exporting else "import" if importing else "off",
                "importing": importing,
                "exporting": exporting,
            },
            "mqtt": mqtt,
            "system": {
                "free_heap": os_status.free_heap or 0,
                "uptime": os_status.uptime_ms or 0,
                "status": health,
            },
            "sensors": {
                "total_count": inventory["total_count"],
                "device_role": "Prosumer" if solar else "Consumer",
                "has_solar": any(s.connected for s in solar),
                "ina219": inventory["ina219"],
                "max17048": inventory["max17048"],
                "ina219_count": inventory["ina219_count"],
                "max17048_count": inventory["max17048_count"],
            },
        },
    }
    if events:
        message["data"]["events"] = [
            {
                "event": e.kind,
                "sensor": e.name,
                "address": f"0x{e.address:02x}",
                "reason": e.reason,
                "datetime": iso(e.at),
            }
            for e in events
        ]
    return message
