"""scripts/ensure-services.sh (``make run``/``make test`` set-up): missing servers are installed with
apt-get when the user can (root or passwordless sudo), then started; otherwise it prints the apt-get
line and exits 1.

The script runs with a PATH from which the servers are hidden and, first on it, a stand-in
``apt-get`` (and ``sudo``/``id`` where the test needs them) that records its arguments and "installs"
a package by linking this machine's real binaries in. So what it then starts are real servers, on
free ports, with data in a folder of the test's own; the services the other tests use are untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure-services.sh"
APT_LINE = (
    "sudo apt-get install -y"
    " mosquitto mosquitto-clients redis-server redis-tools postgresql postgresql-client"
)
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# What the packages bring (and so what the stand-in PATH must not have before they are "installed").
HIDDEN_PREFIXES = ("redis", "mosquitto", "psql", "pg_", "postgres", "initdb", "apt", "sudo")
PG_VERSIONS = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


def _real(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join(SYSTEM_DIRS))
    if path is None:
        pytest.skip(f"{name} is not installed here")
    return path


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@dataclass
class Sandbox:
    """A stand-in system: a PATH with the servers hidden, empty PostgreSQL folders, a data folder."""

    root: Path
    tools: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def fake_bin(self) -> Path:
        return self.root / "fake-bin"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def apt_log(self) -> Path:
        return self.root / "apt.log"

    def prepare(self) -> None:
        for folder in (self.fake_bin, self.root / "pg-lib", self.root / "pg-etc"):
            folder.mkdir()

    def add_apt_get(self) -> None:
        """apt-get that logs ``DEBIAN_FRONTEND`` and its arguments, and installs by linking."""

        def link(*targets: str) -> str:
            return " ".join(f'ln -s "{target}" "{self.fake_bin}/";' for target in targets)

        installs = {
            "redis-server": link(_real("redis-server")),
            "redis-tools": link(_real("redis-cli")),
            "mosquitto": link(_real("mosquitto")),
            "mosquitto-clients": link(_real("mosquitto_sub")),
        }
        if PG_VERSIONS:  # the server's folder (found by the script), psql on the PATH
            installs["postgresql"] = f'ln -s "{PG_VERSIONS[-1].parents[1]}" "{self.root}/pg-lib/";'
            installs["postgresql-client"] = link(str(PG_VERSIONS[-1].parent / "psql"))
        cases = "\n".join(f"      {package}) {command} ;;" for package, command in installs.items())
        _write_exe(
            self.fake_bin / "apt-get",
            f"""#!/bin/bash
echo "apt-get DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >>"{self.apt_log}"
if [ "$1" = install ]; then
  for package in "$@"; do
    case "$package" in
{cases}
    esac
  done
fi
""",
        )

    def add_user(self, *, sudo: bool | None) -> None:
        """Not root (``id -u`` says 1000); with a passwordless sudo (True), a sudo that asks for a
        password (False) or none (None)."""
        _write_exe(self.fake_bin / "id", '#!/bin/bash\n[ "$1" = -u ] && { echo 1000; exit 0; }\nexit 1\n')
        if sudo is None:
            return
        _write_exe(
            self.fake_bin / "sudo",
            f"""#!/bin/bash
[ "$1" = -n ] && shift
echo "sudo $*" >>"{self.apt_log}"
if [ "$*" = true ]; then {"exit 0" if sudo else "echo 'sudo: a password is required' >&2; exit 1"}; fi
exec "$@"
""",
        )

    def add_root(self) -> None:
        _write_exe(self.fake_bin / "id", '#!/bin/bash\n[ "$1" = -u ] && { echo 0; exit 0; }\nexit 1\n')

    def run(self, *, answering: set[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the script; the services in ``answering`` are the machine's own, the others get free
        ports where nothing answers yet (the same ones again when ``answering`` is not given)."""
        if answering is not None:
            defaults = {"mqtt": 1883, "redis": 6379, "pg": 5432}
            self.ports = {name: port if name in answering else free_port() for name, port in defaults.items()}
        env = {
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PATH": f"{self.fake_bin}:{self.tools}",
            "PYTHON": sys.executable,
            "ENSURE_SERVICES_RUN_DIR": str(self.run_dir),
            "ENSURE_SERVICES_SBIN_DIRS": str(self.tools),
            "ENSURE_SERVICES_PG_LIB_DIR": str(self.root / "pg-lib"),
            "ENSURE_SERVICES_PG_ETC_DIR": str(self.root / "pg-etc"),
            "ENERLINK_LOCAL_MQTT_PORT": str(self.ports["mqtt"]),
            "ENERLINK_LOCAL_REDIS_PORT": str(self.ports["redis"]),
            "ENERLINK_LOCAL_PG_PORT": str(self.ports["pg"]),
        }
        return subprocess.run(
            [_real("bash"), str(SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=180,
            check=False,
        )

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []

    def stop_servers(self) -> None:
        """Stop whatever the script started under the sandbox's data folder."""
        pids: list[int] = []
        for pid_file in (
            self.run_dir / "mosquitto" / "mosquitto.pid",
            self.run_dir / "postgres" / "postmaster.pid",
        ):
            if pid_file.exists():
                pids.append(int(pid_file.read_text().split()[0]))
        if (self.run_dir / "redis").exists():
            with contextlib.suppress(redis.ConnectionError), redis.Redis(port=self.ports["redis"]) as client:
                pids.append(int(client.info("server")["process_id"]))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGINT)  # each of them stops on it (PostgreSQL: fast shutdown)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every command of this system but the servers, their clients, apt-get and sudo."""
    folder = tmp_path_factory.mktemp("tools")
    for system_dir in SYSTEM_DIRS:
        if not Path(system_dir).is_dir():
            continue
        for entry in Path(system_dir).iterdir():
            name = entry.name
            if name.startswith(HIDDEN_PREFIXES) or (folder / name).exists():
                continue
            if entry.is_file() and os.access(entry, os.X_OK):
                (folder / name).symlink_to(entry)
    folder.chmod(0o755)
    return folder


@pytest.fixture
def sandbox(tools: Path) -> Iterator[Sandbox]:
    # Under /tmp and open to all: as root the script runs PostgreSQL and Mosquitto as their own users.
    root = Path(tempfile.mkdtemp(prefix="enerlink-ensure-", dir="/tmp"))
    root.chmod(0o755)
    box = Sandbox(root, tools)
    box.prepare()
    yield box
    box.stop_servers()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install -y shellcheck)"
)
def test_script_passes_shellcheck() -> None:
    result = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not PG_VERSIONS, reason="PostgreSQL server binaries are not installed here")
