"""Device health from status messages: minute rows and technician events. Pure, no I/O.

Rows of ``Tables.DEVICE_HEALTH``, one per meter per minute with at least one usable status message:

* ``sample_count``: status messages in the minute;
* ``rssi_avg`` / ``rssi_min``: over the messages sent while Wi-Fi was connected (a disconnected
  radio's RSSI is meaningless); NULL when there is none;
* ``wifi_disconnected_ratio`` / ``mqtt_disconnected_ratio``: share of the messages reporting
  ``connected = false``; ``mqtt_attempts_max``: most reconnect attempts reported;
* ``free_heap_min``; ``uptime_last_ms``: uptime in the minute's last message;
* ``reboots``: times ``uptime`` went backwards against the previous message of the meter, the
  first one compared with the last message before the minute (so a reboot across the minute
  boundary counts in the minute it is seen);
* ``sensors_connected_min``: fewest INA219 + MAX17048 entries with ``connected = true``;
  ``sensors_total``: entries in the last message's inventory.

Events (into ``Tables.EVENTS``), each raised once and cleared once, from the messages in time order
(state per meter between jobs: see :class:`State`):

* ``weak_signal`` (warning) when every message for ``weak_rssi_s`` (10 min) had RSSI below
  ``weak_rssi_dbm`` (-75), at the message completing the period; ``weak_signal_cleared`` (info) at
  the first message at or above it. Messages sent while Wi-Fi was down neither extend nor break it;
* ``low_memory`` (warning) at the first message with free heap under ``low_heap_bytes`` (50 KB),
  ``low_memory_cleared`` (info) at the first one back at or above it;
* ``repeated_reboots`` (warning) when ``reboots`` reboots fall within ``reboot_window_s`` (3 in an
  hour), ``repeated_reboots_cleared`` (info) at the first message when fewer remain in the window;
* ``sensor_disconnected`` (warning) / ``sensor_reconnected`` (info) when a sensor entry's
  ``connected`` changes (details: bus, address, sensor; ``sensors`` lists all when several change
  in one message, because an event is unique per meter, kind and time);
* ``meter_silent`` (warning) when no status came for ``silent_intervals`` status intervals (3 x
  60 s), stamped at the moment the silence became that long; ``meter_silent_cleared`` (info) at the
  next status message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from enerlink.aggregator.compute import MINUTE_MS, ms_to_dt
from enerlink.aggregator.fastparse import BadSnapshot, decode_envelope
from enerlink.aggregator.settings import HealthThresholds
from enerlink.events import Event

BUSES = ("ina219", "max17048")

#: Column order of a device-health row (the table of migration 0005).
COLUMNS: tuple[str, ...] = (
    "meter_id",
    "minute",
    "sample_count",
    "rssi_avg",
    "rssi_min",
    "wifi_disconnected_ratio",
    "mqtt_disconnected_ratio",
    "mqtt_attempts_max",
    "free_heap_min",
    "reboots",
    "sensors_connected_min",
    "sensors_total",
    "uptime_last_ms",
)


@dataclass(slots=True)
class Status:
    """What device health needs of one status message."""

    at_ms: int
    rssi: int
    wifi: bool
    mqtt: bool
    attempts: int
    heap: int
    uptime: int
    disconnected: dict[str, tuple[str, str, str]]  # key -> (bus, address, name)
    sensors_connected: int
    sensors_total: int


def _int(value: Any) -> int:
    if type(value) is not int:
        raise BadSnapshot(f"{value!r} is not an integer")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise BadSnapshot(f"{value!r} is not a boolean")
    return value


def sensor_key(bus: str, address: str, name: str) -> str:
    return f"{bus}:{address}:{name}"


def _parse_status_orjson(raw: bytes, meter_id: str) -> Status:
    """A stored status message (validated by the ingest; only types are re-checked, like data)."""
    try:
        msg = orjson.loads(raw)
        if msg["meterId"] != meter_id:
            raise BadSnapshot(f"meterId {msg['meterId']!r} in the series of {meter_id!r}")
        at = datetime.fromisoformat(msg["datetime"])
        if at.tzinfo is None:
            raise BadSnapshot("datetime without a timezone")
        data = msg["data"]
        wifi, mqtt, system, sensors = data["wifi"], data["mqtt"], data["system"], data["sensors"]
        disconnected: dict[str, tuple[str, str, str]] = {}
        connected = total = 0
        for bus in BUSES:
            for entry in sensors[bus]:
                total += 1
                if _bool(entry["connected"]):
                    connected += 1
                else:
                    address, name = str(entry["address"]), str(entry["name"])
                    disconnected[sensor_key(bus, address, name)] = (bus, address, name)
        return Status(
            at_ms=int(at.timestamp() * 1000),
            rssi=_int(wifi["rssi"]),
            wifi=_bool(wifi["connected"]),
            mqtt=_bool(mqtt["connected"]),
            attempts=_int(mqtt["attempts"]),
            heap=_int(system["free_heap"]),
            uptime=_int(system["uptime"]),
            disconnected=disconnected,
            sensors_connected=connected,
            sensors_total=total,
        )
    except BadSnapshot:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadSnapshot(f"unusable status: {type(exc).__name__}: {exc}") from exc


def minute_rows(meter_id: str, statuses: Sequence[Status], baseline: Status | None) -> list[tuple[Any, ...]]:
    """Rows (:data:`COLUMNS`) of every minute holding one of ``statuses`` (sorted by time);
    ``baseline`` is the meter's last message before the first of them."""
    rows: list[tuple[Any, ...]] = []
    prev = baseline.uptime if baseline is not None else None
    i = 0
    while i < len(statuses):
        minute = statuses[i].at_ms // MINUTE_MS * MINUTE_MS
        j = i
        while j < len(statuses) and statuses[j].at_ms < minute + MINUTE_MS:
            j += 1
        group = statuses[i:j]
        reboots = 0
        for s in group:
            if prev is not None and s.uptime < prev:
                reboots += 1
            prev = s.uptime
        rssi = [s.rssi for s in group if s.wifi]
        n = len(group)
        rows.append(
            (
                meter_id,
                ms_to_dt(minute),
                n,
                sum(rssi) / len(rssi) if rssi else None,
                float(min(rssi)) if rssi else None,
                sum(1 for s in group if not s.wifi) / n,
                sum(1 for s in group if not s.mqtt) / n,
                max(s.attempts for s in group),
                min(s.heap for s in group),
                reboots,
                min(s.sensors_connected for s in group),
                group[-1].sensors_total,
                group[-1].uptime,
            )
        )
        i = j
    return rows


