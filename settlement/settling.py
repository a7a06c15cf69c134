"""Closing billing periods: :func:`settle_many` (one meter or a whole fleet in one round) and
:func:`settle` (one meter, errors raised). The rules are in :mod:`enerlink.settlement.records`.

One round, whatever the number of meters:

1. one transaction claims every meter (per-meter advisory locks taken in ascending key order, so
   two rounds over overlapping fleets cannot deadlock): stale ``requested`` rows are cleared (event
   ``settlement_abandoned``), a request id already recorded for a meter returns that settlement, a
   meter with a request in flight is ``InProgress``, every other meter gets a ``requested`` row with
   the next ``seq`` starting where its last period ended;
2. one :func:`enerlink.commands.send` to all claimed meters (command id = request id);
3. one transaction records every ack (``pending``, period end = ack time, device readings), deletes
   the rows of meters that timed out or refused, and logs one ``command`` event per meter;
4. :func:`enerlink.settlement.records.finalize_ready` on the result.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from enerlink import commands
from enerlink import redis_parts as parts
from enerlink.config import CommonSettings
from enerlink.redis_client import AsyncRedis
from enerlink.schemas.commands import Command, SettleResult
from enerlink.settlement.records import (
    ABANDONED_EVENT,
    BrokerUnavailable,
    Conn,
    Connect,
    InProgress,
    MeterRefused,
    MeterTimeout,
    Settlement,
    SettlementError,
    UnknownMeter,
    event,
    fetch,
    finalize_ready,
    parse_time,
    table,
)
from enerlink.settlement.settings import SettlementSettings

log = logging.getLogger(__name__)

_STALE_GRACE_S = 30.0
_BODY = Command(cmd="settle").body()


@dataclass(frozen=True, slots=True)
class Result:
    """One meter's outcome: its settlement (``created`` = closed by this call) or the error."""

    meter_id: str
    settlement: Settlement | None = None
    created: bool = False
    error: SettlementError | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _known(redis: AsyncRedis, common: CommonSettings, meters: Sequence[str]) -> set[str]:
    """The meters the pipeline has heard of (meters registry or presence)."""
    seen, present = await parts.hmget(redis, common.keys, [lambda k: k.meters, lambda k: k.presence], meters)
    return {m for m, a, b in zip(meters, seen, present, strict=True) if a is not None or b is not None}


async def _claim(
    conn: Conn, meters: list[str], *, request_id: str, source: str, stale_s: float
) -> dict[str, Result | Settlement]:
    """Per meter: a finished :class:`Result` (already recorded, or in progress) or the new
    ``requested`` row to send ``settle`` for."""
    t = table()
    out: dict[str, Result | Settlement] = {}
    async with conn.transaction():
        # ascending lock keys: two rounds over overlapping fleets always lock in the same order
        await conn.execute(
            "select pg_advisory_xact_lock(k) from (select distinct hashtext('enerlink-settle:' || m) as k"
            " from unnest(%s::text[]) as m order by k) as keys",
            (meters,),
        )
        stale = await fetch(
            conn,
            f"delete from {t} where meter_id = any(%s) and status = 'requested'"
            " and requested_at + (%s * interval '1 second') < now()"
            " returning id, meter_id, seq, request_id, requested_at",
            (meters, stale_s + _STALE_GRACE_S),
        )
        for row in stale:
            log.warning("settlement %s of %s abandoned (no ack recorded)", row["request_id"], row["meter_id"])
            await event(
                conn, meter_id=row["meter_id"], at=row["requested_at"], kind=ABANDONED_EVENT, details=row
            )
        for row in await fetch(
            conn, f"select * from {t} where meter_id = any(%s) and request_id = %s", (meters, request_id)
        ):
            meter = row["meter_id"]
            if row["status"] == "requested":
                error = InProgress(f"settlement request {request_id} of {meter} is still waiting for the ack")
                out[meter] = Result(meter_id=meter, error=error)
            else:
                out[meter] = Result(meter_id=meter, settlement=Settlement.from_row(row))
        for row in await fetch(
            conn,
            f"select meter_id, request_id from {t} where meter_id = any(%s) and status = 'requested'",
            (meters,),
        ):
            meter = row["meter_id"]
            if meter not in out:
                message = f"a settlement of {meter} is in progress (request {row['request_id']}); retry later"
                out[meter] = Result(meter_id=meter, error=InProgress(message))
        fresh = [m for m in meters if m not in out]
        if not fresh:
            return out
        last = {
            row["meter_id"]: row
            for row in await fetch(
                conn,
                f"select distinct on (meter_id) meter_id, seq, period_end from {t}"
                " where meter_id = any(%s) order by meter_id, seq desc",
                (fresh,),
            )
        }
        rows = await fetch(
            conn,
            f"insert into {t} (meter_id, seq, request_id, status, source, period_start)"
            " select m, s, %s, 'requested', %s, p"
            " from unnest(%s::text[], %s::int[], %s::timestamptz[]) as u(m, s, p)"
            " returning *",
            (
                request_id,
                source,
                fresh,
                [last[m]["seq"] + 1 if m in last else 1 for m in fresh],
                [last[m]["period_end"] if m in last else None for m in fresh],
            ),
        )
        out.update((row["meter_id"], Settlement.from_row(row)) for row in rows)
    return out


