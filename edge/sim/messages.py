"""Firmware-shaped messages from a simulation step (``enerlink.schemas.telemetry`` DataMessage/StatusMessage).

Values are rounded the way the firmware reports them; power is recomputed from the rounded voltage
and current so P = V x I holds in every message. A failed INA219's section carries
``connected: false, valid: false`` (extra keys, allowed by the contract) and zeros. Battery
sections carry extra keys ``temperature`` (degC), ``health`` (%), ``cycles`` and ``alerts``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np

from enerlink.edge.sim.engine import (
    EXPORT,
    IMPORT,
    LOAD_HOME,
    LOAD_SMART,
    SOLAR_IN,
    SOLAR_OUT,
    Simulator,
    Step,
)
from enerlink.edge.sim.scenarios import CHANNELS
from enerlink.schemas.telemetry import DATA_UNITS, STATUS_UNITS

SOLAR_DEADBAND_MW = {True: 20.0, False: 50_000.0}  # lab, home: |net| below this is "balanced"
GRID_DEADBAND_MW = {True: 5.0, False: 10_000.0}
GENERATING_MW = {True: 1.0, False: 5_000.0}
RUNAWAY_ALERT_C = 60.0


def iso(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(round(epoch_s, 3), dt.UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _r(value: float, digits: int = 5) -> float:
    return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


_Row = tuple[list[float], list[float], list[float], list[float], list[float], list[bool]]


def _section(row: _Row, k: int) -> dict[str, Any]:
    """One INA219 channel: V, mA, mW and its energy counters; a failed sensor says so."""
    volts, current, power, daily, total, ok = row
    section: dict[str, Any] = {
        "voltage": volts[k],
        "current": current[k],
        "power": power[k],
        "daily_energy": daily[k],
        "total_energy": total[k],
    }
    if not ok[k]:
        section["connected"] = False
        section["valid"] = False
    return section


def data_messages(sim: Simulator, step: Step, *, seqs: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """One data message dict per meter, in fleet order."""
    n = sim.size
    volts = np.round(step.voltage, 3)
    current = np.where(volts > 0, step.power_w * 1000.0 / np.where(volts > 0, volts, 1.0), 0.0)
    current = np.round(current, 4)
    power = np.round(volts * current, 4)  # mW = V x mA
    v_l, i_l, p_l = volts.tolist(), current.tolist(), power.tolist()
    daily = np.round(sim.counters.daily, 5).tolist()
    total = np.round(sim.counters.total, 5).tolist()
    settle = np.round(sim.counters.settlement, 5).tolist()
    bat = sim.battery
    soc = np.round(bat.soc, 5).tolist()
    cap_wh = bat.capacity_wh
    rate = np.round(step.battery_net_w / cap_wh * 100.0, 4).tolist()
    b_volt = np.round(step.battery_voltage, 5).tolist()
    est_mah = np.round(cap_wh / bat.nominal_v * 1000.0, 3).tolist()
    temp = np.round(bat.temp_c, 2).tolist()
    health = np.round(bat.health * 100.0, 3).tolist()
    cycles = np.round(bat.cycles, 3).tolist()
    ok = step.sensor_ok.tolist()
    labs = sim.lab.tolist()
    when = iso(step.epoch_s)
    for i, spec in enumerate(sim.fleet.meters):
        lab = labs[i]
        vi, ii, pi, di, ti = v_l[i], i_l[i], p_l[i], daily[i], total[i]

        row = (vi, ii, pi, di, ti, ok[i])

        export, imp = _section(row, EXPORT), _section(row, IMPORT)
        export["settlement_energy"] = settle[i][0]
        imp["settlement_energy"] = settle[i][1]
        export["active"] = pi[EXPORT] > GRID_DEADBAND_MW[lab]
        imp["active"] = pi[IMPORT] > GRID_DEADBAND_MW[lab]
        s_in, s_out = _section(row, SOLAR_IN), _section(row, SOLAR_OUT)
        s_in["generating"] = pi[SOLAR_IN] > GENERATING_MW[lab]
        s_out["generating"] = pi[SOLAR_OUT] > GENERATING_MW[lab]
        load_p = _r(pi[LOAD_SMART] + pi[LOAD_HOME], 4)
        net_p = _r(pi[SOLAR_OUT] - load_p, 4)
        load_daily = _r(di[LOAD_SMART] + di[LOAD_HOME])
        load_total = _r(ti[LOAD_SMART] + ti[LOAD_HOME])
        if abs(net_p) <= SOLAR_DEADBAND_MW[lab]:
            solar_status = "balanced"
        else:
            solar_status = "surplus" if net_p > 0 else "deficit"
        grid_net = _r(pi[EXPORT] - pi[IMPORT], 4)
        if pi[EXPORT] > GRID_DEADBAND_MW[lab] and grid_net > 0:
            grid_status = "exporting"
        elif pi[IMPORT] > GRID_DEADBAND_MW[lab] and grid_net < 0:
            grid_status = "importing"
        else:
            grid_status = "idle"
        alerts = []
        if soc[i] < spec.alert_threshold:
            alerts.append("low_soc")
        if temp[i] >= RUNAWAY_ALERT_C:
            alerts.append("thermal_runaway")
        message: dict[str, Any] = {
            "meterId": spec.id,
            "datetime": when,
            "units": DATA_UNITS,
            "data": {
                "battery": {
                    "voltage": b_volt[i],
                    "soc": soc[i],
                    "charge_rate": rate[i],
                    "is_charging": rate[i] > 0.01,
                    "estimated_capacity": est_mah[i],
                    "alert_threshold": spec.alert_threshold,
                    "alert_active": bool(alerts),
                    "connected": True,
                    "valid": True,
                    "temperature": temp[i],
                    "health": health[i],
                    "cycles": cycles[i],
                    "alerts": alerts,
                },
                "export": export,
                "import": imp,
                "load_smart_mtr": _section(row, LOAD_SMART),
                "load_home": _section(row, LOAD_HOME),
                "solar_input": s_in,
                "solar_output": s_out,
                "net_solar": {
                    "solar_power": pi[SOLAR_OUT],
                    "load_power": load_p,
                    "net_power": net_p,
                    "solar_daily": di[SOLAR_OUT],
                    "load_daily": load_daily,
                    "net_daily": _r(di[SOLAR_OUT] - load_daily),
                    "solar_total": ti[SOLAR_OUT],
                    "load_total": load_total,
                    "net_total": _r(ti[SOLAR_OUT] - load_total),
                    "status": solar_status,
                },
                "net_grid": {
                    "export_power": pi[EXPORT],
                    "import_power": pi[IMPORT],
                    "net_power": grid_net,
                    "export_daily": di[EXPORT],
                    "import_daily": di[IMPORT],
                    "net_daily": _r(di[EXPORT] - di[IMPORT]),
                    "export_total": ti[EXPORT],
                    "import_total": ti[IMPORT],
                    "net_total": _r(ti[EXPORT] - ti[IMPORT]),
                    "status": grid_status,
                },
            },
        }
        if seqs is not None:
            message["seq"] = seqs[i]
        yield message
    assert n == len(sim.fleet.meters)


def _ip(i: int) -> str:
    j = i + 1
    return f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}"


def status_message(
    sim: Simulator, i: int, *, epoch_s: float, uptime_ms: int, rng_value: float
) -> dict[str, Any]:
    """The status message of meter ``i`` (connectivity, health and sensor inventory)."""
    spec = sim.fleet.meters[i]
    board = sim.scenarios
    step = sim.last
    weak = bool(board.mask("weak_wifi")[i])
    rssi = round(-84 - 8 * rng_value) if weak else round(sim.rssi_base[i] - 3 * rng_value)
    if weak and rng_value > 0.5:
        sim.mqtt_attempts[i] += 1
    ok = step.sensor_ok[i].tolist() if step is not None else [True] * len(CHANNELS)
    grid_ok = bool(step.grid_ok[i]) if step is not None else True
    importing = bool(step is not None and step.power_w[i, IMPORT] > 1.0)
    exporting = bool(step is not None and step.power_w[i, EXPORT] > 1.0)
    mode = "off" if not grid_ok else "export" if exporting else "import" if importing else "off"
    temp = float(sim.battery.temp_c[i])
    if temp >= RUNAWAY_ALERT_C:
        state = "error"
    elif weak or not all(ok) or not grid_ok:
        state = "warning"
    else:
        state = "alive"
    ina = [{"address": a, "name": name, "connected": ok[k]} for k, (a, name, _) in enumerate(CHANNELS)]
    return {
        "meterId": spec.id,
        "datetime": iso(epoch_s),
        "units": STATUS_UNITS,
        "data": {
            "wifi": {"connected": True, "rssi": max(-127, min(0, rssi)), "ip": _ip(i)},
            "grid": {"mode": mode, "importing": importing and grid_ok, "exporting": exporting and grid_ok},
            "mqtt": {"connected": True, "attempts": int(sim.mqtt_attempts[i]), "qos": 2},
            "system": {
                "free_heap": 200_000 + int(20_000 * rng_value),
                "uptime": max(0, uptime_ms),
                "status": state,
            },
            "sensors": {
                "total_count": sum(ok) + 1,
                "device_role": "Prosumer" if spec.pv_kw > 0 else "Consumer",
                "has_solar": spec.pv_kw > 0,
                "ina219": ina,
                "max17048": [{"address": "0x36", "name": "Battery Fuel Gauge", "connected": True}],
                "ina219_count": sum(ok),
                "max17048_count": 1,
                "scenarios": board.names(i),
            },
        },
    }
