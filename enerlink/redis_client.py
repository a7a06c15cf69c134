"""Redis clients from ``ENERLINK_REDIS_URL``: one server or a Redis Cluster.

One server: redis-py's own URL forms (``redis://``, ``rediss://``, ``unix://``). A Redis Cluster:
``redis+cluster://[user:password@]host:port[,host:port...]/`` (``rediss+cluster://`` with TLS), the hosts
being seed nodes: the client learns the rest of the cluster from them. Query parameters
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs`` go to the TLS context.

Every service opens its clients here, so both layouts take the same code; what differs is in
:class:`~enerlink.schemas.wire.Keys` (hash-tagged parts) and in the few places that ask
:func:`is_cluster`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.connection import SSLConnection
from redis.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
)

AsyncRedis: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
SyncRedis: TypeAlias = "redis.Redis | redis.RedisCluster"

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_URL = re.compile(
    r"^(?P<scheme>[a-z+]+)://(?:(?P<auth>[^@/]*)@)?(?P<hosts>[^/?]*)/?(?P<db>[^?]*)(?:\?(?P<query>.*))?$"
)


REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a Redis call may raise when Redis (one server or a cluster) is away or refuses: the services'
catch boundaries take these (a cluster client's own errors are not ``RedisError``)."""

UNREACHABLE: tuple[type[Exception], ...] = (RedisClusterUnreachableError, SlotNotCoveredError)
"""A cluster client's errors that mean "no node serves this now", as opposed to a wrong call."""


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """A Redis Cluster: its seed nodes, credentials and TLS options."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None = None
    password: str | None = None
    tls_options: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never log the password
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"ClusterTarget({'rediss' if self.tls else 'redis'}+cluster://{hosts}/)"

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.tls:
            out["ssl"] = True
            out.update(dict(self.tls_options))
        return out


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterTarget:
    """The seed nodes and options of a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    found = _URL.match(url.strip())
    if found is None or found["scheme"].lower() not in CLUSTER_SCHEMES:
        raise RedisUrlError("not a Redis Cluster URL (redis+cluster://host:port[,host:port...]/)")
    if found["db"] not in ("", "0"):
        raise RedisUrlError("a Redis Cluster has database 0 only")
    nodes = []
    for part in found["hosts"].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise RedisUrlError(f"a seed node must be host:port, not {part.strip()!r}")
        nodes.append((host.strip("[]"), int(port)))
    username = password = None
    if found["auth"] is not None:
        user, sep, secret = found["auth"].partition(":")
        username, password = (unquote(user) or None, unquote(secret) if sep else None)
    query = parse_qsl(found["query"] or "")
    unknown = sorted({k for k, _ in query} - set(_TLS_OPTIONS))
    if unknown:
        raise RedisUrlError(f"unknown option(s) in a Redis Cluster URL: {', '.join(unknown)}")
    return ClusterTarget(
        nodes=tuple(nodes),
        tls=CLUSTER_SCHEMES[found["scheme"].lower()],
        username=username,
        password=password,
        tls_options=tuple(query),
    )


def check_url(url: str) -> None:
    """Raise :class:`RedisUrlError` for a URL neither client would take (at start-up, once)."""
    if is_cluster_url(url):
        parse_cluster_url(url)
        return
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise RedisUrlError(str(exc)) from exc


def async_client(url: str, **options: Any) -> AsyncRedis:
    """An asyncio client, not connected yet: open it with :func:`lazily`."""
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **options)
    target = parse_cluster_url(url)
    return aioredis.RedisCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in target.nodes],
        **target.options(),
        **options,
    )


def lazily(client: AsyncRedis) -> contextlib.aclosing[AsyncRedis]:
    """``async with lazily(client)``: closed on exit, connected by its first command. A cluster client
    used as ``async with client`` connects on entry and raises there while the cluster is away; this
    way a service starts anyway and retries like on one server."""
    return contextlib.aclosing(client)