async def _record(
    conn: Conn,
    claimed: dict[str, Settlement],
    answers: dict[str, commands.Answer],
    *,
    request_id: str,
    source: str,
) -> dict[str, Settlement]:
    """Store the acks (``pending``), drop the rows of meters without one, log every outcome."""
    t = table()
    acked = [m for m, a in answers.items() if a.outcome == "ok"]
    now = datetime.now(UTC)
    ids, ends, imports, exports, acks = [], [], [], [], []
    for meter in acked:
        ack = answers[meter].ack or {}
        settled = SettleResult.of(ack.get("result"))
        ids.append(claimed[meter].id)
        ends.append(parse_time(ack.get("datetime")) or now)
        imports.append(settled.settled_import_wh)
        exports.append(settled.settled_export_wh)
        acks.append(json.dumps(ack))
    async with conn.transaction():
        extra = {m: {"settlement_id": s.id, "seq": s.seq} for m, s in claimed.items()}
        await commands.log_outcomes(
            conn, list(answers.values()), body=_BODY, request_id=request_id, source=source, extra=extra
        )
        failed = [claimed[m].id for m, a in answers.items() if a.outcome != "ok"]
        if failed:
            await conn.execute(
                f"delete from {t} where id = any(%s) and status = 'requested'".encode(), (failed,)
            )
        if not ids:
            return {}
        # a device clock that went back gives an empty period, never a negative one
        rows = await fetch(
            conn,
            f"update {t} as s set status = 'pending', acked_at = now(),"
            " period_end = greatest(u.end_at, coalesce(s.period_start, u.end_at)),"
            " device_import_wh = u.imp, device_export_wh = u.exp, ack = u.ack"
            " from unnest(%s::bigint[], %s::timestamptz[], %s::float8[], %s::float8[], %s::jsonb[])"
            " as u(id, end_at, imp, exp, ack) where s.id = u.id and s.status = 'requested' returning s.*",
            (ids, ends, imports, exports, acks),
        )
    return {row["meter_id"]: Settlement.from_row(row) for row in rows}


