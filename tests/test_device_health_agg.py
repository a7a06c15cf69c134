"""Device health on real Redis and PostgreSQL: a scripted series of status messages,
stored as the ingest stores them, gives exact minute aggregates and the technician events."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator.service import run
from enerlink.aggregator.settings import Settings
from enerlink.config import Env
from enerlink.schemas.wire import Keys, Tables
from tests.conftest import load_fixture

MIN = 60_000
STATUS = load_fixture("meter-status.json")


def status(
    meter: str,
    at_ms: int,
    *,
    rssi: int = -60,
    wifi: bool = True,
    mqtt: bool = True,
    attempts: int = 0,
    heap: int = 100_000,
    uptime: int = 1_000_000,
    import_connected: bool = True,
) -> bytes:
    msg = copy.deepcopy(STATUS)
    msg["meterId"] = meter
    msg["datetime"] = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    data = msg["data"]
    data["wifi"].update(connected=wifi, rssi=rssi)
    data["mqtt"].update(connected=mqtt, attempts=attempts)
    data["system"].update(free_heap=heap, uptime=uptime)
    data["sensors"]["ina219"][1]["connected"] = import_connected
    return json.dumps(msg).encode()


async def store(r: aioredis.Redis, keys: Keys, meter: str, items: list[tuple[int, bytes]]) -> None:
    """As the ingest does: the status series, the newest in latest_status / latest_status_at."""
    await r.zadd(keys.status_timeseries(meter), {raw: at for at, raw in items})
    at, raw = max(items)
    old = await r.hget(keys.latest_status_at, meter)
    if old is None or int(old) <= at:
        await r.hset(keys.latest_status, meter, raw)
        await r.hset(keys.latest_status_at, meter, str(at))


def settings_for(environ: dict[str, str], **extra: str) -> Settings:
    env = {**environ, "ENERLINK_AGGREGATOR_METRICS_PORT": "0", "ENERLINK_AGGREGATE_WORKERS": "1", **extra}
    return Settings.from_env(Env(env))


def health_rows(url: str) -> dict[tuple[str, datetime], dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"select * from {Tables.DEVICE_HEALTH} order by meter_id, minute")
        names = [d.name for d in cur.description or []]
        return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def events(url: str) -> list[tuple[str, str, int, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        got = conn.execute(
            f"select meter_id, kind, at, details from {Tables.EVENTS} order by at, meter_id, kind"
        ).fetchall()
    return [(m, k, int(a.timestamp() * 1000), d) for m, k, a, d in got]


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def test_health_aggregates_and_events_from_a_scripted_status_series(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    # status interval 120 s: silent after 360 s without status
    settings = settings_for(environ, ENERLINK_HEALTH_STATUS_INTERVAL_S="120")
    keys = settings.common.keys
    url = settings.common.database_url
    t0 = int(float((await redis_client.time())[0])) * 1000
    closed_end = (t0 - 10_000) // MIN * MIN
    b = closed_end - 13 * MIN  # the script's 750 s falls into the last closed minute
    s = 1000
    script = [
        (0, status("H1", b, rssi=-60, heap=100_000, uptime=1_000_000)),
        (30, status("H1", b + 30 * s, rssi=-70, mqtt=False, attempts=2, heap=60_000, uptime=1_030_000)),
        # reboot across the minute boundary; Wi-Fi down (its RSSI is not counted); low heap
        (60, status("H1", b + 60 * s, rssi=-127, wifi=False, heap=40_000, uptime=5_000)),
        # weak signal starts; the import INA219 drops out
        (90, status("H1", b + 90 * s, rssi=-80, heap=45_000, uptime=35_000, import_connected=False)),
        (150, status("H1", b + 150 * s, rssi=-80, heap=45_000, uptime=95_000, import_connected=False)),
        (210, status("H1", b + 210 * s, rssi=-80, heap=100_000, uptime=155_000, import_connected=False)),
        (270, status("H1", b + 270 * s, rssi=-80, uptime=1_000)),  # reboot 2, sensor back
        (330, status("H1", b + 330 * s, rssi=-80, uptime=500)),  # reboot 3 within the hour
    ]
    uptime = 500
    for at in range(390, 700, 60):  # -80 dBm until 690 s: 600 s of weak signal since 90 s
        uptime += 60_000
        script.append((at, status("H1", b + at * s, rssi=-80, uptime=uptime)))
    script.append((750, status("H1", b + 750 * s, rssi=-60, uptime=uptime + 60_000)))
    await store(redis_client, keys, "H1", [(b + off * s, raw) for off, raw in script])
    # a corrupt member: counted, skipped, the rest of the minute goes through
    await redis_client.zadd(keys.status_timeseries("H1"), {b'{"meterId": "H1", "broken": true}': b + 45 * s})
    # H2 sent one status 13 minutes ago and nothing since
    await store(redis_client, keys, "H2", [(b, status("H2", b, uptime=77))])

    report = await run(settings, once=True)
    assert report is not None and report.bad_status == 1
    rows = health_rows(url)
    first = rows[("H1", dt(b))]
    assert first["sample_count"] == 2
    assert first["rssi_avg"] == pytest.approx(-65.0) and first["rssi_min"] == -70.0
    assert first["wifi_disconnected_ratio"] == 0.0 and first["mqtt_disconnected_ratio"] == 0.5
    assert first["mqtt_attempts_max"] == 2 and first["free_heap_min"] == 60_000
    assert first["reboots"] == 0 and first["uptime_last_ms"] == 1_030_000
    assert first["sensors_connected_min"] == 7 and first["sensors_total"] == 7
    second = rows[("H1", dt(b + MIN))]
    assert second["sample_count"] == 2
    assert second["rssi_avg"] == -80.0 and second["rssi_min"] == -80.0  # the Wi-Fi-down message not counted
    assert second["wifi_disconnected_ratio"] == 0.5 and second["mqtt_disconnected_ratio"] == 0.0
    assert second["free_heap_min"] == 40_000 and second["reboots"] == 1
    assert second["sensors_connected_min"] == 6 and second["uptime_last_ms"] == 35_000
    assert rows[("H1", dt(b + 4 * MIN))]["reboots"] == 1  # 270 s
    assert rows[("H1", dt(b + 5 * MIN))]["reboots"] == 1  # 330 s
    assert rows[("H1", dt(b + 4 * MIN))]["sensors_connected_min"] == 7
    assert sum(r["reboots"] for (m, _), r in rows.items() if m == "H1") == 3
    assert len([k for k in rows if k[0] == "H1"]) == 13 and rows[("H2", dt(b))]["sample_count"] == 1

    got = events(url)
    kinds = [(m, k, (at - b) // s) for m, k, at, _ in got]
    assert kinds == [
        ("H1", "low_memory", 60),
        ("H1", "sensor_disconnected", 90),
        ("H1", "low_memory_cleared", 210),
        ("H1", "sensor_reconnected", 270),
        ("H1", "repeated_reboots", 330),
        ("H2", "meter_silent", 360),  # last status + 3 intervals of 120 s
        ("H1", "weak_signal", 690),  # 600 s below -75 dBm since 90 s
        ("H1", "weak_signal_cleared", 750),
    ]
    details = {k: d for _, k, _, d in got}
    assert details["low_memory"] == {"free_heap": 40_000, "threshold_bytes": 51_200}
    assert details["sensor_disconnected"] == {"bus": "ina219", "address": "0x41", "sensor": "Import"}
    assert details["repeated_reboots"] == {"reboots": 3, "window_s": 3600}
    assert details["weak_signal"]["rssi"] == -80 and details["weak_signal"]["threshold_dbm"] == -75.0
    assert details["meter_silent"]["silent_after_s"] == 360

    # again: nothing new, the same rows
    await run(settings, once=True)
    assert events(url) == got and health_rows(url) == rows

    # H2 speaks again (in the last closed minute, redone here by moving the health watermark back):
    # the silence clears; H1's minute is re-aggregated to the same row (idempotent upsert)
    back = closed_end - 15_000
    await store(redis_client, keys, "H2", [(back, status("H2", back, uptime=500_000))])
    with psycopg.connect(url) as conn:
        conn.execute(
            f"update {Tables.AGGREGATOR_WATERMARK} set minute = %s where name = 'health_minutes'",
            (dt(closed_end - 2 * MIN),),
        )
    await run(settings, once=True)
    after = events(url)
    assert [(m, k, at) for m, k, at, _ in after if (m, k, at) not in {(e[0], e[1], e[2]) for e in got}] == [
        ("H2", "meter_silent_cleared", back)
    ]
    again = health_rows(url)
    assert again[("H1", dt(closed_end - MIN))] == rows[("H1", dt(closed_end - MIN))]
    assert again[("H2", dt(closed_end - MIN))]["sample_count"] == 1


async def test_sensor_events_of_a_meter_with_a_status_series_come_from_every_message(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """A sensor that drops out and comes back between two jobs is still reported (the newest
    status alone would show nothing), once, and the latest-status path does not repeat it."""
    settings = settings_for(environ, ENERLINK_HEALTH_STATUS_INTERVAL_S="600")  # not silent here
    keys = settings.common.keys
    t0 = int(float((await redis_client.time())[0])) * 1000
    b = (t0 - 10_000) // MIN * MIN - 3 * MIN
    await store(
        redis_client,
        keys,
        "F",
        [
            (b, status("F", b)),
            (b + 20_000, status("F", b + 20_000, import_connected=False)),
            (b + 40_000, status("F", b + 40_000)),
            (b + MIN, status("F", b + MIN, import_connected=False)),
        ],
    )
    await run(settings, once=True)
    await run(settings, once=True)
    got = [(m, k, at - b) for m, k, at, _ in events(settings.common.database_url)]
    assert got == [
        ("F", "sensor_disconnected", 20_000),
        ("F", "sensor_reconnected", 40_000),
        ("F", "sensor_disconnected", MIN),
    ]


def _status_variant(path: str, value: Any, *, delete: bool = False) -> bytes:
    msg = copy.deepcopy(STATUS)
    *parents, last = path.split(".")
    node: Any = msg
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return json.dumps(msg).encode()


CORRUPT_STATUS: dict[str, bytes] = {
    "not json": b"\x00 not json",
    "truncated": json.dumps(STATUS).encode()[:-10],
    "an array": b"[1, 2]",
    "other meter": _status_variant("meterId", "SOMEONE_ELSE"),
    "naive datetime": _status_variant("datetime", "2025-10-26T04:26:57"),
    "bad datetime": _status_variant("datetime", "soon"),
    "missing wifi": _status_variant("data.wifi", None, delete=True),
    "rssi as float": _status_variant("data.wifi.rssi", -39.5),
    "rssi as string": _status_variant("data.wifi.rssi", "-39"),
    "heap as bool": _status_variant("data.system.free_heap", True),
    "connected as int": _status_variant("data.mqtt.connected", 1),
    "sensor connected as string": _status_variant("data.sensors.ina219.0.connected", "yes"),
    "missing bus": _status_variant("data.sensors.max17048", None, delete=True),
}


def _decoders() -> dict[str, Any]:
    from enerlink.aggregator import health

    found: dict[str, Any] = {"orjson": health._parse_status_orjson}
    if health._FAST_STATUS is not None:
        found["msgspec"] = health._FAST_STATUS
    return found


@pytest.mark.parametrize("decoder", ["orjson", "msgspec"])
@pytest.mark.parametrize("case", sorted(CORRUPT_STATUS))
def test_a_corrupt_status_is_a_bad_snapshot_error(decoder: str, case: str) -> None:
    from enerlink.aggregator.fastparse import BadSnapshot

    decoders = _decoders()
    if decoder not in decoders:
        pytest.skip("msgspec not installed")
    with pytest.raises(BadSnapshot):
        decoders[decoder](CORRUPT_STATUS[case], "METER001")


def test_both_status_decoders_agree() -> None:
    decoders = _decoders()
    raws = [
        json.dumps(STATUS).encode(),
        status("METER001", 1_761_452_817_000, rssi=-80, wifi=False, attempts=3, import_connected=False),
        _status_variant("data.sensors.max17048.0.connected", False),
    ]
    for raw in raws:
        parsed = {name: decode(raw, "METER001") for name, decode in decoders.items()}
        assert len(set(map(repr, parsed.values()))) == 1, parsed
    first = decoders["orjson"](raws[1], "METER001")
    assert (first.rssi, first.wifi, first.attempts, first.sensors_connected, first.sensors_total) == (
        -80,
        False,
        3,
        6,
        7,
    )
    assert list(first.disconnected) == ["ina219:0x41:Import"]