@dataclass(slots=True)
class State:
    """A meter's event state between jobs (``Tables.AGGREGATOR_HEALTH_STATE`` and, for sensors,
    ``Tables.AGGREGATOR_EVENT_STATE``).

    It is stored only when something other than the position (``status_at``, ``uptime_ms``) changed,
    so a quiet fleet writes nothing; the stored position may therefore lag, and the next window
    takes the uptime from its baseline message (the last one before it) and replays the messages
    after the stored position: the same messages from the same state give the same events, which
    the events table stores once."""

    status_at_ms: int | None = None  # newest message the events have seen
    uptime_ms: int | None = None
    weak_since_ms: int | None = None
    weak_raised: bool = False
    low_heap: bool = False
    reboots: list[int] = field(default_factory=list)  # ms, inside the reboot window
    reboots_raised: bool = False
    silent: bool = False
    sensors_at_ms: int | None = None  # newest message the sensor state has seen
    disconnected: set[str] = field(default_factory=set)
    changed: bool = False  # to be stored: a flag, the weak run or the reboots changed
    sensors_changed: bool = False  # to be stored: the disconnected sensors changed


def _event(meter_id: str, at_ms: int, kind: str, severity: str, details: dict[str, Any]) -> Event:
    return Event(meter_id, ms_to_dt(at_ms), kind, severity, details)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def advance(
    meter_id: str, state: State, statuses: Sequence[Status], *, limits: HealthThresholds, out: list[Event]
) -> None:
    """Feed the messages (sorted by time) newer than the state into it; append the events raised."""
    for s in statuses:
        if state.sensors_at_ms is None or s.at_ms > state.sensors_at_ms:
            _sensors(meter_id, state, s, out)
        if state.status_at_ms is not None and s.at_ms <= state.status_at_ms:
            continue
        state.status_at_ms = s.at_ms
        if state.silent:
            state.changed = True
            state.silent = False
            out.append(_event(meter_id, s.at_ms, "meter_silent_cleared", "info", {}))
        _signal(meter_id, state, s, limits, out)
        if s.heap < limits.low_heap_bytes and not state.low_heap:
            state.low_heap = state.changed = True
            details = {"free_heap": s.heap, "threshold_bytes": limits.low_heap_bytes}
            out.append(_event(meter_id, s.at_ms, "low_memory", "warning", details))
        elif s.heap >= limits.low_heap_bytes and state.low_heap:
            state.low_heap, state.changed = False, True
            out.append(_event(meter_id, s.at_ms, "low_memory_cleared", "info", {"free_heap": s.heap}))
        _reboots(meter_id, state, s, limits, out)