async def settle_many(
    *,
    connect: Connect,
    redis: AsyncRedis,
    common: CommonSettings,
    settings: SettlementSettings,
    meters: Sequence[str],
    request_id: str | None = None,
    source: str = "api",
    timeout_s: float | None = None,
) -> list[Result]:
    """Settle each meter once per ``request_id``, all in one round; one :class:`Result` per meter
    (in the order given). Raises :class:`BrokerUnavailable` (nothing recorded) when the command
    cannot be sent."""
    started = time.monotonic()
    meters = list(dict.fromkeys(meters))
    wait_s = min(timeout_s or settings.commands.timeout_s, settings.commands.timeout_s)
    request_id = request_id or commands.new_command_id()
    known = await _known(redis, common, meters) if meters else set()
    results: dict[str, Result] = {
        m: Result(meter_id=m, error=UnknownMeter(f"unknown meter {m}: the pipeline has never heard from it"))
        for m in meters
        if m not in known
    }
    targets = [m for m in meters if m in known]
    if targets:
        async with connect() as conn:
            claims = await _claim(
                conn, targets, request_id=request_id, source=source, stale_s=settings.commands.timeout_s
            )
        results.update((m, c) for m, c in claims.items() if isinstance(c, Result))
        claimed = {m: c for m, c in claims.items() if isinstance(c, Settlement)}
        if claimed:
            closed = await _close(
                connect,
                redis,
                common=common,
                claimed=claimed,
                request_id=request_id,
                source=source,
                wait_s=wait_s,
            )
            results.update(closed)
    done = [r.settlement for r in results.values() if r.settlement is not None]
    final = {s.meter_id: s for s in await finalize_ready(connect, done, settings)}
    out = [
        Result(meter_id=m, settlement=final[m], created=results[m].created) if m in final else results[m]
        for m in meters
    ]
    log.info(
        "settle %s: %d meters, %d closed, %d errors in %.2f s",
        request_id,
        len(meters),
        sum(1 for r in out if r.created),
        sum(1 for r in out if r.error is not None),
        time.monotonic() - started,
    )
    return out


async def _close(
    connect: Connect,
    redis: AsyncRedis,
    *,
    common: CommonSettings,
    claimed: dict[str, Settlement],
    request_id: str,
    source: str,
    wait_s: float,
) -> dict[str, Result]:
    try:
        answers = await commands.send(
            common.mqtt, common.topics, list(claimed), _BODY, timeout_s=wait_s, command_id=request_id
        )
    except commands.BrokerError as exc:
        async with connect() as conn:
            ids = [s.id for s in claimed.values()]
            await conn.execute(
                f"delete from {table()} where id = any(%s) and status = 'requested'".encode(), (ids,)
            )
        raise BrokerUnavailable(str(exc)) from exc
    async with connect() as conn:
        recorded = await _record(conn, claimed, answers, request_id=request_id, source=source)
    out: dict[str, Result] = {}
    for meter, answer in answers.items():
        if meter in recorded:
            out[meter] = Result(meter_id=meter, settlement=recorded[meter], created=True)
        elif answer.outcome == "timeout":
            described = await commands.describe_meter(redis, common.keys, meter)
            error = MeterTimeout(commands.timeout_message(meter, "settle", wait_s, described))
            out[meter] = Result(meter_id=meter, error=error)
        else:
            reason = (answer.ack or {}).get("error") or "no reason given"
            out[meter] = Result(meter_id=meter, error=MeterRefused(f"{meter} refused settle: {reason}"))
    return out


async def settle(
    *,
    connect: Connect,
    redis: AsyncRedis,
    common: CommonSettings,
    settings: SettlementSettings,
    meter_id: str,
    request_id: str | None = None,
    source: str = "api",
    timeout_s: float | None = None,
) -> tuple[Settlement, bool]:
    """Settle one meter once per ``request_id``: the settlement and whether this call closed it.
    Raises the :class:`SettlementError` (timeout, refusal, in progress, unknown meter, broker)."""
    (result,) = await settle_many(
        connect=connect,
        redis=redis,
        common=common,
        settings=settings,
        meters=[meter_id],
        request_id=request_id,
        source=source,
        timeout_s=timeout_s,
    )
    if result.error is not None:
        raise result.error
    assert result.settlement is not None
    return result.settlement, result.created
