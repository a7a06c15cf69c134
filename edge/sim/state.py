"""Saving and restoring a simulated fleet's state (SOC, counters, health, cycles, seq) per meter.

One JSON file per simulator (``{state_dir}/sim-{client_id}.json``), written atomically (temp file,
fsync, rename) so a crash mid-write leaves the previous state. Meters are matched by id, so a
fleet that grows or shrinks keeps the state of the meters it still has, and the state of the meters
it no longer has is kept in the file (a fleet started again with more meters continues their counters).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from enerlink.edge.counters import CHANNELS, logged_counters
from enerlink.edge.readings_log import ReadingsLog
from enerlink.edge.sim.engine import Simulator
from enerlink.files import sync_dir

log = logging.getLogger(__name__)
VERSION = 1


@dataclass(slots=True)
class StateStore:
    path: Path
    others: dict[str, Any] = field(default_factory=dict)
    """Saved meters that the fleet restored from this file does not have; written back on save."""

    def save(self, sim: Simulator, seqs: np.ndarray) -> None:
        b, c = sim.battery, sim.counters
        meters: dict[str, Any] = {k: v for k, v in self.others.items() if k not in sim.index}
        for i, spec in enumerate(sim.fleet.meters):
            meters[spec.id] = {
                "energy_wh": float(b.energy_wh[i]),
                "health": float(b.health[i]),
                "temp_c": float(b.temp_c[i]),
                "cycles": float(b.cycles[i]),
                "daily": c.daily[i].tolist(),
                "total": c.total[i].tolist(),
                "settlement": c.settlement[i].tolist(),
                "day": int(c.day[i]),
                "seq": int(seqs[i]),
                "mqtt_attempts": int(sim.mqtt_attempts[i]),
            }
        document = {"version": VERSION, "last_epoch": sim.last_epoch, "meters": meters}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(document, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        sync_dir(self.path.parent)

    def restore(self, sim: Simulator, seqs: np.ndarray) -> int:
        """Load what the file has for this fleet's meters; returns how many were restored."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("simulator state %s unreadable (%s); starting fresh", self.path, exc)
            return 0
        if document.get("version") != VERSION:
            log.warning(
                "simulator state %s has version %r; starting fresh", self.path, document.get("version")
            )
            return 0
        saved: dict[str, Any] = document.get("meters", {})
        b, c = sim.battery, sim.counters
        self.others = {k: v for k, v in saved.items() if k not in sim.index}
        restored = 0
        for i, spec in enumerate(sim.fleet.meters):
            entry = saved.get(spec.id)
            if entry is None:
                continue
            b.health[i] = entry["health"]
            b.energy_wh[i] = min(entry["energy_wh"], float(b.capacity_wh[i]))
            b.temp_c[i] = entry["temp_c"]
            b.cycles[i] = entry["cycles"]
            c.daily[i] = entry["daily"]
            c.total[i] = entry["total"]
            c.settlement[i] = entry["settlement"]
            c.day[i] = entry["day"]
            seqs[i] = entry["seq"]
            sim.mqtt_attempts[i] = entry.get("mqtt_attempts", 0)
            restored += 1
        if restored and document.get("last_epoch") is not None:
            sim.last_epoch = float(document["last_epoch"])
        return restored


def resume_counters(readings: ReadingsLog, sim: Simulator, seqs: np.ndarray) -> int:
    """Continue each meter's counters from its newest reading in the delivery log when that is newer
    than the saved state (``seqs``: the saved seq of each meter; the state is saved once a minute, the
    log every step): the pipeline saw those values, and a counter that went back would look like a
    reset to it. Returns how many meters continued from the log."""
    c = sim.counters
    moved = 0
    newest_at = None
    for i, spec in enumerate(sim.fleet.meters):
        newest = readings.newest(spec.id)
        found = None if newest is None or newest.seq <= seqs[i] else logged_counters(newest.payload)
        if found is None:
            continue
        c.total[i] = [found.total[ch] for ch in CHANNELS]
        c.daily[i] = [found.daily[ch] for ch in CHANNELS]
        c.settlement[i] = [found.settlement[ch] for ch in CHANNELS[:2]]  # export, import
        zone = sim.zones[sim.tz_index[i]]
        c.day[i] = datetime.fromtimestamp(found.at, UTC).astimezone(zone).toordinal()  # its daily's day
        newest_at = found.at if newest_at is None else max(newest_at, found.at)
        moved += 1
    if newest_at is not None and (sim.last_epoch is None or sim.last_epoch < newest_at):
        sim.last_epoch = newest_at  # the next step integrates from there, not from the saved time again
    return moved