def _signal(meter_id: str, state: State, s: Status, limits: HealthThresholds, out: list[Event]) -> None:
    if not s.wifi:
        return
    if s.rssi >= limits.weak_rssi_dbm:
        if state.weak_since_ms is not None:
            state.weak_since_ms, state.changed = None, True
        if state.weak_raised:
            state.weak_raised = False
            out.append(_event(meter_id, s.at_ms, "weak_signal_cleared", "info", {"rssi": s.rssi}))
        return
    if state.weak_since_ms is None:
        state.weak_since_ms, state.changed = s.at_ms, True
    if not state.weak_raised and s.at_ms - state.weak_since_ms >= limits.weak_rssi_s * 1000:
        state.weak_raised = True
        details = {
            "rssi": s.rssi,
            "threshold_dbm": limits.weak_rssi_dbm,
            "since": _iso(state.weak_since_ms),
        }
        out.append(_event(meter_id, s.at_ms, "weak_signal", "warning", details))


def _reboots(meter_id: str, state: State, s: Status, limits: HealthThresholds, out: list[Event]) -> None:
    if state.uptime_ms is not None and s.uptime < state.uptime_ms:
        state.reboots.append(s.at_ms)
        state.changed = True
    state.uptime_ms = s.uptime
    window = limits.reboot_window_s * 1000
    if state.reboots and state.reboots[0] <= s.at_ms - window:
        state.reboots = [t for t in state.reboots if t > s.at_ms - window]
        state.changed = True
    if len(state.reboots) >= limits.reboots and not state.reboots_raised:
        state.reboots_raised = state.changed = True
        details = {"reboots": len(state.reboots), "window_s": limits.reboot_window_s}
        out.append(_event(meter_id, s.at_ms, "repeated_reboots", "warning", details))
    elif len(state.reboots) < limits.reboots and state.reboots_raised:
        state.reboots_raised, state.changed = False, True
        details = {"reboots": len(state.reboots), "window_s": limits.reboot_window_s}
        out.append(_event(meter_id, s.at_ms, "repeated_reboots_cleared", "info", details))


