"""A private Redis Cluster on loopback for tests and benches: masters with replicas, each node a
``redis-server --cluster-enabled yes`` with an append-only file, joined by ``redis-cli --cluster
create``. A master can be killed with kill -9 and the promotion of its replica awaited.

Each node gets a free port for clients and another for the cluster bus (``cluster-port``), since the
default bus port (port + 10000) of a free ephemeral port may be taken or past 65535.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.chaos_stack import Proc
from tests.support.secured_broker import make_test_ca
from tests.support.services import free_port, wait_port

SLOTS = 16384
HOST = "127.0.0.1"


@dataclass
class NodeEntry:
    """One line of ``CLUSTER NODES``: a node as one member sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: list[tuple[int, int]]  # inclusive ranges

    @property
    def master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @classmethod
    def parse(cls, line: str) -> NodeEntry:
        parts = line.split()
        address = parts[1].split("@", 1)[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(parts[0], int(address.rsplit(":", 1)[1]), frozenset(parts[2].split(",")), parts[3], slots)


def slot_owners(nodes: Sequence[NodeEntry]) -> list[NodeEntry | None]:
    """The master serving each slot in one member's view (None where no master claims it)."""
    owners: list[NodeEntry | None] = [None] * SLOTS
    for node in nodes:
        if node.master:
            for first, last in node.slots:
                owners[first : last + 1] = [node] * (last - first + 1)
    return owners


CLOCKSHIFT_C = Path(__file__).with_name("clockshift.c")


def clock_offset_env(offset_s: float, build_dir: Path) -> dict[str, str]:
    """The environment that sets a process's wall clock ``offset_s`` off (its monotonic clocks stay
    real): ``tests/support/clockshift.c``, built into ``build_dir`` with the C compiler and preloaded.
    Raises FileNotFoundError without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler to build the clock shift: apt-get install gcc libc6-dev")
    library = build_dir / "clockshift.so"
    if not library.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        argv = [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(CLOCKSHIFT_C)]
        built = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if built.returncode != 0:
            raise FileNotFoundError(
                f"could not build the clock shift (apt-get install gcc libc6-dev): {built.stderr[-1000:]}"
            )
    return {"LD_PRELOAD": str(library), "CLOCKSHIFT_MS": str(round(offset_s * 1000))}


@dataclass
class RedisClusterServers:
    """Redis Cluster nodes on free loopback ports under ``root`` (data in ``root/redis-P``, logs in
    ``root/logs``), each with ``appendonly yes`` and ``appendfsync``."""

    root: Path
    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = 2000  # cluster-node-timeout: how fast a dead master is failed over
    appendfsync: str = "always"
    tls: bool = False  # clients, replication and the cluster bus over TLS only (a test CA under root/certs)
    clock_offset_s: dict[int, float] = field(default_factory=dict)  # node index -> its wall clock's offset
    ports: list[int] = field(default_factory=list)  # filled by start()
    procs: dict[int, Proc] = field(default_factory=dict)  # port -> process
    bus_ports: dict[int, int] = field(default_factory=dict)  # port -> cluster bus port
    _lost: dict[int, list[tuple[int, int]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pick_ports()  # known before start(): the URL goes into the services' settings first
        if self.tls:
            make_test_ca(self.root / "certs", client_auth=True)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.ports)
        if self.ca_file is None:
            return f"redis+cluster://{hosts}/"
        return f"rediss+cluster://{hosts}/?ssl_ca_certs={self.ca_file}"

    @property
    def ca_file(self) -> Path | None:
        """The CA of the nodes' certificates when they speak TLS only (``tls``)."""
        return self.root / "certs" / "ca.crt" if self.tls else None

    def cli(self, port: int) -> list[str]:
        """``redis-cli`` in cluster mode against one node (with TLS when the nodes speak it)."""
        argv = [shutil.which("redis-cli") or "redis-cli", "-c", "-p", str(port)]
        return argv + (["--tls", "--cacert", str(self.ca_file)] if self.ca_file is not None else [])

    @property
    def proc(self) -> Proc | None:
        """Always None: there is no single process (for callers written for one server)."""
        return None

    @property
    def size(self) -> int:
        return self.masters * (1 + self.replicas_per_master)

    def start(self, *, timeout_s: float = 60.0) -> RedisClusterServers:
        """Start the nodes, create the cluster and wait until every node sees it whole (every slot
        assigned, every node known, state ok) and every replica's link to its master is up."""
        try:
            for port in self.ports:
                self.procs[port] = self._node(port).start()
            for port in self.ports:
                wait_port(port, timeout=30)
            self._create()
            self._wait(self._ready, timeout_s, "the cluster to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _pick_ports(self) -> None:
        taken: set[int] = set()
        while len(taken) < 2 * self.size:
            taken.add(free_port())
        picked = sorted(taken)
        self.ports = picked[: self.size]
        self.bus_ports = dict(zip(self.ports, picked[self.size :], strict=True))

    def _node(self, port: int) -> Proc:
        data = self.root / f"redis-{port}"
        data.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            *self._listen(port),
            "--bind",
            HOST,
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_ports[port]),
            "--cluster-config-file",
            f"nodes-{port}.conf",  # relative to --dir
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--repl-diskless-sync-delay",  # a replica's first sync at once, not after 5 s
            "0",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "no",
        ]
        offset = self.clock_offset_s.get(self.ports.index(port))
        env = clock_offset_env(offset, self.root / "clockshift") if offset is not None else {}
        return Proc(f"redis-{port}", argv, env, self.root / "logs" / f"redis-{port}.log")

    def _listen(self, port: int) -> list[str]:
        if self.ca_file is None:
            return ["--port", str(port)]
        certs = self.ca_file.parent
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--tls-cert-file",
            str(certs / "server.crt"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "no",
        ]

    def _create(self) -> None:
        argv = [
            shutil.which("redis-cli") or "redis-cli",
            "--cluster",
            "create",
            *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas",
            str(self.replicas_per_master),
            "--cluster-yes",
            *(["--tls", "--cacert", str(self.ca_file)] if self.ca_file is not None else []),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        (self.root / "logs" / "cluster-create.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")

    def _ready(self) -> bool:
        for port in self.ports:
            info = self._cluster_info(port)
            nodes = self._nodes(port)
            if info is None or nodes is None:
                return False
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_slots_assigned") != str(SLOTS)
                or info.get("cluster_known_nodes") != str(self.size)
            ):
                return False
            masters = [node for node in nodes if node.master and node.slots]
            replicas = [node for node in nodes if "slave" in node.flags]
            if len(masters) != self.masters or len(replicas) != self.size - self.masters:
                return False  # every node must see every role (gossip spreads them)
            me = next(node for node in nodes if "myself" in node.flags)
            if not self._synced(port, replica=not me.master):
                return False
        return True

    # Queries; a node that does not answer is None.

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=port,
            socket_timeout=3,
            socket_connect_timeout=3,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            ssl=self.ca_file is not None,
            ssl_ca_certs=None if self.ca_file is None else str(self.ca_file),
        )

    def _ask(self, port: int, *args: str) -> str | None:
        with self._client(port) as client:
            try:
                return str(client.execute_command(*args))
            except (redis.ConnectionError, redis.TimeoutError):
                return None

    def _cluster_info(self, port: int) -> dict[str, str] | None:
        text = self._ask(port, "CLUSTER", "INFO")
        if text is None:
            return None
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _nodes(self, port: int) -> list[NodeEntry] | None:
        text = self._ask(port, "CLUSTER", "NODES")
        if text is None:
            return None
        return [NodeEntry.parse(line) for line in text.splitlines() if line.strip()]

    def _info(self, port: int, section: str) -> dict[str, object] | None:
        with self._client(port) as client:
            try:
                return dict(client.info(section))
            except (redis.ConnectionError, redis.TimeoutError):
                return None

    def _synced(self, port: int, *, replica: bool) -> bool:
        """A replica's link to its master is up, and the node is not loading or rewriting its
        append-only file (a replica rewrites it after a full sync and ignores SIGTERM meanwhile)."""
        persistence = self._info(port, "persistence")
        if persistence is None or any(
            str(persistence.get(name, 0)) != "0"
            for name in ("loading", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
        ):
            return False
        if not replica:
            return True
        replication = self._info(port, "replication")
        return replication is not None and replication.get("master_link_status") == "up"

    def _live(self) -> list[int]:
        return [port for port in self.ports if self.procs[port].alive()]

    def _view(self) -> tuple[int, list[NodeEntry]]:
        """``CLUSTER NODES`` of the first live node that answers, with its port."""
        for port in self._live():
            nodes = self._nodes(port)
            if nodes is not None:
                return port, nodes
        raise RuntimeError("no node of the cluster answers")

    @staticmethod
    def _wait(done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s} s for {what}")
            time.sleep(0.1)

    # The cluster's layout.

    def master_ports(self) -> list[int]:
        """Ports of the masters that run and are not marked failed, in the order of their first slot
        (masters without slots last)."""
        _, nodes = self._view()
        live = set(self._live())
        masters = [node for node in nodes if node.master and not node.failed and node.port in live]
        masters.sort(key=lambda node: min((first for first, _ in node.slots), default=SLOTS))
        return [node.port for node in masters]

    def master_of(self, key: str) -> int:
        """Port of the master serving ``key``'s slot, as a live node sees it."""
        port, nodes = self._view()
        slot = self._ask(port, "CLUSTER", "KEYSLOT", key)
        if slot is None:
            raise RuntimeError(f"node {port} did not answer CLUSTER KEYSLOT")
        owner = slot_owners(nodes)[int(slot)]
        if owner is None:
            raise RuntimeError(f"no master serves slot {slot}")
        return owner.port

    def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the replicas of the master on ``master_port``, as a live node sees them."""
        _, nodes = self._view()
        ids = [node.node_id for node in nodes if node.port == master_port]
        return [node.port for node in nodes if ids and node.master_id == ids[0]]

    # Faults.

    def kill(self, port: int) -> None:
        """kill -9 one node (the slots it served are noted for wait_failover)."""
        try:
            _, nodes = self._view()
        except RuntimeError:
            nodes = []
        served = [r for node in nodes if node.port == port and node.master for r in node.slots]
        if served:
            self._lost[port] = served
        self.procs[port].kill()

    def crash(self) -> None:
        """kill -9 the master serving slot 0."""
        self.kill(self.master_ports()[0])

    def wait_failover(self, dead_port: int, *, timeout_s: float = 60.0) -> int:
        """Wait until every live node reports cluster_state:ok and sees the slots ``dead_port``
        served owned by one live master; returns that master's port."""
        ranges = self._lost.get(dead_port)
        if not ranges:
            _, nodes = self._view()
            ranges = [r for node in nodes if node.port == dead_port and node.master for r in node.slots]
        if not ranges:
            raise ValueError(f"node {dead_port} served no slots")
        slots = [slot for first, last in ranges for slot in range(first, last + 1)]
        taken_by: list[int] = []

        def taken_over() -> bool:
            live = [port for port in self._live() if port != dead_port]
            seen: set[int] = set()
            for port in live:
                info = self._cluster_info(port)
                nodes = self._nodes(port)
                if info is None or nodes is None or info.get("cluster_state") != "ok":
                    return False
                owners = slot_owners(nodes)
                for slot in slots:
                    owner = owners[slot]
                    if owner is None or owner.port not in live or owner.failed:
                        return False
                    seen.add(owner.port)
            if len(seen) != 1:
                return False
            taken_by.append(seen.pop())
            return True

        self._wait(taken_over, timeout_s, f"the slots of {dead_port} to get a new master")
        return taken_by[0]

    def restart(self, port: int, *, timeout_s: float = 60.0) -> None:
        """Start a killed node again from its own files; it rejoins (as a replica when its slots were
        failed over). Waits until it reports cluster_state:ok, a replica's link to its master is up and
        the other nodes no longer mark it failed and agree on its role."""
        self.procs[port].start()
        wait_port(port, timeout=30)
        self._lost.pop(port, None)

        def rejoined() -> bool:
            info = self._cluster_info(port)
            own = self._nodes(port)
            if info is None or own is None or info.get("cluster_state") != "ok":
                return False
            me = next(node for node in own if "myself" in node.flags)
            if not self._synced(port, replica=not me.master):
                return False
            for other in self._live():
                if other == port:
                    continue
                nodes = self._nodes(other)
                if nodes is None:
                    return False
                seen = next((node for node in nodes if node.port == port), None)
                if seen is None or seen.failed or seen.master != me.master:
                    return False
            return True

        self._wait(rejoined, timeout_s, f"node {port} to rejoin the cluster")

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM every node, repeated each second for the nodes still running (Redis drops a
        SIGTERM that comes while it writes its first append-only file), kill -9 after ``timeout_s``.
        Safe to call twice."""
        deadline = time.monotonic() + timeout_s
        next_signal = 0.0
        while (running := [p for p in self.procs.values() if p.alive()]) and time.monotonic() < deadline:
            if time.monotonic() >= next_signal:
                for proc in running:
                    proc.signal(signal.SIGTERM)
                next_signal = time.monotonic() + 1.0
            time.sleep(0.05)
        for proc in self.procs.values():
            proc.kill()
