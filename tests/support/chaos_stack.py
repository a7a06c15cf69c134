"""The whole pipeline on private services, for the chaos test and the soak.

Everything runs on free loopback ports under one temporary folder, never on the machine's shared
PostgreSQL, Redis or Mosquitto:

* Mosquitto from the project's configuration (persistence on, saved only on a clean stop, which
  keeps its sessions and queues; a kill -9 loses them);
* Redis with ``appendonly yes`` and ``appendfsync always``. Without an append-only file a Redis
  restart loses the live window the aggregator has not closed yet, although the ingest already
  acknowledged those messages to the broker. The ingest acknowledges only after Redis answered the
  write, and Redis write()s the AOF before it answers, so a kill -9 of Redis alone is survived with
  ``everysec`` too; ``always`` also fsyncs before answering, so a power cut or VM crash loses
  nothing acknowledged either (``everysec``: up to ~1 s). Batches of up to
  ``ENERLINK_INGEST_BATCH`` messages share one fsync, so the cost is one fsync per batch;
* PostgreSQL from :mod:`tests.support.pgserver`;
* a TCP proxy (:mod:`tests.support.chaos_proxy`) between the fleet and the broker, to cut the edge;
* ``enerlink ingest`` x N (one shared-subscription group), ``enerlink aggregate`` and a simulated
  fleet ``enerlink edge --steps N`` writing its publish log (``ENERLINK_EDGE_PUBLISH_LOG``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import psycopg
import redis

from tests.support.ingest_support import ago, data_message

if TYPE_CHECKING:
    from enerlink.schemas.wire import Keys
    from tests.support.redis_cluster import RedisClusterServers
from tests.support.pgserver import PgServer
from tests.support.services import ROOT, Broker, free_port, wait_port

PROBE_METER = "PROBE0001"


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """CPU time (user + system) a process has used so far, and with ``reaped`` that of its children
    that have exited and been waited for (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    """The live child processes of ``parent`` (not counting the ``ps`` this runs)."""
    with subprocess.Popen(
        ["ps", "-o", "pid=", "--ppid", str(parent)], stdout=subprocess.PIPE, text=True
    ) as ps:
        out, _ = ps.communicate()
    return [pid for pid in map(int, out.split()) if pid != ps.pid]


def postmaster_pid(url: str) -> int | None:
    """The pid of the PostgreSQL server behind ``url`` (None when it does not run on this host)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("show data_directory").fetchone()
    try:
        return int((Path(row[0]) / "postmaster.pid").read_text().split()[0]) if row else None
    except (OSError, ValueError, IndexError):
        return None


def cluster_cpu_seconds(postmaster: int | None) -> float:
    """The PostgreSQL cluster's CPU seconds: the postmaster, its live children and the exited ones
    (a backend's CPU lands in the postmaster's cutime once it is reaped). 0 when not on this host."""
    if postmaster is None:
        return 0.0
    return cpu_seconds(postmaster, reaped=True) + sum(map(cpu_seconds, child_pids(postmaster)))


@dataclass
class Proc:
    """A subprocess with a clean environment (no ENERLINK_* of the caller leaks in) and a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Proc:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ENERLINK_")}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, env={**base, **self.env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def alive(self) -> bool:
        return self.pid is not None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """kill -9 and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait (kill -9 after ``timeout``); returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def enerlink(name: str, args: list[str], *, env: dict[str, str], logs: Path) -> Proc:
    return Proc(name, [sys.executable, "-m", "enerlink", *args], env, logs / f"{name}.log")


@dataclass
class RedisServer:
    """A private redis-server with an append-only file (see the module docstring for why)."""

    root: Path
    port: int = field(default_factory=free_port)
    appendfsync: str = "always"
    proc: Proc | None = None
    active_defrag: bool = False  # set by start(): whether this build could switch it on

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--protected-mode",
            "no",
        ]
        if self.proc is None:
            self.proc = Proc("redis", argv, {}, self.root / "logs" / "redis.log")
        self.proc.start()
        wait_port(self.port, timeout=30)
        self.active_defrag = self._enable_active_defrag()
        return self

    def _enable_active_defrag(self) -> bool:
        """As docker-compose.yml does; only a Redis built with its bundled jemalloc can (Debian's
        package refuses), so this returns whether it is on."""
        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            client.config_set("activedefrag", "yes")
        except redis.ResponseError:
            return False
        finally:
            client.close()
        return True

    def crash(self) -> None:
        """kill -9: what is not in the append-only file is gone."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@dataclass
class Proxy:
    """The loopback TCP proxy between the fleet and the broker."""

    target_port: int
    root: Path
    port: int = field(default_factory=free_port)
    proc: Proc | None = None
    frozen: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        if self.proc is None:
            argv = [sys.executable, "-m", "tests.support.chaos_proxy", str(self.port), str(self.target_port)]
            self.proc = Proc("proxy", argv, {}, self.root / "logs" / "proxy.log")
        self.proc.start()
        wait_port(self.port, timeout=30)
        return self

    def cut(self) -> None:
        """Every connection reset, new ones refused."""
        assert self.proc is not None
        self.proc.kill()

    def freeze(self) -> None:
        """A silent network: bytes neither forwarded nor refused."""
        assert self.proc is not None
        self.proc.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        if self.proc is not None:
            if self.frozen:
                self.thaw()
            self.proc.kill()


@dataclass(frozen=True)
class Exit:
    """A pipeline process that exited on its own (not killed by a fault)."""

    name: str
    code: int | None
    at: str
    tail: str


@dataclass(frozen=True)
class StackConfig:
    meters: int = 50
    interval_s: float = 1.0
    steps: int = 120
    status_interval_s: float = 30.0
    workers: int = 2
    grace_s: float = 5.0
    retention_s: int = 7200
    seed: int = 0
    edge_metrics_port: int = 0
    ingest_metrics_ports: tuple[int, ...] = ()
    aggregator_metrics_port: int = 0
    confirm_wait_s: float = 600.0
    resend_after_s: float = 20.0
    redis_cluster: bool = False  # a local Redis Cluster (3 masters, 3 replicas) instead of one server


class Stack:
    """Private services + the EnerLink processes; ``start()``, ``stop()``; logs under ``root/logs``."""

    def __init__(self, config: StackConfig, *, root: Path | None = None) -> None:
        self.config = config
        self.root = root or Path(tempfile.mkdtemp(prefix="enerlink-chaos-"))
        self.root.chmod(0o755)  # Mosquitto started as root drops to its own user
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.publish_log = self.root / "published.csv"
        self.exits: list[Exit] = []
        self.pg = PgServer()
        from tests.support.redis_cluster import RedisClusterServers  # it builds on this module's Proc

        self.redis: RedisServer | RedisClusterServers = (
            RedisClusterServers(self.root) if config.redis_cluster else RedisServer(self.root)
        )
        # saved on a clean stop only: a kill -9 loses every session and every message it acknowledged
        self.broker = Broker(data_dir=self.root / "mosquitto", extra_conf="autosave_interval 86400")
        self.proxy = Proxy(self.broker.port, self.root)
        common = {
            "ENERLINK_REDIS_URL": self.redis.url,
            "ENERLINK_DATABASE_URL": self.pg.url,
            "ENERLINK_TIMEZONE": "UTC",
            "ENERLINK_RETENTION_S": str(config.retention_s),
            "ENERLINK_LOG_LEVEL": "INFO",
        }
        self.workers = [
            enerlink(
                f"ingest-{i}",
                ["ingest"],
                env={
                    **common,
                    "ENERLINK_MQTT_URL": self.broker.url,
                    "ENERLINK_INGEST_CLIENT_ID": f"chaos-ingest-{i}",
                    # the fleet re-sends after resend_after_s (20 s): confirm well within it
                    "ENERLINK_INGEST_CONFIRM_INTERVAL_S": "5",
                    "ENERLINK_INGEST_METRICS_PORT": str(
                        config.ingest_metrics_ports[i] if i < len(config.ingest_metrics_ports) else 0
                    ),
                },
                logs=self.logs,
            )
            for i in range(config.workers)
        ]
        self.aggregator = enerlink(
            "aggregator",
            ["aggregate"],
            env={
                **common,
                "ENERLINK_MQTT_URL": self.broker.url,
                "ENERLINK_AGGREGATE_GRACE_S": str(config.grace_s),
                "ENERLINK_AGGREGATE_WORKERS": "1",
                "ENERLINK_AGGREGATOR_METRICS_PORT": str(config.aggregator_metrics_port),
            },
            logs=self.logs,
        )
        self.fleet = enerlink(
            "fleet",
            ["edge", "--simulate", "--steps", str(config.steps)],
            env={
                **common,
                "ENERLINK_MQTT_URL": self.proxy.url,
                "ENERLINK_SIM_METERS": str(config.meters),
                "ENERLINK_SIM_INTERVAL": str(config.interval_s),
                "ENERLINK_SIM_STATUS_INTERVAL": str(config.status_interval_s),
                "ENERLINK_SIM_SEED": str(config.seed),
                "ENERLINK_SIM_CLIENT_ID": "chaos-fleet",
                "ENERLINK_STATE_DIR": str(self.root / "state"),
                "ENERLINK_EDGE_PUBLISH_LOG": str(self.publish_log),
                # the run ends once the pipeline confirmed every reading (re-sending meanwhile); the
                # meters re-send what stays unconfirmed after 20 s instead of 2 minutes
                "ENERLINK_SIM_CONFIRM_WAIT_S": str(config.confirm_wait_s),
                "ENERLINK_EDGE_RESEND_AFTER_S": str(config.resend_after_s),
                "ENERLINK_EDGE_METRICS_PORT": str(config.edge_metrics_port),
            },
            logs=self.logs,
        )

    @property
    def keys(self) -> Keys:
        """The key names the services use (cut into parts on a Redis Cluster)."""
        from enerlink.config import DEFAULT_REDIS_PARTS
        from enerlink.schemas.wire import Keys

        return Keys(parts=DEFAULT_REDIS_PARTS) if self.config.redis_cluster else Keys()

    def start_services(self) -> None:
        self.pg.start()
        self.redis.start()
        self.broker.start()
        self.proxy.start()

    def start_pipeline(self, *, ready_timeout_s: float = 120.0) -> None:
        """Ingest workers and aggregator; returns once a probe message went broker -> Redis, so the
        shared subscription exists before the fleet publishes (a QoS 2 message to a topic without
        any subscriber is acknowledged and dropped by the broker, by design of MQTT)."""
        for worker in self.workers:
            worker.start()
        self.aggregator.start()
        asyncio.run(self._probe(ready_timeout_s))

    async def _probe(self, timeout_s: float) -> None:
        from enerlink.redis_client import async_client
        from enerlink.schemas.wire import Topics

        keys, topics = self.keys.of(PROBE_METER), Topics()
        payload = data_message(PROBE_METER, at=ago(seconds=1))
        deadline = time.monotonic() + timeout_s
        client = async_client(self.redis.url)
        try:
            while time.monotonic() < deadline:
                # every worker must have subscribed: probe until each one logged a stored message
                try:
                    async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="") as mqtt:
                        await mqtt.publish(topics.data, payload, qos=1)
                except aiomqtt.MqttError:
                    pass
                await asyncio.sleep(1.0)
                if await client.zcard(keys.timeseries(PROBE_METER)) > 0 and all(
                    "subscribing" in w.output() for w in self.workers
                ):
                    await asyncio.sleep(2.0)  # the other workers' SUBSCRIBE follows their log line
                    return
        finally:
            await client.aclose()
        raise TimeoutError("the ingest never stored the probe message:\n" + self.tail())

    def start_fleet(self) -> None:
        self.fleet.start()

    def worker(self, name: str) -> Proc:
        return next(w for w in self.workers if w.name == name)

    def pipeline(self) -> list[Proc]:
        return [*self.workers, self.aggregator]

    def supervise(self, *, down: Collection[str] = ()) -> list[Exit]:
        """Restart ingest workers and the aggregator that exited by themselves, like the compose
        file's ``restart: unless-stopped`` would; ``down`` names those a fault keeps down. Every such
        exit is recorded in :attr:`exits` (a service must survive its dependencies' outages)."""
        found = []
        for proc in self.pipeline():
            if proc.name in down or proc.process is None or proc.alive():
                continue
            exit_ = Exit(proc.name, proc.process.returncode, time.strftime("%H:%M:%S"), proc.output()[-1500:])
            found.append(exit_)
            print(f"supervisor: {proc.name} exited by itself (code {exit_.code}); restarting", flush=True)
            proc.start()
        self.exits.extend(found)
        return found

    def stop_pipeline(self) -> dict[str, int | None]:
        """SIGTERM to the ingest workers and the aggregator: each one's exit code (0 = drained)."""
        return {p.name: p.stop(timeout=30) for p in [*self.workers, self.aggregator]}

    def processes(self) -> dict[str, Proc]:
        procs: dict[str, Proc] = {w.name: w for w in self.workers}
        procs["aggregator"] = self.aggregator
        procs["fleet"] = self.fleet
        if self.redis.proc is not None:
            procs["redis"] = self.redis.proc
        return procs

    def wait_fleet(self, *, timeout_s: float) -> int | None:
        """Wait for the fleet to finish its steps and its queue (supervising the pipeline)."""
        deadline = time.monotonic() + timeout_s
        while self.fleet.alive() and time.monotonic() < deadline:
            self.supervise()
            time.sleep(1.0)
        return self.fleet.process.poll() if self.fleet.process is not None else None

    def broker_pid(self) -> int | None:
        process = self.broker.process
        return process.pid if process is not None and process.poll() is None else None

    def stop(self) -> None:
        for proc in [self.fleet, *self.workers, self.aggregator]:
            proc.stop(timeout=20)
        self.proxy.stop()
        self.broker.stop()
        self.redis.stop()
        self.pg.stop()

    def cleanup(self, *, keep: bool = False) -> None:
        try:
            self.stop()
        finally:
            self.pg.cleanup()
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, chars: int = 3000) -> str:
        parts = []
        for proc in [*self.workers, self.aggregator, self.fleet]:
            parts.append(f"===== {proc.name} =====\n{proc.output()[-chars:]}")
        parts.append(f"===== mosquitto =====\n{self.broker.log()[-chars:]}")
        return "\n".join(parts)
