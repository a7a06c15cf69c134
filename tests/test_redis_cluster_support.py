"""tests.support.redis_cluster on a real cluster: keys written and replicated (WAIT), their master
killed with kill -9, the replica promoted, every key read back through a cluster client, the
dead node restarted as a replica."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support.redis_cluster import RedisClusterServers

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server and redis-cli not installed (apt-get install -y redis-server redis-tools)",
)


def test_a_killed_master_is_replaced_by_its_replica_without_losing_replicated_keys(tmp_path: Path) -> None:
    servers = RedisClusterServers(tmp_path).start()
    try:
        assert len(servers.ports) == 6
        assert servers.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in servers.ports) + "/"
        assert servers.proc is None
        masters = servers.master_ports()
        assert len(masters) == 3
        cluster = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in servers.ports], decode_responses=True
        )
        try:
            values = {f"key:{i}": f"value-{i}" for i in range(100)}
            for key, value in values.items():
                cluster.set(key, value)
            victim = servers.master_of("key:0")
            assert victim in masters
            with redis.Redis(port=victim, socket_timeout=5) as plain:
                pipe = plain.pipeline(transaction=False)  # one connection: WAIT covers this SET
                pipe.set("{key:0}:marker", "1")  # same slot; replicated after every earlier write
                pipe.wait(1, 2000)
                assert pipe.execute()[1] == 1

            servers.kill(victim)
            promoted = servers.wait_failover(victim)
            assert promoted != victim
            assert servers.master_of("key:0") == promoted
            assert victim not in servers.master_ports()
            assert cluster.get("key:0") == "value-0"
            assert {key: cluster.get(key) for key in values} == values

            servers.restart(victim)
            assert victim not in servers.master_ports()
            assert promoted in servers.master_ports()
            assert cluster.get("{key:0}:marker") == "1"
        finally:
            cluster.close()
    finally:
        servers.stop()
        servers.stop()
    assert not any(proc.alive() for proc in servers.procs.values())
