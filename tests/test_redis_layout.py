"""The Redis key layout of both modes and the Redis Cluster URL (no server needed)."""

from __future__ import annotations

import pytest

from enerlink.config import DEFAULT_REDIS_PARTS, CommonSettings, ConfigError, Env
from enerlink.redis_client import RedisUrlError, is_cluster_url, parse_cluster_url
from enerlink.redis_parts import by_part
from enerlink.schemas.wire import Keys


def test_one_server_keeps_the_documented_names() -> None:
    keys = CommonSettings.from_env(Env({})).keys
    assert keys.parts == 0 and keys.of("METER001") is keys and keys.each_part() == [keys]
    assert keys.latest_data == "telemetry:latest:data"
    assert keys.timeseries("METER001") == "telemetry:timeseries:METER001"
    assert by_part(keys, ["B", "A"]) == [(keys, ["B", "A"])]


def test_a_cluster_cuts_the_fleet_into_hash_tagged_parts() -> None:
    common = CommonSettings.from_env(
        Env({"ENERLINK_REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2:7000/"})
    )
    keys = common.keys
    assert keys.parts == DEFAULT_REDIS_PARTS
    part = keys.of("METER001")
    tag = f"{{p{keys.part_of('METER001')}}}"
    # every key of a meter and its part of each fleet-wide key carry the same tag: one slot
    for name in (
        part.latest_data,
        part.meters,
        part.confirm_due,
        part.timeseries("METER001"),
        part.seq_record("METER001"),
        part.late_data("METER001"),
    ):
        assert name.startswith(f"telemetry:{tag}:"), name
    assert part.seq_record("") + "METER001" == part.seq_record("METER001")  # the scripts' prefix
    assert [p.prefix for p in keys.each_part()] == [f"telemetry:{{p{i}}}" for i in range(DEFAULT_REDIS_PARTS)]
    # names outside any part are the fleet's in both layouts
    assert part.live_channel == keys.live_channel == "telemetry:live"
    assert part.ha_counters == "telemetry:ha:counters"
    meters = [f"METER{i:03d}" for i in range(200)]
    groups = by_part(keys, meters)
    assert sorted(m for _, group in groups for m in group) == sorted(meters)
    assert all(keys.of(m) == p for p, group in groups for m in group)
    assert len(groups) == DEFAULT_REDIS_PARTS  # 200 meters reach every part


def test_parts_and_prefixes_a_cluster_cannot_take_are_refused() -> None:
    cluster = {"ENERLINK_REDIS_URL": "redis+cluster://h:1/"}
    with pytest.raises(ConfigError, match="REDIS_PARTS"):
        CommonSettings.from_env(Env({**cluster, "ENERLINK_REDIS_PARTS": "0"}))
    with pytest.raises(ConfigError, match="KEY_PREFIX"):
        CommonSettings.from_env(Env({**cluster, "ENERLINK_KEY_PREFIX": "t{x}"}))
    with pytest.raises(ConfigError, match="REDIS_URL"):
        CommonSettings.from_env(Env({"ENERLINK_REDIS_URL": "redis+cluster://nohostport/"}))
    with pytest.raises(ValueError, match="braces"):
        Keys("a{b}", parts=4)


def test_cluster_urls() -> None:
    target = parse_cluster_url(
        "rediss+cluster://app:s%40cret@n1.example:6380,[::1]:6381/?ssl_ca_certs=/ca.pem"
    )
    assert target.nodes == (("n1.example", 6380), ("::1", 6381))
    assert target.tls and target.username == "app" and target.password == "s@cret"
    assert target.options()["ssl"] is True and target.options()["ssl_ca_certs"] == "/ca.pem"
    assert "s@cret" not in repr(target)
    plain = parse_cluster_url("redis+cluster://:pw@h:7000")
    assert (
        plain.nodes == (("h", 7000),) and not plain.tls and plain.password == "pw" and plain.username is None
    )
    assert is_cluster_url("REDIS+CLUSTER://h:1/") and not is_cluster_url("redis://h:1/0")
    for bad, why in (
        ("redis+cluster://h:1/3", "database 0"),
        ("redis+cluster://h/", "host:port"),
        ("redis+cluster://h:1/?timeout=3", "unknown option"),
        ("redis://h:1/", "not a Redis Cluster URL"),
    ):
        with pytest.raises(RedisUrlError, match=why):
            parse_cluster_url(bad)
