"""A default MQTT client id per worker: unique among running workers, stable across restarts.

Two workers with the same client id evict each other from the broker (MQTT 5: DISCONNECT 0x8E
*session taken over*) several times a second. :func:`claim_client_id` gives each worker
``<prefix>-<host>-<n>``: it takes the lowest slot ``n`` whose lock file in ``state_dir`` it can
lock exclusively (``flock``; the lock goes with the process, even on kill -9). A restarted worker
finds its slot free again and gets its old id back (and with it its persistent session); a second
worker running at the same time on the same host gets the next slot. In containers each replica has
its own hostname, so ``<host>`` alone tells them apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from enerlink.config import ConfigError

MAX_SLOTS = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def host_label(host: str | None = None) -> str:
    """The host part of a client id: the short hostname, with only ``[A-Za-z0-9_.-]``."""
    name = (host or socket.gethostname() or "host").split(".")[0]
    return _UNSAFE.sub("-", name).strip("-") or "host"


@contextlib.contextmanager
def claim_client_id(
    prefix: str, *, state_dir: Path, host: str | None = None, setting: str = "state dir"
) -> Iterator[str]:
    """Hold the lowest free slot of ``<prefix>-<host>-<n>`` for the duration of the block."""
    base = f"{prefix}-{host_label(host)}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting} {state_dir}: cannot create it for the client id lock ({exc})") from exc
    for slot in range(1, MAX_SLOTS + 1):
        client_id = f"{base}-{slot}"
        path = state_dir / f"{client_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{setting} {state_dir}: cannot open {path.name} ({exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield client_id
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise ConfigError(f"{setting} {state_dir}: all {MAX_SLOTS} client id slots of {base} are taken")
