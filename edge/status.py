"""Status from the real OS: Wi-Fi link and RSSI, IP address, free memory, uptime, overall health.

Linux sources, each optional (a missing one reads as "unknown", never an exception):
``/proc/net/wireless`` (RSSI in dBm of the first wireless interface), ``/sys/class/net/*/operstate``,
the address of the route to the broker (a UDP ``connect`` sends nothing), ``/proc/meminfo``
(``MemAvailable`` -> ``free_heap`` in bytes) and ``/proc/uptime`` (-> ``uptime`` in ms).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class OsStatus:
    wifi_connected: bool
    wifi_interface: str | None
    rssi: int | None
    ip: str | None
    free_heap: int | None
    uptime_ms: int | None

    def wifi(self) -> dict[str, object]:
        section: dict[str, object] = {
            "connected": self.wifi_connected,
            "rssi": self.rssi or 0,
            "ip": self.ip or "",
        }
        if self.wifi_interface is None:
            section["interface"] = "none"
        return section


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def wireless(proc: Path = Path("/proc")) -> tuple[str | None, int | None]:
    """The first wireless interface and its signal level (dBm) from ``/proc/net/wireless``."""
    text = _read(proc / "net" / "wireless")
    if not text:
        return None, None
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 3:
            try:
                level = int(float(fields[2].rstrip(".")))
            except ValueError:
                level = None
            if level is not None and level > 0:  # some drivers report 256 + dBm
                level -= 256
            return name.strip(), level
    return None, None


def interface_up(name: str, sys_net: Path = Path("/sys/class/net")) -> bool:
    state = _read(sys_net / name / "operstate")
    return state is not None and state.strip() in ("up", "unknown")


def route_ip(host: str = "1.1.1.1", port: int = 80) -> str | None:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, port))
            return str(sock.getsockname()[0])
    except OSError:
        return None


def mem_available(proc: Path = Path("/proc")) -> int | None:
    text = _read(proc / "meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def uptime_ms(proc: Path = Path("/proc")) -> int | None:
    text = _read(proc / "uptime")
    try:
        return int(float(text.split()[0]) * 1000) if text else None
    except (ValueError, IndexError):
        return None


def read_os_status(*, broker_host: str = "1.1.1.1", proc: Path = Path("/proc")) -> OsStatus:
    interface, rssi = wireless(proc)
    connected = interface is not None and interface_up(interface)
    return OsStatus(
        wifi_connected=connected,
        wifi_interface=interface,
        rssi=rssi,
        ip=route_ip(broker_host),
        free_heap=mem_available(proc),
        uptime_ms=uptime_ms(proc),
    )


def overall(*, mqtt_connected: bool, sensors_ok: int, sensors_total: int, free_heap: int | None) -> str:
    """``alive`` when all is well, ``warning`` when degraded, ``error`` when it cannot do its job."""
    if sensors_ok == 0:
        return "error"
    if not mqtt_connected or sensors_ok < sensors_total or (free_heap is not None and free_heap < 16 << 20):
        return "warning"
    return "alive"
