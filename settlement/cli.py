"""``enerlink settle METER001``: close a meter's billing period from the command line (the same library
code as ``POST /meters/{id}/settlements``) and print the settlement as JSON (or CSV).

enerlink settle METER001                         # settle, print it (pending until aggregated)
enerlink settle METER001 --wait-final 150        # ... and wait until its energies are computed
enerlink settle METER001 --request-id bill-2026-11   # idempotent: a rerun prints the same one
enerlink settle METER001 --list --csv            # the meter's settlements for a billing system

Exit status: 0 done, 1 the meter did not acknowledge / refused / another settlement is in flight /
unknown meter, 2 bad configuration, 3 still pending when ``--wait-final`` ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from enerlink.config import CommonSettings, ConfigError, Env
from enerlink.db import migrate
from enerlink.redis_client import async_client, lazily
from enerlink.runtime import configure_logging
from enerlink.settlement import records, settling
from enerlink.settlement.settings import SettlementSettings

_POLL_S = 2.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("meter_id", help="the meter to settle, e.g. METER001")
    parser.add_argument("--request-id", help="idempotency key: rerunning with it never settles twice")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for the ack (default ENERLINK_COMMAND_TIMEOUT_S)"
    )
    parser.add_argument(
        "--wait-final",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the aggregator to cover the period (energies computed)",
    )
    parser.add_argument("--list", action="store_true", help="print the meter's settlements instead")
    parser.add_argument("--csv", action="store_true", help="CSV instead of JSON")


async def _run(args: argparse.Namespace, common: Any, settings: Any) -> int:

    @asynccontextmanager
    async def connect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(common.database_url, autocommit=True) as conn:
            yield conn

    def show(rows: list[records.Settlement]) -> None:
        if args.csv:
            sys.stdout.write(records.to_csv(rows))
        elif args.list:
            print(json.dumps([s.to_dict() for s in rows], indent=2))
        else:
            print(json.dumps(rows[0].to_dict(), indent=2))

    await migrate(common.database_url)
    if args.list:
        show(await records.list_for(connect, settings, meter_id=args.meter_id, limit=10_000))
        return 0
    async with lazily(async_client(common.redis_url)) as redis:
        try:
            settlement, created = await settling.settle(
                connect=connect,
                redis=redis,
                common=common,
                settings=settings,
                meter_id=args.meter_id,
                request_id=args.request_id,
                source="cli",
                timeout_s=args.timeout,
            )
        except records.SettlementError as exc:
            print(f"enerlink settle: {exc}", file=sys.stderr)
            return 1
    if not created:
        print(
            f"request {settlement.request_id} was already settled: settlement {settlement.id}",
            file=sys.stderr,
        )
    deadline = time.monotonic() + args.wait_final
    while settlement.status == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        settlement = (await records.finalize_ready(connect, [settlement], settings))[0]
    show([settlement])
    if settlement.status != "final":
        print(
            f"settlement {settlement.id} is {settlement.status}: energies follow once the aggregator has"
            f" covered {settlement.to_dict()['period_end']} (read it again, or --wait-final)",
            file=sys.stderr,
        )
        return 3 if args.wait_final > 0 else 0
    return 0


def main(args: argparse.Namespace) -> int:

    try:
        env = Env()
        common = CommonSettings.from_env(env)
        settings = SettlementSettings.from_env(env)
    except ConfigError as exc:
        print(f"enerlink settle: {exc}", file=sys.stderr)
        return 2
    configure_logging("WARNING" if common.log_level == "INFO" else common.log_level, common.log_format)
    return asyncio.run(_run(args, common, settings))
