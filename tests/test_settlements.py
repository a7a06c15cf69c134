"""Billing settlements on real Mosquitto, Redis and PostgreSQL: a scripted meter answers ``settle`` on
its command topic, the aggregator (run once) turns scripted snapshots into minute energies, and the
API (served for real) records, finalizes, lists and exports the settlements."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from enerlink.aggregator.service import run as aggregate
from enerlink.config import CommonSettings, Env
from enerlink.db import migrate
from enerlink.mqtt import client as mqtt_client
from enerlink.schemas.wire import Keys, Tables
from enerlink.settlement.records import ABANDONED_EVENT, MISMATCH_EVENT
from tests.support.apiserver import serve_api
from tests.support.scripted_meter import scripted_meter
from tests.support.services import ServiceProcess
from tests.test_aggregator import now_ms, put, settings_for, snapshot

MIN = 60_000


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _events(url: str, kind: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select meter_id, at, severity, details from {Tables.EVENTS} where kind = %s order by id",
            (kind,),
        ).fetchall()
    return [{"meter_id": r[0], "at": r[1], "severity": r[2], "details": r[3]} for r in rows]


def _rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"select * from {Tables.SETTLEMENTS} order by id")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


async def _register(redis: aioredis.Redis, keys: Keys, meter: str, *, online: bool | None = None) -> None:
    await redis.hset(keys.meters, meter, str(int(time.time() * 1000) - 300_000))
    if online is not None:
        since = int(datetime(2026, 11, 23, 17, 0, tzinfo=UTC).timestamp() * 1000)  # epoch ms, as the ingest
        await redis.hset(keys.presence, meter, json.dumps({"online": online, "since": since}))


async def test_settlement_energy_is_the_sum_of_minute_energies_across_daily_reset_and_reflash(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """Three consecutive periods of one meter: a daily reset and a re-flash inside the second, a
    mid-minute close and a tampered device counter in the third (mismatch event)."""
    agg = settings_for(environ)
    keys, url = agg.common.keys, agg.common.database_url
    last_closed = ((await now_ms(redis_client)) - 10_000) // MIN * MIN - MIN
    m0 = last_closed - 19 * MIN
    # snapshots every 10 s at :00 ... :50; minute b's energy flowed over (b - 10 s, b + 50 s]
    t1, t2, t3 = m0 + 5 * MIN - 10_000, m0 + 15 * MIN - 10_000, m0 + 18 * MIN + 30_000
    daily, total, true_imp, true_exp = 40.0, 9000.0, 0.0, 0.0
    points, cumulative = [], []  # (at, import Wh, export Wh since the first point)
    for i, at in enumerate(range(m0 - 10_000, last_closed + MIN, 10_000)):
        step = round(0.01 * (1 + (i * 7919) % 13), 6)
        if at == m0 + 7 * MIN:
            daily = 0.0  # the device's local midnight
        if at == m0 + 12 * MIN:
            total = 0.0  # re-flash: total starts again
        daily, total = daily + step, total + step
        if i > 0:
            true_imp, true_exp = true_imp + step, true_exp + step / 2
        cumulative.append((at, true_imp, true_exp))
        values = {
            "import__daily_energy": round(daily, 6),
            "import__total_energy": round(total, 6),
            "export__daily_energy": round(daily / 2, 6),
            "export__total_energy": round(total / 2, 6),
        }
        points.append((at, snapshot("S1", at, **values)))
    await put(redis_client, keys, "S1", points)
    report = await aggregate(agg, once=True)
    assert report is not None and report.watermark is not None and report.watermark >= _dt(last_closed)

    def true_between(start: int | None, end: int) -> tuple[float, float]:
        """What the device counted in (start, end]: the steps of the samples in it."""
        upto = [c for c in cumulative if c[0] <= end][-1]
        base = [c for c in cumulative if start is not None and c[0] <= start]
        b = base[-1] if base else (0, 0.0, 0.0)
        return upto[1] - b[1], upto[2] - b[2]

    closes = {1: t1, 2: t2, 3: t3}
    tamper = {3: 50.0}

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        n = len([1 for m, c in got.received if c["cmd"] == "settle"])
        end = closes[n]
        imp, exp = true_between(closes.get(n - 1), end)
        return end / 1000, {"settled_import_wh": imp + tamper.get(n, 0.0), "settled_export_wh": exp}

    common = CommonSettings.from_env(Env(environ))
    async with serve_api(environ) as api, scripted_meter(common, ["S1"], script) as got:
        made = []
        for n in (1, 2, 3):
            reply = await api.client.post("/meters/S1/settlements", headers={"Idempotency-Key": f"bill-{n}"})
            assert reply.status_code == 201, reply.text
            made.append(reply.json())
        listed = (await api.client.get("/meters/S1/settlements")).json()
    assert [s["seq"] for s in listed] == [3, 2, 1]  # newest first, all final (the watermark covers them)
    p3, p2, p1 = listed
    assert all(s["status"] == "final" for s in listed)
    assert [s["id"] for s in made] == [p1["id"], p2["id"], p3["id"]]
    # contiguous periods: each starts where the previous ended; the first at the first snapshot
    assert p1["period_start"] == _dt(m0 - 10_000).isoformat().replace("+00:00", "Z")
    assert p1["period_end"] == p2["period_start"] and p2["period_end"] == p3["period_start"]
    assert p3["period_end"] == _dt(t3).isoformat().replace("+00:00", "Z")
    with psycopg.connect(url) as conn:
        minutes: dict[datetime, float] = dict(
            conn.execute(
                f"select bucket, import_energy_10uwh / 1e5::float8 from {Tables.TELEMETRY_AGGREGATES}"
                " where meter_id = 'S1'"
            ).fetchall()
        )
        exports: dict[datetime, float] = dict(
            conn.execute(
                f"select bucket, export_energy_10uwh / 1e5::float8 from {Tables.TELEMETRY_AGGREGATES}"
                " where meter_id = 'S1'"
            ).fetchall()
        )

    def minute_sum(table: dict[datetime, float], start: int, end: int) -> float:
        return sum(v for b, v in table.items() if _dt(start) <= b < _dt(end))

    # period 2 spans the daily reset and the re-flash: exactly its ten minutes' sum and the true energy
    assert p2["import_wh"] == pytest.approx(minute_sum(minutes, m0 + 5 * MIN, m0 + 15 * MIN), abs=1e-5)
    assert p2["import_wh"] == pytest.approx(true_between(t1, t2)[0], abs=1e-5)
    assert p2["export_wh"] == pytest.approx(minute_sum(exports, m0 + 5 * MIN, m0 + 15 * MIN), abs=1e-5)
    assert p2["export_wh"] == pytest.approx(true_between(t1, t2)[1], abs=1e-5)
    assert p2["net_wh"] == pytest.approx(p2["export_wh"] - p2["import_wh"], abs=1e-5)
    assert p2["minutes"] == 10 and p2["mismatch"] is False
    assert p2["diff_import_wh"] == pytest.approx(0.0, abs=1e-4)
    assert p1["import_wh"] == pytest.approx(minute_sum(minutes, m0 - MIN, m0 + 5 * MIN), abs=1e-5)
    assert p1["import_wh"] == pytest.approx(true_between(None, t1)[0], abs=1e-5) and p1["mismatch"] is False
    # the close at 18:30 takes 40 s of minute 18's span (17:50, 18:50]; nothing lost or counted twice
    boundary = minutes[_dt(m0 + 18 * MIN)]
    expected = minute_sum(minutes, m0 + 15 * MIN, m0 + 18 * MIN) + boundary * 40 / 60
    assert p3["import_wh"] == pytest.approx(expected, abs=1e-5)
    total_pipeline = sum(s["import_wh"] for s in listed)
    assert total_pipeline == pytest.approx(
        minute_sum(minutes, m0 - MIN, m0 + 18 * MIN) + boundary * 40 / 60, abs=1e-5
    )
    # the tampered counter: 50 Wh more than the pipeline saw -> flagged, and one warning event
    assert p3["mismatch"] is True and p3["diff_import_wh"] == pytest.approx(50.0, abs=1.0)
    assert p3["device_import_wh"] == pytest.approx(true_between(t2, t3)[0] + 50.0)
    mismatches = _events(url, MISMATCH_EVENT)
    assert len(mismatches) == 1
    event = mismatches[0]
    assert event["meter_id"] == "S1" and event["severity"] == "warning" and event["at"] == _dt(t3)
    assert event["details"]["settlement_id"] == p3["id"]
    assert event["details"]["import"]["diff"] == pytest.approx(p3["diff_import_wh"])
    # every settle sent is logged as a command event with its outcome
    logged = _events(url, "command")
    assert [e["details"]["request_id"] for e in logged] == ["bill-1", "bill-2", "bill-3"]
    assert all(e["details"]["outcome"] == "ok" and e["details"]["cmd"] == "settle" for e in logged)


async def test_retried_request_does_not_settle_twice_and_concurrent_requests_do_not_overlap(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    common = CommonSettings.from_env(Env(environ))
    await _register(redis_client, common.keys, "R1", online=True)
    reading = iter(range(1, 100))

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return time.time(), {"settled_import_wh": float(next(reading)), "settled_export_wh": 0.0}

    async with serve_api(environ) as api, scripted_meter(common, ["R1"], script) as meter:
        first = await api.client.post("/meters/R1/settlements", headers={"Idempotency-Key": "inv-1"})
        again = await api.client.post("/meters/R1/settlements", json={"request_id": "inv-1"})
        assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        assert first.headers["location"] == f"/meters/R1/settlements/{first.json()['id']}"
        assert (await api.client.get(first.headers["location"])).json()["id"] == first.json()["id"]
        assert len(meter.commands("settle")) == 1  # the retry did not reach the meter
        assert first.json()["device_import_wh"] == 1.0 and first.json()["status"] == "pending"
        # two different requests at once while the meter is slow: one settles, the other is refused
        meter.delay_s = 1.5
        racing = await asyncio.gather(
            api.client.post("/meters/R1/settlements", headers={"Idempotency-Key": "inv-2"}),
            api.client.post("/meters/R1/settlements", headers={"Idempotency-Key": "inv-3"}),
        )
        codes = sorted(r.status_code for r in racing)
        assert codes == [201, 409], [r.text for r in racing]
        refused_key, refused = next(
            (k, r) for k, r in zip(("inv-2", "inv-3"), racing, strict=True) if r.status_code == 409
        )
        assert "in progress" in refused.json()["detail"]
        meter.delay_s = 0.0
        # the refused request, sent again once the meter is free, settles (either may have won the race)
        third = await api.client.post("/meters/R1/settlements", headers={"Idempotency-Key": refused_key})
        assert third.status_code == 201, third.text
        mismatched = await api.client.post(
            "/meters/R1/settlements", headers={"Idempotency-Key": "inv-4"}, json={"request_id": "other"}
        )
        assert mismatched.status_code == 422
        listed = (await api.client.get("/meters/R1/settlements")).json()
    assert [s["seq"] for s in listed] == [3, 2, 1]
    by_seq = {s["seq"]: s for s in listed}
    assert by_seq[2]["period_start"] == by_seq[1]["period_end"]
    assert by_seq[3]["period_start"] == by_seq[2]["period_end"]
    assert len(meter.commands("settle")) == 3
    assert len(_rows(environ["ENERLINK_DATABASE_URL"])) == 3


async def test_offline_meter_gives_a_clear_timeout_and_no_settlement(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """The meter's session is at the broker but the meter is away: 504 naming the meter, when it was
    last seen and that it is offline; no row; the queued settle expires instead of reaching the
    meter when it comes back."""
    common = CommonSettings.from_env(Env(environ))
    await _register(redis_client, common.keys, "OFF1", online=False)
    identifier = f"test-off1-{uuid.uuid4().hex[:6]}"
    async with mqtt_client(common.mqtt, identifier=identifier, persistent=True, session_expiry_s=600) as c:
        await c.subscribe(common.topics.command("OFF1"), qos=2)  # then the meter goes away
    async with serve_api(environ, ENERLINK_COMMAND_TIMEOUT_S="1.5") as api:  # the server's own timeout
        reply = await api.client.post("/meters/OFF1/settlements")
        unknown = await api.client.post("/meters/NEVER1/settlements", json={"timeout_s": 1.5})
        listed = (await api.client.get("/meters/OFF1/settlements")).json()
    assert reply.status_code == 504
    detail = reply.json()["detail"]
    assert detail.startswith("OFF1 did not acknowledge settle within 1.5 s (last seen 20")
    assert "offline since 2026-11-23T17:00:00Z" in detail
    assert unknown.status_code == 404 and "never heard" in unknown.json()["detail"]
    assert listed == [] and _rows(environ["ENERLINK_DATABASE_URL"]) == []
    logged = _events(environ["ENERLINK_DATABASE_URL"], "command")
    assert [(e["meter_id"], e["details"]["outcome"], e["severity"]) for e in logged] == [
        ("OFF1", "timeout", "warning")
    ]
    await asyncio.sleep(1.5)  # past the command's expiry
    received: list[bytes] = []
    async with mqtt_client(common.mqtt, identifier=identifier, persistent=True, session_expiry_s=600) as c:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                async for message in c.messages:
                    received.append(bytes(message.payload))
    assert received == []  # the meter does not settle hours later behind the caller's back


async def test_csv_export_and_lazy_finalization(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """A settlement stays pending until the watermark passes its end; a read then finalizes it."""
    common = CommonSettings.from_env(Env(environ))
    url = environ["ENERLINK_DATABASE_URL"]
    await _register(redis_client, common.keys, "C1", online=True)
    close = datetime(2026, 11, 23, 12, 30, 15, tzinfo=UTC)

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return close.timestamp(), {"settled_import_wh": 3.0, "settled_export_wh": 1.0}

    await migrate(url)
    from tests.support.aggdata import aggregate_row, insert_rows

    insert_rows(
        url,
        Tables.TELEMETRY_AGGREGATES,
        [
            aggregate_row(
                "C1",
                datetime(2026, 11, 23, 12, m, tzinfo=UTC),
                import_energy_10uwh=100_000,  # 1 Wh
                export_energy_10uwh=40_000,
            )
            for m in range(27, 31)
        ],
    )
    async with serve_api(environ) as api, scripted_meter(common, ["C1"], script):
        made = await api.client.post("/meters/C1/settlements")
        assert made.status_code == 201 and made.json()["status"] == "pending", made.text
        sid = made.json()["id"]
        assert (await api.client.get(f"/meters/C1/settlements/{sid}")).json()["status"] == "pending"
        with psycopg.connect(url) as conn:
            conn.execute(
                f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute) values ('minutes', %s)",
                (datetime(2026, 11, 23, 12, 30, tzinfo=UTC),),  # the close's own minute ...
            )
        still = (await api.client.get(f"/meters/C1/settlements/{sid}")).json()["status"]
        with psycopg.connect(url) as conn:  # ... and the next one
            conn.execute(
                f"update {Tables.AGGREGATOR_WATERMARK} set minute = %s",
                (datetime(2026, 11, 23, 12, 31, tzinfo=UTC),),
            )
        as_csv = await api.client.get(f"/meters/C1/settlements/{sid}", headers={"Accept": "text/csv"})
        by_query = await api.client.get(f"/meters/C1/settlements/{sid}?format=csv")
        whole = await api.client.get("/meters/C1/settlements?format=csv")
        missing = await api.client.get("/meters/C1/settlements/999999")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text == by_query.text
    (row,) = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert row["status"] == "final" and row["meter_id"] == "C1" and row["seq"] == "1"
    assert row["period_start"] == "2026-11-23T12:27:00Z" and row["period_end"] == "2026-11-23T12:30:15Z"
    assert still == "pending"
    # three minutes + 20 s of 12:30's span (12:29:55, 12:30:55]
    assert float(row["import_wh"]) == pytest.approx(3 + 1 / 3)
    assert float(row["export_wh"]) == pytest.approx(1.2 + 0.4 / 3)
    assert float(row["diff_import_wh"]) == pytest.approx(-1 / 3) and row["mismatch"] == "False"
    assert len(list(csv.DictReader(io.StringIO(whole.text)))) == 1
    assert missing.status_code == 404


async def test_cli_settles_waits_for_the_energies_and_times_out(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    common = CommonSettings.from_env(Env(environ))
    url = environ["ENERLINK_DATABASE_URL"]
    await _register(redis_client, common.keys, "CLI1", online=True)
    await _register(redis_client, common.keys, "CLI2", online=False)

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        return time.time(), {"settled_import_wh": 7.5, "settled_export_wh": 2.5}

    async def cli(*args: str) -> tuple[int, str]:
        proc = ServiceProcess(args=["settle", *args], env={**environ, "ENERLINK_COMMAND_TIMEOUT_S": "2"})
        proc.start()
        assert proc.process is not None
        return await asyncio.to_thread(proc.process.wait, 60), proc.output()

    def printed(output: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(output[output.index("{") : output.rindex("}") + 1])
        return result

    async with scripted_meter(common, ["CLI1"], script) as meter:
        pending_code, pending_out = await cli("CLI1", "--request-id", "cli-1", "--wait-final", "1")
        with psycopg.connect(url) as conn:  # the aggregator passes the close
            conn.execute(
                f"insert into {Tables.AGGREGATOR_WATERMARK} (name, minute)"
                " values ('minutes', now() + interval '2 minutes')"
            )
        final_code, final_out = await cli("CLI1", "--request-id", "cli-1", "--wait-final", "30")
        csv_code, csv_out = await cli("CLI1", "--list", "--csv")
        offline_code, offline_out = await cli("CLI2")
    assert pending_code == 3, pending_out
    first = printed(pending_out)
    assert first["meter_id"] == "CLI1" and first["status"] == "pending" and first["source"] == "cli"
    assert first["device_import_wh"] == 7.5 and "energies follow once the aggregator" in pending_out
    assert final_code == 0 and "already settled" in final_out, final_out
    final = printed(final_out)
    assert final["id"] == first["id"] and final["status"] == "final"
    assert final["import_wh"] == 0.0 and final["diff_import_wh"] == 7.5  # no minute data at all
    assert len(meter.commands("settle")) == 1  # the rerun did not settle again
    assert csv_code == 0
    (row,) = list(csv.DictReader(io.StringIO(csv_out[csv_out.index("id,") :])))
    assert row["id"] == str(first["id"]) and row["status"] == "final"
    assert offline_code == 1
    assert "CLI2 did not acknowledge settle within 2 s" in offline_out


async def test_abandoned_request_is_cleared_with_an_event(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """A process killed between sending settle and recording the ack leaves a ``requested`` row; the
    next request after its deadline clears it (event) instead of blocking the meter forever."""
    common = CommonSettings.from_env(Env(environ))
    url = environ["ENERLINK_DATABASE_URL"]
    await _register(redis_client, common.keys, "AB1", online=True)
    await migrate(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            f"insert into {Tables.SETTLEMENTS} (meter_id, seq, request_id, status, requested_at)"
            " values ('AB1', 1, 'lost', 'requested', now() - interval '1 hour')"
        )

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return time.time(), {"settled_import_wh": 1.0, "settled_export_wh": 0.0}

    async with serve_api(environ) as api, scripted_meter(common, ["AB1"], script):
        reply = await api.client.post("/meters/AB1/settlements")
    assert reply.status_code == 201, reply.text
    assert reply.json()["seq"] == 1 and reply.json()["request_id"] != "lost"
    (event,) = _events(url, ABANDONED_EVENT)
    assert event["meter_id"] == "AB1" and event["details"]["request_id"] == "lost"


async def test_unreachable_broker_is_a_clear_503_and_records_nothing(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    from tests.support.services import free_port

    down = {**environ, "ENERLINK_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}
    common = CommonSettings.from_env(Env(down))
    await _register(redis_client, common.keys, "BR1", online=True)
    async with serve_api(down) as api:
        settle = await api.client.post("/meters/BR1/settlements", json={"timeout_s": 1})
        command = await api.client.post("/meters/BR1/commands", json={"cmd": "status_now", "timeout_s": 1})
        fleet_settle = await api.client.post("/commands", json={"all": True, "cmd": "settle", "timeout_s": 1})
    assert settle.status_code == 503 and "MQTT broker" in settle.json()["detail"]
    assert command.status_code == 503 and fleet_settle.status_code == 503
    assert _rows(environ["ENERLINK_DATABASE_URL"]) == []


async def test_fleet_settle_in_one_round_with_timeouts_unknowns_and_a_concurrent_round(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    common = CommonSettings.from_env(Env(environ))
    for name in ("F1", "F2", "F3", "GHOST"):
        await _register(redis_client, common.keys, name, online=name != "GHOST")

    def script(meter: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        if meter == "F3":
            return None  # this one never answers
        return time.time(), {"settled_import_wh": 2.0, "settled_export_wh": 1.0}

    fleet = ["F1", "F2", "F3", "GHOST", "NOPE"]
    async with serve_api(environ) as api, scripted_meter(common, ["F1", "F2", "F3"], script) as meter:
        meter.delay_s = 0.5
        first, second = await asyncio.gather(
            api.client.post("/commands", json={"meters": fleet, "cmd": "settle", "timeout_s": 2}),
            api.client.post(
                "/commands", json={"meters": ["F2", "F1"], "cmd": "settle", "timeout_s": 2, "request_id": "b"}
            ),
        )
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    rounds = [{r["meter_id"]: r for r in reply.json()["results"]} for reply in (first, second)]
    winner, loser = (rounds[0], rounds[1]) if rounds[0]["F1"]["outcome"] == "ok" else (rounds[1], rounds[0])
    assert winner["F1"]["outcome"] == winner["F2"]["outcome"] == "ok"  # one round took both, no deadlock
    assert loser["F1"]["outcome"] == loser["F2"]["outcome"] == "busy"
    assert "in progress" in loser["F1"]["error"]
    whole = rounds[0]
    assert [r["meter_id"] for r in first.json()["results"]] == fleet  # in the order asked
    assert whole["NOPE"]["outcome"] == "unknown"
    if whole is winner:
        assert whole["F3"]["outcome"] == "timeout" and whole["GHOST"]["outcome"] == "timeout"
        assert whole["GHOST"]["error"].startswith("GHOST did not acknowledge settle within 2 s")
        assert whole["F1"]["settlement"]["device_import_wh"] == 2.0
    rows = _rows(environ["ENERLINK_DATABASE_URL"])
    assert sorted(r["meter_id"] for r in rows) == ["F1", "F2"] and all(r["status"] == "pending" for r in rows)
    # each meter got settle once: the winner's round (F1, F2, and F3 if it was the whole fleet) plus F3
    # from the whole fleet's round if that one lost; busy and unknown meters were never sent anything
    assert sorted(m for m, _ in meter.commands("settle")) == ["F1", "F2", "F3"]


@pytest.mark.slow
async def test_a_simulated_meter_and_the_pipeline_agree_and_a_tampered_counter_is_flagged(
    environ: dict[str, str], redis_client: aioredis.Redis
) -> None:
    """The whole chain with the real simulator: meters publish, the ingest stores, the settle command
    resets the simulator's settlement counters, the aggregator closes the minutes, and a read
    finalizes: the honest meter agrees with the pipeline, the tampered one raises the event."""
    import dataclasses

    import enerlink.aggregator.service
    import enerlink.ingest.service
    from enerlink.aggregator.settings import Settings as AggregatorSettings
    from enerlink.edge.service import run as run_fleet
    from enerlink.edge.settings import Settings as EdgeSettings
    from enerlink.ingest.settings import Settings as IngestSettings
    from tests.support.sim_support import wait_for

    env = Env({**environ, "ENERLINK_AGGREGATOR_METRICS_PORT": "0"})
    keys = Keys(environ["ENERLINK_KEY_PREFIX"])
    ready = asyncio.Event()
    worker = asyncio.create_task(
        enerlink.ingest.service.run(
            dataclasses.replace(IngestSettings.from_env(env), client_id=f"settle-{uuid.uuid4().hex[:8]}"),
            ready=ready,
        ),
        name="ingest",
    )
    await asyncio.wait_for(ready.wait(), 30)
    fleet_settings = dataclasses.replace(
        EdgeSettings.from_env(env),
        meters=2,
        speed=1.0,
        interval_s=2.0,
        progress=False,
        status_interval_s=3600.0,
    )
    runners: list[Any] = []
    fleet = asyncio.create_task(run_fleet(fleet_settings, on_ready=runners.append), name="fleet")
    try:
        await wait_for(lambda: bool(runners), limit_s=60)
        runners[0].sim.battery.energy_wh[:] = 0.0  # empty batteries: the homes import from the grid
        await wait_for(lambda: runners[0].steps >= 10, limit_s=60)
        assert await redis_client.hexists(keys.meters, "METER002")
        runners[0].sim.counters.settlement[1, 1] += 100.0  # METER002's import counter, tampered
        async with serve_api(environ) as api:
            made = [
                (await api.client.post(f"/meters/{m}/settlements", json={"timeout_s": 10})).json()
                for m in ("METER001", "METER002")
            ]
            assert all(s["status"] == "pending" for s in made), made
            end = max(datetime.fromisoformat(s["period_end"].replace("Z", "+00:00")) for s in made)
            # the end's minute and the next one closed (+ the aggregator's grace)
            closed_at = end.replace(second=0, microsecond=0).timestamp() + 120 + 12
            await asyncio.sleep(max(0.0, closed_at - time.time()))
            await enerlink.aggregator.service.run(AggregatorSettings.from_env(env), once=True)
            honest, tampered = [
                (await api.client.get(f"/meters/{s['meter_id']}/settlements/{s['id']}")).json() for s in made
            ]
    finally:
        for task in (fleet, worker):
            task.cancel()
        await asyncio.gather(fleet, worker, return_exceptions=True)
    assert honest["status"] == tampered["status"] == "final", (honest, tampered)
    assert honest["minutes"] >= 1 and honest["mismatch"] is False, honest
    assert abs(honest["diff_import_wh"]) < 10 and abs(honest["diff_export_wh"]) < 10, honest
    assert tampered["mismatch"] is True and tampered["diff_import_wh"] == pytest.approx(100.0, abs=10.0)
    (event,) = _events(environ["ENERLINK_DATABASE_URL"], MISMATCH_EVENT)
    assert event["meter_id"] == "METER002" and event["details"]["settlement_id"] == tampered["id"]
