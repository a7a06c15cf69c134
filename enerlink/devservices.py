"""Local Mosquitto instances from the project's own configuration (tests, ``make run``).

:func:`mosquitto_config` keeps every limit of ``mosquitto/mosquitto.conf`` and replaces only
what is local to one instance: listener port, persistence folder, log and pid files.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

PROJECT_CONF = Path(__file__).resolve().parent.parent / "mosquitto" / "mosquitto.conf"
_LOCAL_KEYS = {"listener", "persistence_location", "log_dest", "pid_file", "allow_anonymous", "user"}


def mosquitto_config(*, port: int, data_dir: Path, source: Path = PROJECT_CONF, extra: str = "") -> str:
    """The project's broker configuration, rewritten for one local instance."""
    kept = [
        line
        for line in source.read_text(encoding="utf-8").splitlines()
        if line.split(maxsplit=1)[:1] and line.split(maxsplit=1)[0] not in _LOCAL_KEYS
    ]
    local = [
        f"persistence_location {data_dir}/",
        f"log_dest file {data_dir}/mosquitto.log",
        f"pid_file {data_dir}/mosquitto.pid",
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
    ]
    return "\n".join([*kept, *local, extra, ""])


def prepare_data_dir(data_dir: Path) -> None:
    """Mosquitto started as root drops to user ``mosquitto``: let that user write its folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in (data_dir, *data_dir.iterdir()):
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
