"""A real, independent subscriber for the edge's publisher tests: ``mosquitto_sub`` with a
persistent MQTT 5 session at QoS 2 (libmosquitto reconnects by itself and keeps the session's
QoS 2 state, so a broker restart loses nothing on the receiving side)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import Broker


@dataclass
class MosquittoSub:
    broker: Broker
    topic: str
    client_id: str = field(default_factory=lambda: f"sub-{uuid.uuid4().hex[:8]}")
    out_path: Path = field(
        default_factory=lambda: Path(tempfile.mktemp(prefix="enerlink-sub-", suffix=".txt"))
    )
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> MosquittoSub:
        exe = shutil.which("mosquitto_sub")
        assert exe is not None, "mosquitto_sub is not installed (apt-get install mosquitto-clients)"
        args = [exe, "-h", "127.0.0.1", "-p", str(self.broker.port), "-V", "mqttv5"]
        args += ["-t", self.topic, "-q", "2", "-c", "-i", self.client_id, "-x", "3600", "-F", "%p"]
        # mosquitto_sub's default Receive Maximum (20) plus the QoS 2 state a restarted broker
        # restores makes libmosquitto 2.0.11 abort with "protocol error" under load; widen it.
        args += ["-D", "connect", "receive-maximum", "1000"]
        with self.out_path.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        return self

    def lines(self) -> list[str]:
        if not self.out_path.exists():
            return []
        return [line for line in self.out_path.read_text(errors="replace").splitlines() if line]

    async def wait_for(self, count: int, *, prefix: str = "") -> list[str]:
        """Wait until at least ``count`` lines starting with ``prefix`` arrived (bound it with
        ``asyncio.timeout``); stderr lands in the same file, for diagnosis."""
        while True:
            got = [line for line in self.lines() if line.startswith(prefix)]
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)
        self.process = None