def sync_client(url: str, **options: Any) -> SyncRedis:
    """A blocking client. A cluster client learns the cluster at once: ``ConnectionError`` (a
    ``RedisError``) when no seed node answers."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_cluster_url(url)
    try:
        return redis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
            **target.options(),
            **options,
        )
    except RedisClusterException as exc:
        raise unavailable(exc) from exc


def node_client(cluster: aioredis.RedisCluster, key: str, **options: Any) -> aioredis.Redis:
    """A plain client on the master that serves ``key``'s slot now, with the cluster client's
    credentials: for commands that must share one connection with a write (``WAIT``)."""
    node = cluster.get_node_from_key(key)
    if node is None:
        raise RedisConnectionError(f"no node serves the slot of {key!r} yet")
    kwargs = {k: v for k, v in node.connection_kwargs.items() if k in _PLAIN}
    kwargs.update(options)
    if issubclass(node.connection_class, SSLConnection):
        kwargs["ssl"] = True
    return aioredis.Redis(host=node.host, port=int(node.port), **kwargs)


_PLAIN = frozenset(  # the options of a cluster node's connections that a plain client takes
    {
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "decode_responses",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
    }
)


def unavailable(exc: Exception) -> RedisConnectionError:
    """A cluster client's own error (no node answered, no slot map) as the connection error every
    service already handles as "Redis is unavailable"."""
    return RedisConnectionError(f"Redis Cluster unavailable: {exc}")


class NodeClients:
    """Plain clients on a Redis Cluster's masters, by the key whose slot they serve, kept open (on one
    server: that server's client itself)."""

    def __init__(self, client: AsyncRedis) -> None:
        self._client = client
        self._open: dict[str, aioredis.Redis] = {}

    def client(self, key: str) -> aioredis.Redis:
        if not isinstance(self._client, aioredis.RedisCluster):
            return self._client
        try:
            node = self._client.get_node_from_key(key)
        except UNREACHABLE as exc:
            raise unavailable(exc) from exc
        if node is None:
            raise RedisConnectionError(f"no node serves the slot of {key!r} yet")
        found = self._open.get(node.name)
        if found is None:
            found = self._open[node.name] = node_client(self._client, key)
        return found

    def master_name(self, key: str) -> str:
        """``host:port`` of the master that serves ``key``'s slot (on one server: its address)."""
        if isinstance(self._client, aioredis.RedisCluster):
            try:
                node = self._client.get_node_from_key(key)
            except UNREACHABLE:
                return "?"
            return node.name if node is not None else "?"
        kwargs = self._client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def replica_count(self, key: str) -> int | None:
        """How many replicas the master of ``key``'s slot has (None on one server), failed ones
        included: a replica marked failed may come back and be promoted. A master without any
        replica can lose no write to a failover (no node could take its slots); its append-only file
        keeps them."""
        if not isinstance(self._client, aioredis.RedisCluster):
            return None
        node = self.client(key)
        raw = await node.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        lines = [line.split() for line in text.splitlines() if line.strip()]
        me = next((f for f in lines if "myself" in f[2].split(",")), None)
        if me is None or "master" not in me[2].split(","):  # demoted since the slot map was read
            raise RedisConnectionError(f"{self.master_name(key)} no longer serves {key!r} as a master")
        bad = {"noaddr", "handshake"}
        return sum(1 for f in lines if f[3] == me[0] and not bad.intersection(f[2].split(",")))

    async def forget(self, key: str) -> None:
        """After an error on a node: close every node client, and let the cluster client follow
        ``key``'s slot (a failover or a moved slot) with one read of its own."""
        await self.aclose()
        if isinstance(self._client, aioredis.RedisCluster):
            with contextlib.suppress(*REDIS_ERRORS):
                await self._client.exists(key)

    async def aclose(self) -> None:
        opened, self._open = list(self._open.values()), {}
        for client in opened:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
