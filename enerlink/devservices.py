"""Local Mosquitto instances from the project's own configuration (tests, ``make run``).

``mosquitto/mosquitto.conf`` is the production broker (the eclipse-mosquitto container's paths,
authentication, ACLs, an optional TLS listener). Two rewrites of it run locally:

* :func:`mosquitto_config` - the development/test broker: every queue, in-flight, persistence and
  size limit of the production file, but anonymous, on one loopback listener, with its own
  persistence folder, log and pid file. Authentication, listeners and TLS options are dropped.
* :func:`secured_mosquitto_config` - the production file itself, rewritten only for paths
  (``/mosquitto/...`` -> a local root) and ports (each production listener -> a loopback port),
  with the optional ``conf.d`` files chosen by the caller inlined. The broker security tests run it.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

MOSQUITTO_DIR = Path(__file__).resolve().parent.parent / "mosquitto"
PROJECT_CONF = MOSQUITTO_DIR / "mosquitto.conf"
CONTAINER_ROOT = "/mosquitto"

# Options that belong to one instance (where it listens, writes, logs, which user it runs as).
_INSTANCE_KEYS = {"listener", "persistence_location", "log_dest", "pid_file", "user", "include_dir"}
# Authentication/authorisation: test brokers are anonymous.
_AUTH_KEYS = {
    "allow_anonymous",
    "password_file",
    "acl_file",
    "per_listener_settings",
    "plugin",
    "auth_plugin",
    "psk_file",
}
# Options that configure the listener above them (TLS, protocol, binding): dropped with it.
_LISTENER_KEYS = {
    "bind_address",
    "bind_interface",
    "socket_domain",
    "protocol",
    "mount_point",
    "http_dir",
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "crlfile",
    "dhparamfile",
    "ciphers",
    "ciphers_tls1.3",
    "tls_version",
    "tls_engine",
    "tls_keyform",
    "tls_engine_kpass_sha1",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
    "psk_hint",
}
_DROPPED_FOR_TESTS = _INSTANCE_KEYS | _AUTH_KEYS | _LISTENER_KEYS


def _key(line: str) -> str | None:
    words = line.split(maxsplit=1)
    if not words or words[0].startswith("#"):
        return None
    key = words[0]
    return "plugin_opt" if key.startswith(("plugin_opt_", "auth_opt_")) else key


def mosquitto_config(*, port: int, data_dir: Path, source: Path = PROJECT_CONF, extra: str = "") -> str:
    """The project's broker limits for one anonymous local instance on ``127.0.0.1:port``."""
    kept = [
        line
        for line in source.read_text(encoding="utf-8").splitlines()
        if (key := _key(line)) is not None and key not in _DROPPED_FOR_TESTS and key != "plugin_opt"
    ]
    local = [
        f"persistence_location {data_dir}/",
        f"log_dest file {data_dir}/mosquitto.log",
        f"pid_file {data_dir}/mosquitto.pid",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
    ]
    return "\n".join([*kept, *local, extra, ""])


def _rewrite(line: str, *, root: Path, ports: Mapping[int, int]) -> str:
    words = line.split()
    if not words or words[0].startswith("#"):
        return line
    if words[0] == "listener":
        production_port = int(words[1])
        if production_port not in ports:
            raise ValueError(f"no local port given for production listener {production_port}")
        return f"listener {ports[production_port]} 127.0.0.1"
    if words[0] == "log_dest":
        return f"log_dest file {root}/mosquitto.log"
    return " ".join(
        str(root) + word[len(CONTAINER_ROOT) :] if word.startswith(CONTAINER_ROOT + "/") else word
        for word in words
    )


def secured_mosquitto_config(
    *,
    root: Path,
    ports: Mapping[int, int],
    source: Path = PROJECT_CONF,
    includes: Sequence[Path] = (),
) -> str:
    """The production configuration with ``/mosquitto/`` mapped to ``root`` and each production
    listener port ``p`` to ``127.0.0.1:ports[p]``. ``include_dir`` is replaced by the rewritten
    text of ``includes`` (e.g. ``mosquitto/conf.d/tls.conf.example`` to enable TLS)."""
    lines: list[str] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if _key(line) == "include_dir":
            for include in includes:
                lines.append(f"# --- {include.name}")
                lines.extend(
                    _rewrite(inc, root=root, ports=ports)
                    for inc in include.read_text(encoding="utf-8").splitlines()
                )
            continue
        lines.append(_rewrite(line, root=root, ports=ports))
    return "\n".join([*lines, ""])


def prepare_data_dir(data_dir: Path) -> None:
    """Mosquitto started as root drops to user ``mosquitto``: let that user use its folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in (data_dir, *data_dir.rglob("*")):
        shutil.chown(path, user=user.pw_uid, group=user.pw_gid)
    data_dir.chmod(0o755)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write a local Mosquitto configuration")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    prepare_data_dir(args.data_dir)
    conf = args.data_dir / "mosquitto.conf"
    conf.write_text(mosquitto_config(port=args.port, data_dir=args.data_dir.resolve()), encoding="utf-8")
    print(conf)