def _sensors(meter_id: str, state: State, s: Status, out: list[Event]) -> None:
    state.sensors_at_ms = s.at_ms
    if not s.disconnected and not state.disconnected:
        return
    now = set(s.disconnected)
    lost, back = sorted(now - state.disconnected), sorted(state.disconnected - now)
    if lost or back:
        state.sensors_changed = True
    state.disconnected = now
    changes = (("sensor_disconnected", "warning", lost), ("sensor_reconnected", "info", back))
    for kind, severity, keys in changes:
        if not keys:
            continue
        sensors = []
        for key in keys:
            bus, address, name = key.split(":", 2)
            sensors.append({"bus": bus, "address": address, "sensor": name})
        details: dict[str, Any] = dict(sensors[0])
        if len(sensors) > 1:
            details["sensors"] = sensors
        out.append(_event(meter_id, s.at_ms, kind, severity, details))


def silence(
    meter_id: str, state: State, *, latest_ms: int, now_ms: int, limits: HealthThresholds, out: list[Event]
) -> None:
    """Raise ``meter_silent`` once when the meter's newest status is older than the silence limit."""
    if state.silent or now_ms - latest_ms <= limits.silent_ms:
        return
    if state.status_at_ms is not None and state.status_at_ms > latest_ms:
        return  # (cannot happen: the ingest's latest is the newest)
    state.silent = True
    state.changed = True
    if state.status_at_ms is None:
        state.status_at_ms = latest_ms
    details = {"last_status_at": _iso(latest_ms), "silent_after_s": limits.silent_ms // 1000}
    out.append(_event(meter_id, latest_ms + limits.silent_ms, "meter_silent", "warning", details))


def _msgspec_status() -> Callable[[bytes, str], Status] | None:
    """With msgspec: typed decoding of the fields device health reads (the same type checks in C:
    an integer is a JSON integer, a boolean a JSON boolean; other fields skipped unread), about
    twice as fast as orjson plus the checks above. Same results, same errors."""

    def struct(name: str, fields: list[Any]) -> Any:
        return msgspec.defstruct(name, fields, gc=False)

    unset = msgspec.UNSET
    sensor = struct("_Sensor", [("connected", bool), ("address", Any, unset), ("name", Any, unset)])
    data_type = struct(
        "_StatusData",
        [
            ("wifi", struct("_Wifi", [("connected", bool), ("rssi", int)])),
            ("mqtt", struct("_Mqtt", [("connected", bool), ("attempts", int)])),
            ("system", struct("_System", [("free_heap", int), ("uptime", int)])),
            ("sensors", struct("_Sensors", [(bus, list[sensor]) for bus in BUSES])),  # type: ignore[valid-type]
        ],
    )
    message = struct("_Status", [("meterId", str), ("datetime", str), ("data", data_type)])
    decode = msgspec.json.Decoder(message).decode
    assert BUSES == ("ina219", "max17048")

    def parse(raw: bytes, meter_id: str) -> Status:
        msg, at = decode_envelope(decode, raw, meter_id=meter_id, what="status")
        data = msg.data
        disconnected: dict[str, tuple[str, str, str]] = {}
        connected = total = 0
        for bus, entries in (("ina219", data.sensors.ina219), ("max17048", data.sensors.max17048)):
            total += len(entries)
            for entry in entries:
                if entry.connected:
                    connected += 1
                elif entry.address is unset or entry.name is unset:
                    raise BadSnapshot(f"a disconnected {bus} sensor without address or name")
                else:
                    address, name = str(entry.address), str(entry.name)
                    disconnected[sensor_key(bus, address, name)] = (bus, address, name)
        return Status(
            at_ms=int(at.timestamp() * 1000),
            rssi=data.wifi.rssi,
            wifi=data.wifi.connected,
            mqtt=data.mqtt.connected,
            attempts=data.mqtt.attempts,
            heap=data.system.free_heap,
            uptime=data.system.uptime,
            disconnected=disconnected,
            sensors_connected=connected,
            sensors_total=total,
        )

    return parse


_FAST_STATUS = _msgspec_status()


def parse_status(raw: bytes, meter_id: str) -> Status:
    """A stored status message; raises :class:`BadSnapshot` saying why it is unusable."""
    if _FAST_STATUS is not None:
        return _FAST_STATUS(raw, meter_id)
    return _parse_status_orjson(raw, meter_id)
