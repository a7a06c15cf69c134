"""Replay of recorded telemetry: file formats, pacing, console controls, and the CLI on a real broker."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from enerlink.config import Env
from enerlink.edge.settings import Settings
from enerlink.edge.sim.replay import Player, handle, play
from enerlink.edge.sim.replay_source import Mapping, ReplayError, load
from enerlink.schemas.telemetry import DataMessage
from tests.support.sim_support import collect, wait_for


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


def series_csv(path: Path, rows: int = 5, step_s: float = 1.0) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "pv_w", "house_w", "grid_in_w", "soc"])
        for k in range(rows):
            writer.writerow([f"2025-03-01T10:00:{int(k * step_s):02d}Z", 1000 + k, 400, 50 * k, 80 - k])
    return path


MAPS = [
    "solar_output.power=pv_w*1000",
    "load_smart_mtr.power=house_w*1000",
    "import.power=grid_in_w*1000",
    "battery.soc=soc",
]


def test_per_second_csv_with_mapping_makes_valid_consistent_messages(tmp_path: Path) -> None:
    records = load(series_csv(tmp_path / "day.csv"), mappings=[Mapping.parse(m) for m in MAPS])
    assert len(records) == 5
    last = records[-1].message
    DataMessage.model_validate_json(json.dumps(last))
    data = last["data"]
    assert data["solar_output"]["power"] == pytest.approx(1_004_000, rel=1e-6)
    assert math.isclose(data["solar_output"]["power"], 230.0 * data["solar_output"]["current"], rel_tol=1e-5)
    assert data["net_solar"]["net_power"] == pytest.approx(1_004_000 - 400_000, rel=1e-6)
    assert data["net_grid"]["status"] == "importing" and data["battery"]["soc"] == 76
    # counters integrate power over the recorded seconds: 4 s of ~1 kW ~ 1.1 Wh
    assert data["solar_output"]["total_energy"] == pytest.approx(
        sum(1001 + k for k in range(4)) / 3600, rel=1e-3
    )
    assert last["datetime"] == "2025-03-01T10:00:04Z"


def test_bad_mapping_and_missing_columns_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="not a data field"):
        Mapping.parse("solar.power=pv_w")
    with pytest.raises(ReplayError, match="no column 'nope'"):
        load(series_csv(tmp_path / "d.csv"), mappings=[Mapping.parse("solar_output.power=nope")])
    with pytest.raises(ReplayError, match="needs at least one --map"):
        load(series_csv(tmp_path / "d.csv"))


def test_archive_csv_replays_its_averages(tmp_path: Path, data_fixture_bytes: bytes) -> None:
    from enerlink.aggregator.columns import MINUTE_COLUMNS, STAT_COLUMNS

    fixture = json.loads(data_fixture_bytes)["data"]
    row: dict[str, Any] = {
        "meter_id": "METER001",
        "bucket": "2024-10-26T04:27:00Z",
        "sample_count": 12,
        "first_ms": 0,
        "last_ms": 55_000,
        "seq_first": 7,
        "seq_span": 11,
        "repaired_count": 0,
    }
    for column in STAT_COLUMNS:
        if column.field is None:
            row[column.name] = 0.1
            continue
        value = fixture[column.field.subsystem][column.field.name]
        row[column.name] = (12 if value else 0) if column.stat == "count" else value
    path = tmp_path / "01.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MINUTE_COLUMNS))
        writer.writeheader()
        writer.writerow(row)
    (record,) = load(path)
    assert record.message["meterId"] == "METER001" and record.message["datetime"] == "2024-10-26T04:27:00Z"
    assert record.message["data"] == fixture


def records(tmp_path: Path) -> list[Any]:
    return load(series_csv(tmp_path / "p.csv"), mappings=[Mapping.parse(m) for m in MAPS])


async def test_recorded_pace_and_speed(tmp_path: Path) -> None:
    for speed, gap in ((1.0, 1.0), (4.0, 0.25)):
        fake, sent = FakeTime(), []

        async def publish(message: dict[str, Any], fake: FakeTime = fake, sent: list[float] = sent) -> None:
            sent.append(fake.now)

        player = Player(records(tmp_path), publish, speed=speed, clock=fake.clock, sleep=fake.sleep)
        player.start()
        await player.run()
        assert [round(t - sent[0], 6) for t in sent] == [round(k * gap, 6) for k in range(5)]
        assert player.state == "finished" and player.sent == 5


async def test_as_fast_as_possible_never_sleeps_and_keeps_original_times(tmp_path: Path) -> None:
    fake, out = FakeTime(), []

    async def publish(message: dict[str, Any]) -> None:
        out.append(message["datetime"])

    player = Player(
        records(tmp_path), publish, speed=None, timestamps="original", clock=fake.clock, sleep=fake.sleep
    )
    player.start()
    await player.run()
    assert fake.sleeps == [] and out[0] == "2025-03-01T10:00:00Z" and len(out) == 5


async def test_console_start_stop_status_help_exit(tmp_path: Path) -> None:
    fake, sent = FakeTime(), []
    player: Player

    async def publish(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 2:
            player.stop()

    player = Player(records(tmp_path), publish, speed=1.0, clock=fake.clock, sleep=fake.sleep)
    assert handle(player, "status")[0].startswith("stopped: index 0/5")
    assert "start | stop | status | help | exit" in handle(player, "help")[0]
    assert handle(player, "bogus")[0].startswith("unknown command")
    task = asyncio.create_task(player.run())
    handle(player, "start")
    await wait_for(lambda: player.state == "stopped" and len(sent) == 2)
    assert handle(player, "status")[0].startswith("stopped: index 2/5, sent 2")
    handle(player, "start")
    await asyncio.wait_for(task, timeout=5)
    assert len(sent) == 5 and player.status()["index"] == 5 and player.state == "finished"
    reply, go_on = handle(player, "exit")
    assert (reply, go_on) == ("bye", False)


async def test_interactive_console_reads_lines_until_exit(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def publish(message: dict[str, Any]) -> None:
        sent.append(message)

    async def lines() -> Any:
        yield "status\n"
        yield "start\n"
        while len(sent) < 5:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        yield "status\n"
        yield "exit\n"

    out = io.StringIO()
    player = Player(records(tmp_path), publish, speed=None)
    await asyncio.wait_for(
        play(player, interactive=True, out=out, status_every=60, lines=lines()), timeout=10
    )
    text = out.getvalue().splitlines()
    assert text[1].startswith("stopped: index 0/5")
    assert text[2] == "playing from 0/5"
    assert text[3].startswith("finished: index 5/5, sent 5")
    assert text[-1] == "bye"


async def test_replay_cli_publishes_to_the_broker(environ: dict[str, str], env: Env, tmp_path: Path) -> None:
    from tests.support.services import ServiceProcess

    common = Settings.from_env(env).common
    path = series_csv(tmp_path / "cli.csv", rows=20)
    args = ["edge", "replay", str(path), "--fast", "--no-interactive", "--timestamps", "original"]
    for mapping in MAPS:
        args += ["--map", mapping]
    async with collect(common, [common.topics.data]) as got:
        proc = ServiceProcess(args=args, env=environ).start()
        assert proc.process is not None
        code = await asyncio.to_thread(proc.process.wait, 60)
        await wait_for(lambda: len(got.on(common.topics.data)) >= 20, limit_s=10)
    assert code == 0, proc.output()
    messages = got.on(common.topics.data)
    assert [m["datetime"][-3:-1] for m in messages] == [f"{k:02d}" for k in range(20)]
    assert all(DataMessage.model_validate_json(json.dumps(m)) for m in messages)
    assert "finished: index 20/20, sent 20" in proc.output()
