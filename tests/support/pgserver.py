"""A private PostgreSQL for tests that stop the database (chaos test, soak): ``initdb`` in a temporary
folder, ``pg_ctl`` on a free loopback port with trust authentication, never the machine's server.

``initdb`` refuses to run as root: as root the cluster is owned by the ``postgres`` system user
and every command runs through ``runuser``; as anyone else it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port, wait_port

_BIN_ROOT = Path("/usr/lib/postgresql")


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``pg_ctl``): the newest installed version."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        (p for p in _BIN_ROOT.glob("*/bin") if (p / name).exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError(f"{name} not found on PATH or under {_BIN_ROOT}/*/bin")
    return str(versions[-1] / name)


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PgServer:
    """One private cluster: ``start()`` (initdb on first use), ``stop()``, ``restart(down_s)``."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="enerlink-pg-")))
    started: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        result = subprocess.run(
            [*_as_owner(), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")

    def _initdb(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            pg_bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = on\nmax_connections = 50\nshared_buffers = 64MB\n"
            )

    def start(self) -> PgServer:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._run(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "start")
        wait_port(self.port, timeout=30)
        self.started = True
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """``fast`` rolls back open transactions and disconnects clients; ``immediate`` is a crash."""
        if self.started:
            self._run(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")
            self.started = False

    def cleanup(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