def test_missing_servers_are_installed_with_apt_then_started(sandbox: Sandbox) -> None:
    if os.geteuid() != 0:
        sandbox.add_user(sudo=True)  # the same path through a passwordless sudo
    sandbox.add_apt_get()
    result = sandbox.run(answering=set())
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    packages = "redis-server redis-tools postgresql postgresql-client mosquitto mosquitto-clients"
    assert f"[services] installing {packages} with apt-get" in out
    assert [c for c in sandbox.apt_calls() if c.startswith("apt-get")] == [
        "apt-get DEBIAN_FRONTEND= update -qq",
        f"apt-get DEBIAN_FRONTEND=noninteractive install -y -q {packages}",
    ]
    assert "install what is missing" not in out
    # Real servers answer on the sandbox's ports, PostgreSQL with the roles and databases.
    client = redis.Redis(port=sandbox.ports["redis"], socket_timeout=5)
    assert client.ping()
    client.close()
    url = f"postgresql://postgres@127.0.0.1:{sandbox.ports['pg']}/postgres"
    with psycopg.connect(url, connect_timeout=10) as conn:
        roles = {
            r for (r,) in conn.execute("select rolname from pg_roles where rolname in ('root', 'postgres')")
        }
        databases = {d for (d,) in conn.execute("select datname from pg_database")}
    assert roles == {"root", "postgres"}
    assert {"enerlink", "test"} <= databases
    mqtt = subprocess.run(
        [
            _real("mosquitto_sub"),
            "-p",
            str(sandbox.ports["mqtt"]),
            "-t",
            "$SYS/broker/version",
            "-C",
            "1",
            "-W",
            "10",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mqtt.returncode == 0 and mqtt.stdout.startswith("mosquitto version"), mqtt.stderr
    # A second run finds everything answering and installs nothing more.
    again = sandbox.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installing" not in again.stdout and "creating" not in again.stdout
    assert len([c for c in sandbox.apt_calls() if c.startswith("apt-get")]) == 2


def test_with_passwordless_sudo_only_the_missing_packages_are_installed(sandbox: Sandbox) -> None:
    sandbox.add_user(sudo=True)
    sandbox.add_apt_get()
    result = sandbox.run(answering={"mqtt", "pg"})  # only Redis is missing
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[services] installing redis-server redis-tools with apt-get" in out
    assert sandbox.apt_calls() == [
        "sudo true",  # may it? (without a password)
        "sudo apt-get update -qq",
        "apt-get DEBIAN_FRONTEND= update -qq",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -q redis-server redis-tools",
    ]
    client = redis.Redis(port=sandbox.ports["redis"], socket_timeout=5)
    assert client.ping()
    client.close()
    assert "mosquitto answers" in out and "postgresql answers" in out
    # Nothing missing: sudo is not even asked.
    calls = sandbox.apt_calls()
    again = sandbox.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "redis answers" in again.stdout
    assert sandbox.apt_calls() == calls


@pytest.mark.parametrize("sudo", [False, None], ids=["sudo-asks-a-password", "no-sudo"])
def test_a_user_who_cannot_install_gets_the_apt_line(sandbox: Sandbox, sudo: bool | None) -> None:
    sandbox.add_user(sudo=sudo)
    sandbox.add_apt_get()
    result = sandbox.run(answering={"pg"})
    assert result.returncode == 1
    assert "[services] redis-server is not installed" in result.stdout
    assert "[services] mosquitto is not installed" in result.stdout
    assert f"[services]   {APT_LINE}" in result.stdout
    assert sandbox.apt_calls() == (["sudo true"] if sudo is False else [])  # asked, refused
    assert not (sandbox.fake_bin / "redis-server").exists()


def test_without_apt_get_root_gets_the_apt_line(sandbox: Sandbox) -> None:
    sandbox.add_root()
    result = sandbox.run(answering=set())
    assert result.returncode == 1
    assert "[services] postgresql is not installed" in result.stdout
    assert f"[services]   {APT_LINE}" in result.stdout
    assert "installing" not in result.stdout
    assert not (sandbox.run_dir / "redis").exists()
